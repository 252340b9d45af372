// One labelled sample as a front-end hands it to the update pipeline, and the checks every sample
// passes before it is logged or absorbed. No protobuf or gRPC types: a front-end (strata.v1 today,
// KServe later) points these views into its own request.
//
// Every function here is pure and thread-safe. Errors are INVALID_ARGUMENT and name the field by
// the path the caller gives (its request's proto path), then what was expected, for example
//   "samples[3].sample.pixels: expected 784 bytes, got 780"
//   "samples[2].values.values[17]: expected a finite float, got NaN"
#ifndef STRATA_UPDATE_SAMPLE_H_
#define STRATA_UPDATE_SAMPLE_H_

#include <cstddef>
#include <span>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace strata::update {

// The longest label accepted, in bytes (the update log's format stores up to this many).
inline constexpr size_t kMaxLabelBytes = 256;

// A model input as a request carries it: raw pixels (one byte each, read as model::PixelValue) or
// float values, or nothing. Views; the caller keeps the bytes alive.
struct InputView {
  enum class Kind { kNone, kPixels, kValues };
  Kind kind = Kind::kNone;
  absl::string_view pixels;       // kPixels
  std::span<const float> values;  // kValues
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

// OK if `input` holds exactly `input_size` values, all finite; else INVALID_ARGUMENT naming the
// part of `field` that is wrong ("<field>.pixels", "<field>.values.values[i]", or `field` when
// neither is set).
absl::Status ValidateInput(const InputView& input, int input_size, absl::string_view field);

// Writes the values of an input that ValidateInput accepted to `out` (input_size floats): pixels as
// model::PixelValue, values as they are.
void ConvertInput(const InputView& input, float* out);

}  // namespace strata::update

#endif  // STRATA_UPDATE_SAMPLE_H_
