#include "text/labelled_texts.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file.h"

namespace strata::text {

absl::StatusOr<LabelledTexts> ReadLabelledTexts(const std::string& path, size_t limit) {
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  if (!contents.ok()) return contents.status();
  LabelledTexts data;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*contents, '\n')) {
    ++line_number;
    absl::ConsumeSuffix(&line, "\r");
    if (line.empty()) continue;
    if (limit > 0 && data.texts.size() == limit) break;
    const size_t tab = line.find('\t');
    const auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(path, " line ", line_number, ": ", what));
    };
    if (tab == absl::string_view::npos) return error("expected LABEL<TAB>TEXT");
    if (tab == 0 || tab + 1 == line.size()) return error("empty label or text");
    data.labels.emplace_back(line.substr(0, tab));
    data.texts.emplace_back(line.substr(tab + 1));
  }
  return data;
}

absl::StatusOr<model::LabelledImages> EmbedLabelled(const TextEncoder& encoder, LabelledTexts data,
                                                    const model::LexicalView* lexical) {
  absl::StatusOr<model::MatrixF> embeddings = encoder.Embed(data.texts);
  if (!embeddings.ok()) return embeddings.status();
  return model::LabelledImages{model::AppendLexical(*embeddings, lexical, data.texts),
                               std::move(data.labels)};
}

}  // namespace strata::text
