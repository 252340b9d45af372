// The image lower tier as a FeatureExtractor (model/feature_extractor.h), in float or in int8 on a
// backend, and the one place that chooses between them.
#ifndef STRATA_MODEL_LOWER_TIER_EXTRACTOR_H_
#define STRATA_MODEL_LOWER_TIER_EXTRACTOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"
#include "model/feature_extractor.h"
#include "model/lower_tier.h"
#include "model/quantized_lower_tier.h"
#include "model/tensor.h"

namespace strata::model {

// The fitted lower tier in fp32 on the host (Eigen). Shares ownership of the tier. Thread-safe.
class FloatLowerTierExtractor final : public FeatureExtractor {
 public:
  explicit FloatLowerTierExtractor(std::shared_ptr<const LowerTier> lower);

  InputKind input_kind() const override { return InputKind::Image(lower_->input_shape()); }
  int input_size() const override { return lower_->input_size(); }
  int feature_size() const override { return lower_->feature_size(); }
  const std::string& device() const override { return device_; }
  fpga::Backend* backend() const override { return nullptr; }
  // `counts` (if not null) is set to zero: the host's work is not reported by a backend.
  absl::StatusOr<MatrixF> Features(const MatrixF& images,
                                   fpga::OpCounts* counts = nullptr) const override;
  std::vector<std::string> Describe() const override { return lower_->Describe(); }
  const LowerTier* lower_tier() const override { return lower_.get(); }

 private:
  std::shared_ptr<const LowerTier> lower_;
  std::string device_ = "float";
};

// What to do when int8 was asked for (a backend given) but there are no int8 activation scales.
enum class WithoutInt8Scales {
  kRefuse,  // FAILED_PRECONDITION, saying how to serve the model instead
  kFloat,   // fall back to the float lower tier (the caller can tell by device() == "float")
};

// Builds the extractor a lower tier is served (or a readout fit) with: int8 on `backend` with the
// stored activation scales `int8` when `backend` is not null and there are scales, else float.
// `backend` (not owned) must outlive the extractor. Without scales but with a backend:
// `without_scales` decides (kRefuse: FAILED_PRECONDITION naming the backend). The quantisation's
// and the backend's errors otherwise (QuantizedLowerTier::FromCalibration). This is the only
// place that decides "int8 if possible, else float": the server, recovery and strata-train all
// take the extractor it builds.
absl::StatusOr<std::shared_ptr<const FeatureExtractor>> MakeLowerTierExtractor(
    std::shared_ptr<const LowerTier> lower, const Int8Calibration& int8, fpga::Backend* backend,
    WithoutInt8Scales without_scales = WithoutInt8Scales::kRefuse);

}  // namespace strata::model

#endif  // STRATA_MODEL_LOWER_TIER_EXTRACTOR_H_
