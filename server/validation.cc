#include "server/validation.h"

#include <span>

#include "absl/strings/str_cat.h"

namespace strata::server {

update::InputView InputOf(const v1::Sample& sample) {
  update::InputView input;
  switch (sample.input_case()) {
    case v1::Sample::kPixels:
      input.kind = update::InputView::Kind::kPixels;
      input.pixels = sample.pixels();
      break;
    case v1::Sample::kValues: {
      const auto& values = sample.values().values();
      input.kind = update::InputView::Kind::kValues;
      input.values = std::span<const float>(values.data(), static_cast<size_t>(values.size()));
      break;
    }
    case v1::Sample::INPUT_NOT_SET:
      break;
  }
  return input;
}

absl::Status ReadSample(const v1::Sample& sample, int input_size, absl::string_view field,
                        float* out) {
  const update::InputView input = InputOf(sample);
  absl::Status valid = update::ValidateInput(input, input_size, field);
  if (valid.ok()) update::ConvertInput(input, out);
  return valid;
}

absl::Status CheckBatchSize(int samples, int max_batch) {
  if (samples == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("samples: empty batch, expected 1..", max_batch, " samples"));
  }
  if (samples > max_batch) {
    return absl::ResourceExhaustedError(absl::StrCat("samples: batch of ", samples,
                                                     " samples, expected at most ", max_batch,
                                                     " (the server's max_batch)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<model::MatrixF> ReadBatch(
    const google::protobuf::RepeatedPtrField<v1::Sample>& samples, int input_size, int max_batch) {
  if (absl::Status size = CheckBatchSize(samples.size(), max_batch); !size.ok()) return size;
  model::MatrixF batch(samples.size(), input_size);
  for (int i = 0; i < samples.size(); ++i) {
    absl::Status status =
        ReadSample(samples[i], input_size, absl::StrCat("samples[", i, "]"), batch.row(i).data());
    if (!status.ok()) return status;
  }
  return batch;
}

}  // namespace strata::server
