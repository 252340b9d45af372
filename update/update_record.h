// The payload of an update-log record: one Update message's accepted samples, as the lower tier's
// input (docs/update-log-format.md, "Payload of type 1"): pixels or float values for an image
// model, UTF-8 texts for a text model (whose input_size is 0). Pure functions and a value type; not
// thread-safe to share a builder, safe to use separate ones.
#ifndef STRATA_UPDATE_UPDATE_RECORD_H_
#define STRATA_UPDATE_UPDATE_RECORD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/feature_extractor.h"
#include "model/tensor.h"

namespace strata::update {

// Builds a record payload sample by sample. The caller validates samples first (labels 1..256
// bytes, inputs of input_size values, finite floats); the builder only encodes.
class UpdateRecordBuilder {
 public:
  explicit UpdateRecordBuilder(int input_size);

  // A sample given as raw pixels (`pixels.size()` == input_size).
  void AddPixels(absl::string_view label, absl::string_view pixels);
  // A sample given as float values (input_size of them at `values`).
  void AddValues(absl::string_view label, const float* values);
  // A text sample (UTF-8, at most 1 MiB: the largest max_text_bytes a spec allows).
  void AddText(absl::string_view label, absl::string_view text);

  int count() const { return count_; }
  // The payload; the builder is left empty.
  std::string Finish();

 private:
  void AddLabel(absl::string_view label, uint8_t encoding);

  int input_size_;
  int count_ = 0;
  std::string samples_;
};

// A decoded record: one input per sample (an image row, pixels b becoming model::PixelValue(b)
// exactly as the live Update path converts them; or a text), and the labels in the same order.
struct UpdateRecord {
  model::SampleBatch inputs;
  std::vector<std::string> labels;
};

// Decodes a payload written by UpdateRecordBuilder. DATA_LOSS if it does not parse exactly (sizes,
// encodings, lengths), if its input_size differs from `input_size` (0 for a text model), or if it
// mixes texts and images.
absl::StatusOr<UpdateRecord> DecodeUpdateRecord(absl::string_view payload, int input_size);

}  // namespace strata::update

#endif  // STRATA_UPDATE_UPDATE_RECORD_H_
