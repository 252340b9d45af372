#include "model/lower_tier.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_test_util.h"

namespace strata::model {
namespace {

LowerTierSpec SmallSpec() {
  LowerTierSpec spec;
  spec.image_height = 10;
  spec.image_width = 8;
  spec.patch = 3;
  spec.filters = 4;
  spec.pool = 3;  // 10x8 pools to 3x2, cropping the remainder
  spec.expansion = 7;
  spec.pca_images = 50;
  spec.seed = 11;
  return spec;
}

// The lower tier's features computed naively in float64, straight from its documented stages.
Eigen::VectorXd ReferenceFeatures(const LowerTier& tier, const float* image) {
  const LowerTierSpec& s = tier.spec();
  const LowerTier::Parameters& p = tier.parameters();
  const int half = s.patch / 2, grid_y = s.image_height / s.pool, grid_x = s.image_width / s.pool;
  const int channels = 2 * s.filters;
  Eigen::VectorXd pooled = Eigen::VectorXd::Zero(grid_y * grid_x * channels);
  for (int y = 0; y < grid_y * s.pool; ++y) {
    for (int x = 0; x < grid_x * s.pool; ++x) {
      for (int f = 0; f < s.filters; ++f) {
        double r = 0;
        for (int dy = 0; dy < s.patch; ++dy) {
          for (int dx = 0; dx < s.patch; ++dx) {
            const int sy = y + dy - half, sx = x + dx - half;
            if (sy < 0 || sy >= s.image_height || sx < 0 || sx >= s.image_width) continue;
            r += double{image[sy * s.image_width + sx]} * p.filters(dy * s.patch + dx, f);
          }
        }
        const int cell = ((y / s.pool) * grid_x + x / s.pool) * channels;
        pooled(cell + f) += std::max(r, 0.0) / (s.pool * s.pool);
        pooled(cell + s.filters + f) += std::max(-r, 0.0) / (s.pool * s.pool);
      }
    }
  }
  Eigen::VectorXd h =
      (pooled - p.mean.cast<double>()).cwiseProduct(p.inv_std.cast<double>());
  Eigen::VectorXd out(tier.feature_size());
  out.head(h.size()) = h;
  out.tail(s.expansion) =
      (p.projection.cast<double>().transpose() * h + p.bias.cast<double>()).cwiseMax(0.0);
  return out;
}

TEST(LowerTierTest, FeaturesMatchANaiveFloat64Reference) {
  const MatrixF images = MakeImages(120, 10, 8);
  absl::StatusOr<LowerTier> tier = LowerTier::Fit(SmallSpec(), images);
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ(tier->input_size(), 80);
  EXPECT_EQ(tier->pooled_size(), 3 * 2 * 8);
  EXPECT_EQ(tier->feature_size(), 48 + 7);
  const MatrixF features = tier->Features(images);
  ASSERT_EQ(features.rows(), 120);
  ASSERT_EQ(features.cols(), tier->feature_size());
  for (int i = 0; i < 120; ++i) {
    const Eigen::VectorXd reference = ReferenceFeatures(*tier, images.row(i).data());
    ASSERT_LT((features.row(i).transpose().cast<double>() - reference).norm(),
              1e-4 * (1 + reference.norm()))
        << "image " << i;
  }
}

TEST(LowerTierTest, FitIsOneSolveWithExpectedStatistics) {
  const MatrixF images = MakeImages(200, 10, 8);
  absl::StatusOr<LowerTier> tier = LowerTier::Fit(SmallSpec(), images);
  ASSERT_TRUE(tier.ok()) << tier.status();
  // PCA filters are eigenvectors: mutually orthogonal directions, each with zero mean (they filter
  // mean-removed patches).
  const MatrixF& filters = tier->parameters().filters;
  for (int a = 0; a < filters.cols(); ++a) {
    EXPECT_NEAR(filters.col(a).sum(), 0.0, 1e-4);
    for (int b = 0; b < a; ++b) {
      const float cosine = filters.col(a).dot(filters.col(b)) /
                           (filters.col(a).norm() * filters.col(b).norm());
      EXPECT_NEAR(cosine, 0.0, 1e-3) << a << "," << b;
    }
  }
  // Standardised training features have mean 0 and unit variance.
  const MatrixF h = tier->Features(images).leftCols(tier->pooled_size());
  const Eigen::VectorXf mean = h.colwise().mean().transpose();
  EXPECT_LT(mean.cwiseAbs().maxCoeff(), 1e-3);
  const Eigen::VectorXf variance = (h.rowwise() - mean.transpose()).array().square().colwise().mean();
  for (Eigen::Index j = 0; j < variance.size(); ++j) {
    if (tier->parameters().inv_std(j) < 1e5) {
      EXPECT_NEAR(variance(j), 1.0, 1e-2) << j;
    }
  }
}

TEST(LowerTierTest, FitIsDeterministicPerSeed) {
  const MatrixF images = MakeImages(60, 10, 8);
  LowerTierSpec spec = SmallSpec();
  absl::StatusOr<LowerTier> a = LowerTier::Fit(spec, images), b = LowerTier::Fit(spec, images);
  spec.seed = 12;
  absl::StatusOr<LowerTier> c = LowerTier::Fit(spec, images);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->Features(images), b->Features(images));
  EXPECT_NE(a->parameters().projection, c->parameters().projection);
}

TEST(LowerTierTest, InvalidSpecsAndInputsAreRefusedByName) {
  const MatrixF images = MakeImages(10, 10, 8);
  LowerTierSpec spec = SmallSpec();
  spec.patch = 4;
  absl::StatusOr<LowerTier> r = LowerTier::Fit(spec, images);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("patch = 4"));
  spec = SmallSpec();
  spec.filters = 10;
  EXPECT_THAT(std::string(LowerTier::Fit(spec, images).status().message()),
              ::testing::HasSubstr("filters = 10"));
  spec = SmallSpec();
  spec.image_width = 9;
  EXPECT_THAT(std::string(LowerTier::Fit(spec, images).status().message()),
              ::testing::HasSubstr("images have 80 values"));
  MatrixF bad = images;
  bad(3, 3) = std::nanf("");
  EXPECT_EQ(LowerTier::Fit(SmallSpec(), bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::model
