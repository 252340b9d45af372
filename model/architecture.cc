#include "model/architecture.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/file.h"

namespace strata::model {

const std::vector<std::string>& StageKinds() {
  static const auto* kinds = new std::vector<std::string>{
      "conv", "split_relu", "pool", "sqrt", "standardise", "expand", "elm_ae"};
  return *kinds;
}

std::string Architecture::ToText() const {
  std::string text =
      this->text.has_value()
          ? absl::StrCat("text embedding=", this->text->embedding, " encoder=", this->text->encoder,
                         " max_bytes=", this->text->max_bytes,
                         " max_tokens=", this->text->max_tokens, "\n")
          : absl::StrCat("input ", height, " ", width, " ", channels, "\n");
  if (lexical.has_value()) {
    // %.9g: the weight read back is the same float, so a reloaded bundle's features are the
    // fitted ones bit for bit.
    absl::StrAppend(&text, "lexical features=", lexical->features,
                    " hash_bits=", lexical->hash_bits, " min_df=", lexical->min_df,
                    " ngrams=", lexical->ngrams, " seed=", lexical->seed,
                    " weight=", absl::StrFormat("%.9g", lexical->weight), "\n");
  }
  for (const StageSpec& stage : stages) {
    text += stage.kind;
    for (const auto& [key, value] : stage.params) absl::StrAppend(&text, " ", key, "=", value);
    text += "\n";
  }
  if (augment.copies() > 0) {
    absl::StrAppend(&text, "augment hflip=", augment.hflip ? 1 : 0, " shift=", augment.shift, "\n");
  }
  return text;
}

namespace {

// The parameters of an `augment` line (hflip=0|1, shift=0..2); INVALID_ARGUMENT saying what is
// wrong (the caller adds the line).
absl::Status ParseAugmentation(const std::vector<absl::string_view>& words, Augmentation& out) {
  for (size_t i = 1; i < words.size(); ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(words[i], absl::MaxSplits('=', 1));
    int value = 0;
    const bool number = absl::SimpleAtoi(kv.second, &value);
    if (kv.first == "hflip" && number && (value == 0 || value == 1)) {
      out.hflip = value == 1;
    } else if (kv.first == "shift" && number && value >= 0 && value <= 2) {
      out.shift = value;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("augment: expected hflip=0|1 and shift=0..2, got \"", words[i], "\""));
    }
  }
  return absl::OkStatus();
}

// The parameters of a `text` line (see TextInput); INVALID_ARGUMENT saying what is wrong (the caller
// adds the line).
absl::StatusOr<TextInput> ParseTextInput(const std::vector<absl::string_view>& words) {
  TextInput input;
  for (size_t i = 1; i < words.size(); ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(words[i], absl::MaxSplits('=', 1));
    int value = 0;
    const bool number = absl::SimpleAtoi(kv.second, &value);
    if (kv.first == "encoder" && !kv.second.empty()) {
      input.encoder = kv.second;
    } else if (kv.first == "embedding" && number && value >= 1 && value <= 65536) {
      input.embedding = value;
    } else if (kv.first == "max_tokens" && number && value >= 2 && value <= 512) {
      input.max_tokens = value;
    } else if (kv.first == "max_bytes" && number && value >= 1 && value <= (1 << 20)) {
      input.max_bytes = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "text: expected encoder=DIR embedding=1..65536 max_tokens=2..512 max_bytes=1..1048576, "
          "got \"",
          words[i], "\""));
    }
  }
  if (input.encoder.empty()) return absl::InvalidArgumentError("text: encoder=DIR is required");
  return input;
}

// The parameters of a `lexical` line (see LexicalSpec); INVALID_ARGUMENT saying what is wrong (the
// caller adds the line).
absl::StatusOr<LexicalSpec> ParseLexical(const std::vector<absl::string_view>& words) {
  LexicalSpec spec;
  for (size_t i = 1; i < words.size(); ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(words[i], absl::MaxSplits('=', 1));
    int64_t value = 0;
    const bool number = absl::SimpleAtoi(kv.second, &value);
    float weight = 0;
    if (kv.first == "features" && number && value >= 1 && value <= 65536) {
      spec.features = static_cast<int>(value);
    } else if (kv.first == "hash_bits" && number && value >= 8 && value <= 32) {
      spec.hash_bits = static_cast<int>(value);
    } else if (kv.first == "ngrams" && number && value >= 1 && value <= 2) {
      spec.ngrams = static_cast<int>(value);
    } else if (kv.first == "min_df" && number && value >= 1 && value <= (int64_t{1} << 31)) {
      spec.min_df = static_cast<int>(value);
    } else if (kv.first == "seed" && number && value >= 0 && value < (int64_t{1} << 32)) {
      spec.seed = static_cast<uint64_t>(value);
    } else if (kv.first == "weight" && absl::SimpleAtof(kv.second, &weight) && weight > 0 &&
               weight <= 100) {
      spec.weight = weight;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("lexical: expected features=1..65536 hash_bits=8..32 ngrams=1..2 min_df=1.. "
                       "seed=0..2^32-1 weight=(0,100], got \"",
                       words[i], "\""));
    }
  }
  if (spec.hash_bits < 32 && spec.features > (int64_t{1} << spec.hash_bits)) {
    return absl::InvalidArgumentError(absl::StrCat("lexical: features=", spec.features,
                                                   " exceeds the 2^", spec.hash_bits, " buckets"));
  }
  return spec;
}

