// Turning request samples into model input, with errors that name the offending field.
//
// Every function here is pure (no shared state) and thread-safe. Errors are INVALID_ARGUMENT, except
// a batch over the server's limit, which is RESOURCE_EXHAUSTED. Messages name the field by its proto
// path relative to the request, then what was expected, for example
//   "samples[3].pixels: expected 784 bytes, got 780"
//   "samples[2].values.values[17]: expected a finite float, got NaN"
#ifndef STRATA_SERVER_VALIDATION_H_
#define STRATA_SERVER_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "model/tensor.h"
#include "strata/v1/strata.pb.h"
#include "update/sample.h"

namespace strata::server {

// The checks are the update pipeline's (update/sample.h), so Predict and Update accept exactly the
// same samples and labels.
using update::kMaxLabelBytes;
using update::ValidateLabel;

// `sample`'s input as a view into it (valid while `sample` is).
update::InputView InputOf(const v1::Sample& sample);

// Writes the `input_size` input values of `sample` to `out` (pixels b become model::PixelValue(b)).
// `field` is
// the sample's path in the request ("samples[3]" or "samples[3].sample") and prefixes any error.
// INVALID_ARGUMENT if neither input is set, the length is not `input_size`, or a value is not
// finite. `out` must have room for `input_size` floats; on error its contents are unspecified.
absl::Status ReadSample(const v1::Sample& sample, int input_size, absl::string_view field,
                        float* out);

// A Predict / ExtractFeatures batch must hold 1..max_batch samples: none is INVALID_ARGUMENT, more
// than `max_batch` is RESOURCE_EXHAUSTED.
absl::Status CheckBatchSize(int samples, int max_batch);

// Reads a whole Predict / ExtractFeatures batch into a matrix, one sample per row. The batch must
// hold 1..max_batch samples: none is INVALID_ARGUMENT, more than `max_batch` is RESOURCE_EXHAUSTED;
// the first bad sample fails the whole batch (INVALID_ARGUMENT, as ReadSample).
absl::StatusOr<model::MatrixF> ReadBatch(
    const google::protobuf::RepeatedPtrField<v1::Sample>& samples, int input_size, int max_batch);

}  // namespace strata::server

#endif  // STRATA_SERVER_VALIDATION_H_
