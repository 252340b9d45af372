#include "text/text_extractor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "model/lower_tier_extractor.h"

namespace strata::text {

TextFeatureExtractor::TextFeatureExtractor(std::shared_ptr<const TextEncoder> encoder,
                                           std::shared_ptr<const model::LowerTier> stages)
    : encoder_(std::move(encoder)), stages_(std::move(stages)) {}

model::InputKind TextFeatureExtractor::input_kind() const {
  const model::TextInput& input = *stages_->architecture().text;
  return model::InputKind::Text(input.max_bytes, input.max_tokens);
}

absl::StatusOr<model::MatrixF> TextFeatureExtractor::Features(const model::MatrixF& inputs,
                                                              fpga::OpCounts* counts) const {
  return absl::InvalidArgumentError("this model takes text, not image values");
}

absl::StatusOr<model::MatrixF> TextFeatureExtractor::TextFeatures(
    std::span<const std::string> texts, fpga::OpCounts* counts) const {
  fpga::OpCounts work;
  absl::StatusOr<model::MatrixF> embeddings = encoder_->Embed(texts, &work);
  if (!embeddings.ok()) return embeddings.status();
  if (counts != nullptr) {
    work += stages_->Counts(static_cast<int>(texts.size()));
    *counts = work;
  }
  model::MatrixF inputs = stages_->TextInputs(*embeddings, texts);
  if (stages_->stages().empty()) return inputs;
  return stages_->Features(inputs);
}

std::vector<std::string> TextFeatureExtractor::Describe() const {
  std::vector<std::string> lines = encoder_->Describe();
  std::vector<std::string> tier = stages_->Describe();  // its first line is the input shape
  lines.insert(lines.end(), tier.begin() + 1, tier.end());
  return lines;
}

absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> MakeTextExtractor(
    std::shared_ptr<const model::LowerTier> stages, fpga::Backend* backend) {
  if (!stages->architecture().text.has_value()) {
    return absl::FailedPreconditionError("not a text model: its spec has no `text` line");
  }
  const model::TextInput& input = *stages->architecture().text;
  TextEncoderOptions options;
  options.tokenizer.max_length = input.max_tokens;
  options.backend = backend;
  absl::StatusOr<std::unique_ptr<TextEncoder>> encoder = TextEncoder::Load(input.encoder, options);
  if (!encoder.ok()) {
    return absl::Status(encoder.status().code(), absl::StrCat("text encoder ", input.encoder, ": ",
                                                              encoder.status().message()));
  }
  if ((*encoder)->embedding_size() != input.embedding) {
    return absl::InvalidArgumentError(
        absl::StrCat("text encoder ", input.encoder, ": embeds ", (*encoder)->embedding_size(),
                     " values, the spec's text line says embedding=", input.embedding));
  }
  return std::make_shared<const TextFeatureExtractor>(
      std::shared_ptr<const TextEncoder>(*std::move(encoder)), std::move(stages));
}

absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> MakeBundleExtractor(
    const model::Bundle& bundle, fpga::Backend* backend) {
  if (bundle.lower->architecture().text.has_value()) {
    return MakeTextExtractor(bundle.lower, backend);
  }
  return model::MakeLowerTierExtractor(bundle.lower, bundle.int8, backend);
}

}  // namespace strata::text