// A `lexical` line: its view widens the text input (the stages read [embedding, lexical]).
absl::Status AddLexical(const std::vector<absl::string_view>& words, Architecture& architecture) {
  if (!architecture.text.has_value() || !architecture.stages.empty() ||
      architecture.lexical.has_value()) {
    return absl::InvalidArgumentError(
        "`lexical` must follow the `text` line, once, before the stages");
  }
  absl::StatusOr<LexicalSpec> lexical = ParseLexical(words);
  if (!lexical.ok()) return lexical.status();
  architecture.channels += lexical->features;
  architecture.lexical = *lexical;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Architecture> ParseArchitecture(absl::string_view text) {
  Architecture architecture;
  bool have_input = false;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = line.substr(0, line.find('#'));
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("spec line ", line_number, ": ", what));
    };
    if (words[0] == "input") {
      if (have_input) return error("a second `input` or `text` line");
      if (!architecture.stages.empty()) return error("`input` must come before the stages");
      int dims[3] = {0, 0, 1};
      if (words.size() < 3 || words.size() > 4) {
        return error("expected `input HEIGHT WIDTH [CHANNELS]`");
      }
      for (size_t i = 1; i < words.size(); ++i) {
        if (!absl::SimpleAtoi(words[i], &dims[i - 1]) || dims[i - 1] < 1 || dims[i - 1] > 4096) {
          return error(absl::StrCat("input dimension \"", words[i], "\" is not in 1..4096"));
        }
      }
      architecture.height = dims[0];
      architecture.width = dims[1];
      architecture.channels = dims[2];
      have_input = true;
      continue;
    }
    if (words[0] == "text") {
      if (have_input) return error("a second `input` or `text` line");
      if (!architecture.stages.empty()) return error("`text` must come before the stages");
      absl::StatusOr<TextInput> input = ParseTextInput(words);
      if (!input.ok()) return error(input.status().message());
      architecture.height = 1;
      architecture.width = 1;
      architecture.channels = input->embedding;
      architecture.text = *std::move(input);
      have_input = true;
      continue;
    }
    if (words[0] == "lexical") {
      if (absl::Status s = AddLexical(words, architecture); !s.ok()) return error(s.message());
      continue;
    }
    if (words[0] == "augment") {
      if (absl::Status s = ParseAugmentation(words, architecture.augment); !s.ok()) {
        return error(s.message());
      }
      continue;
    }
    const std::vector<std::string>& kinds = StageKinds();
    if (std::find(kinds.begin(), kinds.end(), words[0]) == kinds.end()) {
      return error(absl::StrCat("unknown stage \"", words[0],
                                "\" (stages: ", absl::StrJoin(kinds, ", "), ")"));
    }
    StageSpec stage{std::string(words[0]), {}, line_number};
    for (size_t i = 1; i < words.size(); ++i) {
      std::pair<std::string, std::string> kv = absl::StrSplit(words[i], absl::MaxSplits('=', 1));
      if (kv.first.empty() || kv.second.empty() || words[i].find('=') == absl::string_view::npos) {
        return error(absl::StrCat("expected key=value, got \"", words[i], "\""));
      }
      if (!stage.params.emplace(kv.first, kv.second).second) {
        return error(absl::StrCat("parameter ", kv.first, " given twice"));
      }
    }
    architecture.stages.push_back(std::move(stage));
  }
  if (!have_input) {
    return absl::InvalidArgumentError(
        "spec: no `input HEIGHT WIDTH [CHANNELS]` (or `text encoder=DIR`) line");
  }
  if (architecture.stages.empty() && !architecture.text.has_value()) {
    return absl::InvalidArgumentError("spec: no stages");
  }
  return architecture;
}

absl::StatusOr<Architecture> ReadArchitecture(const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<Architecture> architecture = ParseArchitecture(*text);
  if (!architecture.ok()) {
    return absl::Status(architecture.status().code(),
                        absl::StrCat(path, ": ", architecture.status().message()));
  }
  return architecture;
}

}  // namespace strata::model
