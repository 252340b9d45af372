// One labelled sample as a front-end hands it to the update pipeline, and the checks every sample
// passes before it is logged or absorbed. No protobuf or gRPC types: a front-end (strata.v1 today,
// KServe later) points these views into its own request.
//
// Every function here is pure and thread-safe. Errors are INVALID_ARGUMENT and name the field by
// the path the caller gives (its request's proto path), then what was expected, for example
//   "samples[3].sample.pixels: expected 784 bytes, got 780"
//   "samples[2].values.values[17]: expected a finite float, got NaN"
//   "samples[1].sample.text: not valid UTF-8 at byte 7"
#ifndef STRATA_UPDATE_SAMPLE_H_
#define STRATA_UPDATE_SAMPLE_H_

#include <cstddef>
#include <optional>
#include <span>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "model/feature_extractor.h"

namespace strata::update {

// The longest label accepted, in bytes (the update log's format stores up to this many).
inline constexpr size_t kMaxLabelBytes = 256;

// A model input as a request carries it: raw pixels (one byte each, read as model::PixelValue) or
// float values (image models), a text (text models), or nothing. Views; the caller keeps the bytes
// alive.
struct InputView {
  enum class Kind { kNone, kPixels, kValues, kText };
  Kind kind = Kind::kNone;
  absl::string_view pixels;       // kPixels
  std::span<const float> values;  // kValues
  absl::string_view text;         // kText
};

// One sample of an Update message, in message order.
struct SampleInput {
  absl::string_view label;
  InputView input;
  // Non-empty if the front-end could not read this sample at all (e.g. bytes that do not parse):
  // the sample is rejected with this reason, and label and input are ignored.
  absl::string_view unreadable;
};

// OK if `label` is non-empty and at most kMaxLabelBytes long; else INVALID_ARGUMENT naming `field`.
absl::Status ValidateLabel(absl::string_view label, absl::string_view field);

// The offset of the first byte of `bytes` that does not begin a well-formed UTF-8 sequence
// (Unicode's definition, as ICU's U8_NEXT and protobuf read it: no overlong forms, surrogates or
// code points over U+10FFFF); nullopt if all of it is UTF-8.
std::optional<size_t> FirstInvalidUtf8Byte(absl::string_view bytes);

// OK if `input` is of the kind `kind` takes and well-formed for it; else INVALID_ARGUMENT naming
// the part of `field` that is wrong. An image model takes exactly kind.image.size() pixels or
// values, all finite ("<field>.pixels", "<field>.values.values[i]"); a text model takes a text of
// 1..kind.max_text_bytes bytes of UTF-8 ("<field>.text"). The wrong kind names the field that was
// set ("<field>.text: this model takes images (pixels or values), not text"); nothing set names
// `field`.
absl::Status ValidateInput(const InputView& input, const model::InputKind& kind,
                           absl::string_view field);

// Writes the values of an image input that ValidateInput accepted to `out` (its size in floats):
// pixels as model::PixelValue, values as they are. Does nothing for text.
void ConvertInput(const InputView& input, float* out);

}  // namespace strata::update

#endif  // STRATA_UPDATE_SAMPLE_H_
