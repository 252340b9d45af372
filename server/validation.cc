#include "server/validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace strata::server {

absl::Status ReadSample(const v1::Sample& sample, int input_size, absl::string_view field,
                        float* out) {
  switch (sample.input_case()) {
    case v1::Sample::kPixels: {
      const std::string& pixels = sample.pixels();
      if (pixels.size() != static_cast<size_t>(input_size)) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".pixels: expected ", input_size,
                                                       " bytes, got ", pixels.size()));
      }
      for (int i = 0; i < input_size; ++i) {
        out[i] = static_cast<float>(static_cast<unsigned char>(pixels[i])) / 255.0f;
      }
      return absl::OkStatus();
    }
    case v1::Sample::kValues: {
      const auto& values = sample.values().values();
      if (values.size() != input_size) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".values.values: expected ",
                                                       input_size, " floats, got ", values.size()));
      }
      for (int i = 0; i < input_size; ++i) {
        const float v = values[i];
        if (!std::isfinite(v)) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ".values.values[", i, "]: expected a finite float, got ",
                           std::isnan(v) ? "NaN" : (v > 0 ? "Inf" : "-Inf")));
        }
        out[i] = v;
      }
      return absl::OkStatus();
    }
    case v1::Sample::INPUT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": neither pixels nor values set, expected one of them"));
}

absl::Status ValidateLabel(absl::string_view label, absl::string_view field) {
  if (label.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": empty label, expected 1..", kMaxLabelBytes, " bytes"));
  }
  if (label.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": label of ", label.size(),
                                                   " bytes, expected 1..", kMaxLabelBytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<model::MatrixF> ReadBatch(
    const google::protobuf::RepeatedPtrField<v1::Sample>& samples, int input_size, int max_batch) {
  if (samples.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("samples: empty batch, expected 1..", max_batch, " samples"));
  }
  if (samples.size() > max_batch) {
    return absl::ResourceExhaustedError(absl::StrCat("samples: batch of ", samples.size(),
                                                     " samples, expected at most ", max_batch,
                                                     " (the server's max_batch)"));
  }
  model::MatrixF batch(samples.size(), input_size);
  for (int i = 0; i < samples.size(); ++i) {
    absl::Status status =
        ReadSample(samples[i], input_size, absl::StrCat("samples[", i, "]"), batch.row(i).data());
    if (!status.ok()) return status;
  }
  return batch;
}

}  // namespace strata::server
