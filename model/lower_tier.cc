#include "model/lower_tier.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <Eigen/Eigenvalues>

#include "absl/strings/str_cat.h"

namespace strata::model {
namespace {

// Images per work item when a batch is split across threads.
constexpr int kImagesPerChunk = 32;
// Regularisers of the PCA fit: added to the patch covariance and to the eigenvalues before
// whitening, so near-zero directions are not blown up.
constexpr double kCovarianceRidge = 1e-3;
constexpr double kWhiteningEpsilon = 1e-2;

// The k*k patch around every pixel of one image (zero padding), one patch per row:
// (height*width) x (k*k), written into `out`.
void ExtractPatches(const float* image, int height, int width, int k, MatrixF& out) {
  const int half = k / 2;
  out.resize(static_cast<Eigen::Index>(height) * width, k * k);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      float* row = out.row(static_cast<Eigen::Index>(y) * width + x).data();
      for (int dy = 0; dy < k; ++dy) {
        const int sy = y + dy - half;
        for (int dx = 0; dx < k; ++dx) {
          const int sx = x + dx - half;
          const bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
          row[dy * k + dx] = inside ? image[sy * width + sx] : 0.0f;
        }
      }
    }
  }
}

}  // namespace

absl::Status LowerTierSpec::Validate() const {
  auto bad = [](absl::string_view field, auto value, absl::string_view expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("lower tier spec: ", field, " = ", value, ", expected ", expected));
  };
  if (image_height < 1 || image_height > 1024) return bad("image_height", image_height, "1..1024");
  if (image_width < 1 || image_width > 1024) return bad("image_width", image_width, "1..1024");
  if (patch < 1 || patch % 2 == 0 || patch > 15) return bad("patch", patch, "an odd size 1..15");
  if (filters < 1 || filters > patch * patch) {
    return bad("filters", filters, absl::StrCat("1..patch*patch = ", patch * patch));
  }
  if (pool < 1 || pool > std::min(image_height, image_width)) {
    return bad("pool", pool, "1..min(image_height, image_width)");
  }
  if (expansion < 0 || expansion > 65536) return bad("expansion", expansion, "0..65536");
  if (pca_images < 1) return bad("pca_images", pca_images, "at least 1");
  if (!(expansion_bias_scale >= 0) || !std::isfinite(expansion_bias_scale)) {
    return bad("expansion_bias_scale", expansion_bias_scale, "a finite value >= 0");
  }
  return absl::OkStatus();
}

int LowerTier::pooled_size() const {
  const int grid_y = spec_.image_height / spec_.pool;
  const int grid_x = spec_.image_width / spec_.pool;
  return grid_y * grid_x * 2 * spec_.filters;
}

std::vector<std::string> LowerTier::Describe() const {
  const int grid_y = spec_.image_height / spec_.pool;
  const int grid_x = spec_.image_width / spec_.pool;
  std::vector<std::string> stages = {
      absl::StrCat("input ", spec_.image_height, "x", spec_.image_width, "x1"),
      absl::StrCat("conv ", spec_.patch, "x", spec_.patch, ", ", spec_.filters,
                   " PCA filters (one eigen-solve of the patch covariance), whitened"),
      absl::StrCat("+/-ReLU -> ", 2 * spec_.filters, " channels"),
      absl::StrCat("average pool ", spec_.pool, "x", spec_.pool, " -> ", grid_y, "x", grid_x, "x",
                   2 * spec_.filters, " = ", pooled_size()),
      "standardise (training mean and standard deviation)",
  };
  if (spec_.expansion > 0) {
    stages.push_back(absl::StrCat("random ReLU expansion to ", spec_.expansion,
                                  " units, concatenated -> ", feature_size(), " features"));
  }
  return stages;
}

