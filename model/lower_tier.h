// The frozen lower tier: a feature extractor fit in one step by closed-form solves.
//
// Stages, in order (all fit by LowerTier::Fit, then frozen):
//   1. Convolution with PCA filters: k x k patches around every pixel (zero padding), each patch's
//      mean removed; the filters are the top `filters` eigenvectors of the patch covariance, whitened
//      (divided by sqrt(eigenvalue + eps)). One symmetric eigen-solve.
//   2. Both polarities kept: [max(r, 0), max(-r, 0)] -> 2 * filters channels.
//   3. pool x pool average pooling.
//   4. Standardisation with the training set's per-feature mean and standard deviation.
//   5. A fixed random ReLU expansion: max(h P + b, 0), P Gaussian / sqrt(width), concatenated with
//      the standardised pooled features.
#ifndef STRATA_MODEL_LOWER_TIER_H_
#define STRATA_MODEL_LOWER_TIER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tensor.h"

namespace strata::model {

// The lower tier's hyper-parameters. Defaults are the reference prototype's.
struct LowerTierSpec {
  int image_height = 28;
  int image_width = 28;
  int patch = 5;          // convolution window, odd
  int filters = 24;       // PCA filters kept; the conv stage has 2 * filters channels
  int pool = 4;           // average-pooling window and stride
  int expansion = 4096;   // random ReLU units (0: none)
  int pca_images = 5000;  // training images sampled for the patch covariance
  float expansion_bias_scale = 0.3f;
  uint64_t seed = 0;      // drives the PCA sample and the random expansion

  // OK if every field is in range; otherwise INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

class LowerTier {
 public:
  // Fits the lower tier on `images` (one image per row, height * width values in [0, 1]).
  // Fails with INVALID_ARGUMENT if the spec is invalid or the images do not match it.
  static absl::StatusOr<LowerTier> Fit(const LowerTierSpec& spec, const MatrixF& images);

  // Features for a batch of images (one per row, input_size() columns): rows() x feature_size().
  // Thread-safe (const); uses Eigen's threads for large batches.
  MatrixF Features(const MatrixF& images) const;

  const LowerTierSpec& spec() const { return spec_; }
  int input_size() const { return spec_.image_height * spec_.image_width; }
  int pooled_size() const;
  int feature_size() const { return pooled_size() + spec_.expansion; }
  // One line per stage, for ModelInfo and logs.
  std::vector<std::string> Describe() const;

  // The fitted parameters, for the bundle writer and reader.
  struct Parameters {
    MatrixF filters;     // patch*patch x filters
    VectorF mean;        // pooled_size
    VectorF inv_std;     // pooled_size
    MatrixF projection;  // pooled_size x expansion
    VectorF bias;        // expansion
  };
  const Parameters& parameters() const { return params_; }
  // Builds a lower tier from stored parameters; INVALID_ARGUMENT if their shapes disagree with
  // the spec.
  static absl::StatusOr<LowerTier> FromParameters(const LowerTierSpec& spec, Parameters params);

 private:
  LowerTier(const LowerTierSpec& spec, Parameters params)
      : spec_(spec), params_(std::move(params)) {}
  // Convolution + polarity split + pooling for a batch: rows x pooled_size (not standardised).
  MatrixF Pooled(const MatrixF& images) const;

  LowerTierSpec spec_;
  Parameters params_;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_LOWER_TIER_H_
