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

// Builds the extractor a lower tier is served (or a readout fit) with: int8 on `backend` with the
// stored activation scales `int8` when `backend` is not null, else float. `backend` (not owned)
// must outlive the extractor. A backend without scales is FAILED_PRECONDITION naming the backend
// and saying how to serve the model instead (which backend to pass, float for an automatic device
// and an old bundle, is server::Device::ServedBackend's rule). The quantisation's and the
// backend's errors otherwise (QuantizedLowerTier::FromCalibration). The server, recovery and
// strata-train all take the extractor it builds.
absl::StatusOr<std::shared_ptr<const FeatureExtractor>> MakeLowerTierExtractor(
    std::shared_ptr<const LowerTier> lower, const Int8Calibration& int8, fpga::Backend* backend);

}  // namespace strata::model

#endif  // STRATA_MODEL_LOWER_TIER_EXTRACTOR_H_
