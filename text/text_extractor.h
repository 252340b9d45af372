// The text model's lower tier as a model::FeatureExtractor: the frozen encoder (all-MiniLM-L6-v2,
// text/text_encoder.h; fp32 on the host, or its dense layers in int8 on a backend), then the
// fitted stages of the bundle's lower tier over its embedding (a spec choice: none, or for example
// a random ReLU expansion; model/stages.h, the image tier's stage code). docs/text-encoder.md,
// "In the server".
//
// The stages after the encoder run in fp32 on the host on every device: they are a few hundred
// thousand multiply-accumulates a text against the encoder's ~20 million, and float keeps them
// free of the calibration the image tier's int8 stages need. The encoder's int8 path is
// batch-independent bit for bit; the fp32 stages' GEMM rounding depends on the rows it is given
// (Eigen orders a single row's sums differently from a block's), as the image tier's float path
// does. Replay is exact all the same: recovery and replicas absorb a record in the same chunks the
// live Update absorbed its message in (update/recovery.h).
#ifndef STRATA_TEXT_TEXT_EXTRACTOR_H_
#define STRATA_TEXT_TEXT_EXTRACTOR_H_

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "model/lower_tier.h"
#include "text/text_encoder.h"

namespace strata::text {

// Immutable; every method const and thread-safe. Shares ownership of the encoder and the stages.
class TextFeatureExtractor final : public model::FeatureExtractor {
 public:
  // `stages` is a fitted lower tier whose architecture has a `text` input of the encoder's
  // embedding width (it may have no stage: the features are then the embedding).
  TextFeatureExtractor(std::shared_ptr<const TextEncoder> encoder,
                       std::shared_ptr<const model::LowerTier> stages);

  model::InputKind input_kind() const override;
  int input_size() const override { return 0; }
  int feature_size() const override { return stages_->feature_size(); }
  const std::string& device() const override { return encoder_->device(); }
  fpga::Backend* backend() const override { return encoder_->backend(); }
  // INVALID_ARGUMENT: a text model takes no image values.
  absl::StatusOr<model::MatrixF> Features(const model::MatrixF& inputs,
                                          fpga::OpCounts* counts = nullptr) const override;
  // The encoder's embeddings through the stages. `counts` receives the encoder's work (the
  // backend's int8 counts and the host's fp32 attention, or all fp32) plus the stages' fp32 work
  // model (LowerTier::Counts).
  absl::StatusOr<model::MatrixF> TextFeatures(std::span<const std::string> texts,
                                              fpga::OpCounts* counts = nullptr) const override;
  std::vector<std::string> Describe() const override;
  // The stages after the encoder (their architecture holds the text input).
  const model::LowerTier* lower_tier() const override { return stages_.get(); }

  const TextEncoder& encoder() const { return *encoder_; }

 private:
  std::shared_ptr<const TextEncoder> encoder_;
  std::shared_ptr<const model::LowerTier> stages_;
};

// Builds the text extractor of a text lower tier (its architecture's `text` line): loads the
// encoder from TextInput::encoder with max_tokens, its dense layers in int8 on `backend` (not
// owned, must outlive the extractor) or in fp32 when it is null. The encoder needs no calibration,
// so every device serves it. FAILED_PRECONDITION if `stages` is not a text tier; the encoder's
// loading errors (naming the folder); INVALID_ARGUMENT if its embedding width differs from the
// spec's.
absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> MakeTextExtractor(
    std::shared_ptr<const model::LowerTier> stages, fpga::Backend* backend);

// The extractor a bundle is served with: MakeTextExtractor for a text bundle, else
// model::MakeLowerTierExtractor (int8 on `backend` with the bundle's activation scales, or float).
// `backend` as the server's Device::ServedBackend gives it: a text bundle is served on it whether
// or not it has image int8 scales.
absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> MakeBundleExtractor(
    const model::Bundle& bundle, fpga::Backend* backend);

}  // namespace strata::text

#endif  // STRATA_TEXT_TEXT_EXTRACTOR_H_