MatrixF LowerTier::Pooled(const MatrixF& images) const {
  const int height = spec_.image_height, width = spec_.image_width, k = spec_.patch;
  const int pool = spec_.pool, channels = 2 * spec_.filters;
  const int grid_y = height / pool, grid_x = width / pool;
  const float pool_scale = 1.0f / static_cast<float>(pool * pool);
  const Eigen::Index n = images.rows();
  MatrixF pooled = MatrixF::Zero(n, pooled_size());
  const Eigen::Index chunks = (n + kImagesPerChunk - 1) / kImagesPerChunk;

#pragma omp parallel
  {
    MatrixF patches, responses;
#pragma omp for schedule(dynamic)
    for (Eigen::Index chunk = 0; chunk < chunks; ++chunk) {
      for (Eigen::Index i = chunk * kImagesPerChunk;
           i < std::min(n, (chunk + 1) * kImagesPerChunk); ++i) {
        ExtractPatches(images.row(i).data(), height, width, k, patches);
        responses.noalias() = patches * params_.filters;  // (height*width) x filters
        float* out = pooled.row(i).data();
        for (int y = 0; y < grid_y * pool; ++y) {
          for (int x = 0; x < grid_x * pool; ++x) {
            const float* r = responses.row(static_cast<Eigen::Index>(y) * width + x).data();
            float* cell = out + ((y / pool) * grid_x + (x / pool)) * channels;
            for (int c = 0; c < spec_.filters; ++c) {
              cell[c] += std::max(r[c], 0.0f);
              cell[spec_.filters + c] += std::max(-r[c], 0.0f);
            }
          }
        }
      }
    }
  }
  pooled *= pool_scale;
  return pooled;
}

MatrixF LowerTier::Features(const MatrixF& images) const {
  MatrixF standardised = Pooled(images);
  standardised.rowwise() -= params_.mean.transpose();
  standardised.array().rowwise() *= params_.inv_std.transpose().array();
  if (spec_.expansion == 0) return standardised;

  MatrixF features(images.rows(), feature_size());
  features.leftCols(pooled_size()) = standardised;
  features.rightCols(spec_.expansion).noalias() = standardised * params_.projection;
  features.rightCols(spec_.expansion) =
      (features.rightCols(spec_.expansion).rowwise() + params_.bias.transpose()).cwiseMax(0.0f);
  return features;
}

absl::StatusOr<LowerTier> LowerTier::Fit(const LowerTierSpec& spec, const MatrixF& images) {
  if (absl::Status valid = spec.Validate(); !valid.ok()) return valid;
  const int input_size = spec.image_height * spec.image_width;
  if (images.cols() != input_size) {
    return absl::InvalidArgumentError(absl::StrCat("lower tier fit: images have ", images.cols(),
                                                   " values, the spec expects ",
                                                   spec.image_height, "x", spec.image_width,
                                                   " = ", input_size));
  }
  if (images.rows() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("lower tier fit: need at least 2 images, got ", images.rows()));
  }
  if (!images.allFinite()) {
    return absl::InvalidArgumentError("lower tier fit: images contain NaN or Inf");
  }
  std::mt19937_64 rng(spec.seed);

  // 1. PCA filters: one eigen-solve of the covariance of mean-removed patches drawn from a sample
  //    of the training images.
  std::vector<Eigen::Index> order(images.rows());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(std::min<size_t>(order.size(), static_cast<size_t>(spec.pca_images)));
  const int taps = spec.patch * spec.patch;
  Eigen::MatrixXd covariance = Eigen::MatrixXd::Zero(taps, taps);
