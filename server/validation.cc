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
    case v1::Sample::kText:
      input.kind = update::InputView::Kind::kText;
      input.text = sample.text();
      break;
    case v1::Sample::INPUT_NOT_SET:
      break;
  }
  return input;
}

absl::Status ReadSample(const v1::Sample& sample, const model::InputKind& kind,
                        absl::string_view field, model::SampleBatch* batch, Eigen::Index row) {
  const update::InputView input = InputOf(sample);
  absl::Status valid = update::ValidateInput(input, kind, field);
  if (!valid.ok()) return valid;
  if (input.kind == update::InputView::Kind::kText) {
    batch->texts.emplace_back(input.text);
  } else {
    update::ConvertInput(input, batch->values.row(row).data());
  }
  return absl::OkStatus();
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

absl::StatusOr<model::SampleBatch> ReadBatch(
    const google::protobuf::RepeatedPtrField<v1::Sample>& samples, const model::InputKind& kind,
    int max_batch) {
  if (absl::Status size = CheckBatchSize(samples.size(), max_batch); !size.ok()) return size;
  model::SampleBatch batch;
  if (kind.is_text()) {
    batch.texts.reserve(samples.size());
  } else {
    batch.values.resize(samples.size(), kind.image.size());
  }
  for (int i = 0; i < samples.size(); ++i) {
    absl::Status status = ReadSample(samples[i], kind, absl::StrCat("samples[", i, "]"), &batch, i);
    if (!status.ok()) return status;
  }
  return batch;
}

}  // namespace strata::server
