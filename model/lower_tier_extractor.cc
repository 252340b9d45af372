#include "model/lower_tier_extractor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace strata::model {

FloatLowerTierExtractor::FloatLowerTierExtractor(std::shared_ptr<const LowerTier> lower)
    : lower_(std::move(lower)) {}

absl::StatusOr<MatrixF> FloatLowerTierExtractor::Features(const MatrixF& images,
                                                          fpga::OpCounts* counts) const {
  if (images.cols() != lower_->input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("lower tier: images have ", images.cols(),
                                                   " values, the input has ",
                                                   lower_->input_size()));
  }
  // No backend reports this work: the lower tier's own work model estimates it from the shapes.
  if (counts != nullptr) *counts = lower_->Counts(static_cast<int>(images.rows()));
  return lower_->Features(images);
}

absl::StatusOr<std::shared_ptr<const FeatureExtractor>> MakeLowerTierExtractor(
    std::shared_ptr<const LowerTier> lower, const Int8Calibration& int8, fpga::Backend* backend) {
  if (backend != nullptr && int8.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the bundle has no int8 activation scales (records lower.int8.*, which strata-train "
        "writes since the int8 devices exist), so its lower tier cannot run on the ",
        backend->info().name,
        " backend; serve it with --device=float (or auto), or re-train it with strata-train"));
  }
  if (backend == nullptr) return std::make_shared<const FloatLowerTierExtractor>(std::move(lower));
  absl::StatusOr<QuantizedLowerTier> quantized =
      QuantizedLowerTier::FromCalibration(std::move(lower), int8, *backend);
  if (!quantized.ok()) return quantized.status();
  return std::make_shared<const QuantizedLowerTier>(*std::move(quantized));
}

}  // namespace strata::model
