// Labelled texts for fitting a text model's head offline (strata-train with a `text` spec): a
// tab-separated file read into memory, and its texts embedded by the frozen encoder into the rows
// the model's stages are fit on (model::Train then treats them as it treats images).
#ifndef STRATA_TEXT_LABELLED_TEXTS_H_
#define STRATA_TEXT_LABELLED_TEXTS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/lexical_view.h"
#include "model/trainer.h"
#include "text/text_encoder.h"

namespace strata::text {

struct LabelledTexts {
  std::vector<std::string> labels;
  std::vector<std::string> texts;
};

// Reads LABEL<TAB>TEXT lines (UTF-8; empty lines skipped; the text is everything after the first
// tab), at most `limit` of them (0: all). INVALID_ARGUMENT naming the file and line for a line
// without a tab, or an empty label or text; the file's errors. (EmbedLabelled refuses texts that
// are not UTF-8, naming the text's index.)
absl::StatusOr<LabelledTexts> ReadLabelledTexts(const std::string& path, size_t limit = 0);

// The encoder's embeddings of `data`'s texts, one row each, with their labels: what a text model's
// stages and readout are fit on (the stages read the embedding as a 1 x 1 x E input). With a
// lexical view (a spec's `lexical` line, fitted), its features are appended to each row
// (model::AppendLexical, as the server's extractor does). The encoder's errors.
absl::StatusOr<model::LabelledImages> EmbedLabelled(const TextEncoder& encoder, LabelledTexts data,
                                                    const model::LexicalView* lexical = nullptr);

}  // namespace strata::text

#endif  // STRATA_TEXT_LABELLED_TEXTS_H_