#pragma omp parallel
  {
    Eigen::MatrixXd local = Eigen::MatrixXd::Zero(taps, taps);
    MatrixF patches;
#pragma omp for schedule(dynamic, 16)
    for (size_t j = 0; j < order.size(); ++j) {
      ExtractPatches(images.row(order[j]).data(), spec.image_height, spec.image_width, spec.patch,
                     patches);
      patches.colwise() -= patches.rowwise().mean();
      Eigen::MatrixXf gram = patches.transpose() * patches;
      local += gram.cast<double>();
    }
#pragma omp critical
    covariance += local;
  }
  const double patch_count = static_cast<double>(order.size()) * input_size;
  covariance /= patch_count;
  covariance += kCovarianceRidge * Eigen::MatrixXd::Identity(taps, taps);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(covariance);
  if (eigen.info() != Eigen::Success) {
    return absl::InternalError("lower tier fit: the patch covariance eigen-solve failed");
  }
  Parameters params;
  params.filters.resize(taps, spec.filters);
  for (int f = 0; f < spec.filters; ++f) {
    const int column = taps - 1 - f;  // eigenvalues come in increasing order
    Eigen::VectorXd filter = eigen.eigenvectors().col(column) /
                             std::sqrt(eigen.eigenvalues()(column) + kWhiteningEpsilon);
    // Subtracting the filter's mean makes a plain convolution equal to filtering mean-removed
    // patches (the top eigenvectors are already orthogonal to the constant patch).
    filter.array() -= filter.mean();
    params.filters.col(f) = filter.cast<float>();
  }

  // 2. Standardisation statistics of the pooled features over the whole training set.
  LowerTier tier(spec, std::move(params));
  const int pooled_size = tier.pooled_size();
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(pooled_size);
  Eigen::VectorXd sum_squares = Eigen::VectorXd::Zero(pooled_size);
  constexpr Eigen::Index kBlock = 4096;
  for (Eigen::Index start = 0; start < images.rows(); start += kBlock) {
    const Eigen::Index rows = std::min(kBlock, images.rows() - start);
    const MatrixF pooled = tier.Pooled(images.middleRows(start, rows));
    const Eigen::MatrixXd pooled_d = pooled.cast<double>();
    sum += pooled_d.colwise().sum().transpose();
    sum_squares += pooled_d.array().square().colwise().sum().matrix().transpose();
  }
  const double n = static_cast<double>(images.rows());
  const Eigen::VectorXd mean = sum / n;
  const Eigen::VectorXd variance = (sum_squares / n - mean.cwiseAbs2()).cwiseMax(0.0);
  tier.params_.mean = mean.cast<float>();
  tier.params_.inv_std = (variance.cwiseSqrt().array() + 1e-6).inverse().matrix().cast<float>();

  // 3. The fixed random expansion.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float projection_scale = 1.0f / std::sqrt(static_cast<float>(pooled_size));
  tier.params_.projection.resize(pooled_size, spec.expansion);
  for (Eigen::Index i = 0; i < tier.params_.projection.size(); ++i) {
    tier.params_.projection.data()[i] = normal(rng) * projection_scale;
  }
  tier.params_.bias.resize(spec.expansion);
  for (int i = 0; i < spec.expansion; ++i) {
    tier.params_.bias(i) = normal(rng) * spec.expansion_bias_scale;
  }
  return tier;
}

absl::StatusOr<LowerTier> LowerTier::FromParameters(const LowerTierSpec& spec, Parameters params) {
  if (absl::Status valid = spec.Validate(); !valid.ok()) return valid;
  LowerTier tier(spec, std::move(params));
  const Parameters& p = tier.params_;
  const int taps = spec.patch * spec.patch;
  auto mismatch = [](absl::string_view name, Eigen::Index rows, Eigen::Index cols,
                     Eigen::Index want_rows, Eigen::Index want_cols) {
    return absl::InvalidArgumentError(absl::StrCat("lower tier parameter ", name, " is ", rows,
                                                   "x", cols, ", the spec needs ", want_rows, "x",
                                                   want_cols));
  };
  if (p.filters.rows() != taps || p.filters.cols() != spec.filters) {
    return mismatch("filters", p.filters.rows(), p.filters.cols(), taps, spec.filters);
  }
  const int pooled = tier.pooled_size();
  if (p.mean.size() != pooled) return mismatch("mean", p.mean.size(), 1, pooled, 1);
  if (p.inv_std.size() != pooled) return mismatch("inv_std", p.inv_std.size(), 1, pooled, 1);
  if (p.projection.rows() != pooled || p.projection.cols() != spec.expansion) {
    return mismatch("projection", p.projection.rows(), p.projection.cols(), pooled,
                    spec.expansion);
  }
  if (p.bias.size() != spec.expansion) return mismatch("bias", p.bias.size(), 1, spec.expansion, 1);
  return tier;
}

}  // namespace strata::model
