// The lower tier's architecture: an input shape and an ordered list of stages, read from a small
// text file (the "spec") that strata-train takes with --spec. docs/lower-tier-spec.md describes the
// language; specs/ holds the shipped specs.
//
//   # comment
//   input 28 28 1
//   conv patch=5 filters=24
//   split_relu
//   pool size=4
//   sqrt
//   standardise
//   expand units=4096
//   augment hflip=1          # not a stage: training copies for the readout (Augmentation)
//
// A text model's spec starts with a `text` line instead of `input`: the frozen text encoder whose
// embedding the stages (possibly none) read as a 1 x 1 x embedding input:
//   text encoder=/path/to/all-minilm-l6-v2 embedding=384 max_tokens=128 max_bytes=4096
//   expand units=2048 concat=1
// and may add a lexical view of the text itself, appended to the embedding before the stages:
//   lexical features=2048 weight=0.7
#ifndef STRATA_MODEL_ARCHITECTURE_H_
#define STRATA_MODEL_ARCHITECTURE_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::model {

// One stage line: its kind and its key=value parameters (validated when the stage is built).
struct StageSpec {
  std::string kind;
  std::map<std::string, std::string> params;
  int line = 0;  // 1-based line in the spec text, for error messages; 0 if built in code
};

// Label-preserving copies of every training image that the readout also absorbs (spec line
// `augment hflip=1 shift=1`): each copy adds its rows to G = sum h h^T and Q = sum h y^T, nothing
// else. The lower tier's own fits (PCA, moments) see only the original images.
struct Augmentation {
  bool hflip = false;  // the image mirrored left to right
  int shift = 0;       // 0, or s: the image moved s pixels left, right, up and down (4 copies)
  // Copies per original image.
  int copies() const { return (hflip ? 1 : 0) + (shift > 0 ? 4 : 0); }
};

// A text model's input (spec line `text`): the frozen encoder the stages read the embedding of.
struct TextInput {
  // The encoder's model folder (config.json, tokenizer.json, model.safetensors), absolute or
  // relative to the working directory of the process that loads the bundle (strata-train writes
  // it absolute). No whitespace (the spec splits words at it).
  std::string encoder;
  // Its embedding width (the encoder's hidden size; checked when it is loaded): the stages' input
  // is 1 x 1 x embedding. Default 384 (all-MiniLM-L6-v2).
  int embedding = 384;
  // Tokens the encoder reads of one text, [CLS] and [SEP] included (the rest is dropped), 2..512.
  // Default 128: all-MiniLM-L6-v2 was trained on 128-token sequences.
  int max_tokens = 128;
  // The longest text a request may carry, in bytes, 1..1 MiB; longer ones are INVALID_ARGUMENT.
  // Default 4096.
  int max_bytes = 4096;
};

// A text model's lexical view (spec line `lexical`, after `text`; model/lexical_view.h): hashed
// word n-grams with tf-idf weights, appended to the embedding. The stages read
// [embedding, lexical] as a 1 x 1 x (embedding + features) input.
struct LexicalSpec {
  int features = 2048;  // columns: the hash buckets with the highest document frequency, 1..65536
  int hash_bits = 20;   // the hash space before the selection: 2^hash_bits buckets, 8..32
  int ngrams = 2;       // 1: words; 2: words and pairs of adjacent words
  int min_df = 2;       // a bucket in fewer training texts is not kept, >= 1
  uint64_t seed = 0;    // the CRC-32C's starting value, < 2^32
  // The view's L2 norm per text, against the unit-norm embedding, (0, 100]: its share of the
  // ridge penalty. 0.7 was chosen on a validation split of the Debian task (docs/text-task.md).
  float weight = 1.0f;
};

struct Architecture {
  int height = 28;
  int width = 28;
  int channels = 1;
  // Set for a text model (height = width = 1, channels = text->embedding); unset for images.
  std::optional<TextInput> text;
  // Set when a text spec has a `lexical` line (channels then include its features).
  std::optional<LexicalSpec> lexical;
  std::vector<StageSpec> stages;
  Augmentation augment;

  // The spec text that parses back to this architecture (canonical: one stage a line, keys sorted).
  std::string ToText() const;
};

// Parses spec text. INVALID_ARGUMENT naming the line for a malformed line, an unknown stage kind, a
// missing or repeated `input` (or `text`) line, a `text` line without encoder= or with a value out
// of range, a `lexical` line that is repeated, not right after `text` or out of range, or an image spec whose stage list is empty (a text spec may have none: its features
// are then the embedding). Parameter names and values are
// checked when the lower tier is built (LowerTier::Fit), also naming the line.
absl::StatusOr<Architecture> ParseArchitecture(absl::string_view text);

// Reads and parses a spec file; errors name the file.
absl::StatusOr<Architecture> ReadArchitecture(const std::string& path);

// The stage kinds a spec may use, in the order the docs list them.
const std::vector<std::string>& StageKinds();

}  // namespace strata::model

#endif  // STRATA_MODEL_ARCHITECTURE_H_
