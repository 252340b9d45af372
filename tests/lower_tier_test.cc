#include "model/lower_tier.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/architecture.h"
#include "model/stages.h"
#include "model_test_util.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;

// A naive float64 convolution of one HWC sample, straight from the stage's definition.
Eigen::VectorXd NaiveConv(const ConvStage& conv, const Eigen::VectorXd& x) {
  const Shape& in = conv.input_shape();
  const int k = conv.patch(), half = k / 2, filters = conv.output_shape().channels;
  Eigen::VectorXd out = Eigen::VectorXd::Zero(conv.output_shape().size());
  for (int y = 0; y < in.height; ++y) {
    for (int x0 = 0; x0 < in.width; ++x0) {
      for (int f = 0; f < filters; ++f) {
        double r = 0;
        for (int dy = 0; dy < k; ++dy) {
          for (int dx = 0; dx < k; ++dx) {
            const int sy = y + dy - half, sx = x0 + dx - half;
            if (sy < 0 || sy >= in.height || sx < 0 || sx >= in.width) continue;
            for (int c = 0; c < in.channels; ++c) {
              r += x((sy * in.width + sx) * in.channels + c) *
                   conv.filters()((dy * k + dx) * in.channels + c, f);
            }
          }
        }
        out((y * in.width + x0) * filters + f) = r;
      }
    }
  }
  return out;
}

// Every stage of the lower tier, recomputed naively in float64 from the stages' parameters.
Eigen::VectorXd NaiveFeatures(const LowerTier& tier, const Eigen::VectorXd& image) {
  Eigen::VectorXd x = image;
  for (const auto& stage : tier.stages()) {
    const Shape& in = stage->input_shape();
    const Shape& out = stage->output_shape();
    Eigen::VectorXd y = Eigen::VectorXd::Zero(out.size());
    if (auto* conv = dynamic_cast<const ConvStage*>(stage.get())) {
      y = NaiveConv(*conv, x);
    } else if (dynamic_cast<const SplitReluStage*>(stage.get())) {
      for (int p = 0; p < in.height * in.width; ++p) {
        for (int c = 0; c < in.channels; ++c) {
          y(p * 2 * in.channels + c) = std::max(x(p * in.channels + c), 0.0);
          y(p * 2 * in.channels + in.channels + c) = std::max(-x(p * in.channels + c), 0.0);
        }
      }
    } else if (dynamic_cast<const PoolStage*>(stage.get())) {
      const int s = in.height / out.height;
      for (int gy = 0; gy < out.height; ++gy) {
        for (int gx = 0; gx < out.width; ++gx) {
          for (int c = 0; c < in.channels; ++c) {
            double sum = 0;
            for (int dy = 0; dy < s; ++dy) {
              for (int dx = 0; dx < s; ++dx) {
                sum += x(((gy * s + dy) * in.width + gx * s + dx) * in.channels + c);
              }
            }
            y((gy * out.width + gx) * in.channels + c) = sum / (s * s);
          }
        }
      }
    } else if (dynamic_cast<const SqrtStage*>(stage.get())) {
      y = x.array().sign() * x.array().abs().sqrt();
    } else if (auto* st = dynamic_cast<const StandardiseStage*>(stage.get())) {
      y = (x - st->mean().cast<double>()).cwiseProduct(st->inv_std().cast<double>());
    } else if (auto* ex = dynamic_cast<const ExpandStage*>(stage.get())) {
      y.head(x.size()) = x;
      y.tail(ex->bias().size()) =
          (ex->projection().cast<double>().transpose() * x + ex->bias().cast<double>())
              .cwiseMax(0.0);
    } else if (auto* ae = dynamic_cast<const ElmAutoencoderStage*>(stage.get())) {
      y = (ae->encoder().cast<double>().transpose() * x).cwiseMax(0.0);
    } else {
      ADD_FAILURE() << "no reference for " << stage->Describe();
    }
    x = y;
  }
  return x;
}

TEST(LowerTierTest, EveryStageMatchesANaiveFloat64Reference) {
  const MatrixF images = MakeImages(150, 10, 8);
  absl::StatusOr<LowerTier> tier = LowerTier::Fit(SmallArchitecture(), images, 3);
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ(tier->input_size(), 80);
  EXPECT_EQ(tier->stages().size(), 10u);
  EXPECT_EQ(tier->feature_size(), 5);
  EXPECT_EQ(tier->stages()[5]->output_shape().size(), 2 * 2 * 12);
  EXPECT_EQ(tier->Describe().size(), 11u);
  const MatrixF features = tier->Features(images);
  ASSERT_EQ(features.rows(), 150);
  ASSERT_EQ(features.cols(), 5);
  for (int i = 0; i < 150; ++i) {
    const Eigen::VectorXd reference =
        NaiveFeatures(*tier, images.row(i).transpose().cast<double>());
    ASSERT_LT((features.row(i).transpose().cast<double>() - reference).norm(),
              1e-4 * (1 + reference.norm()))
        << "image " << i;
  }
}

// The signed square root is computed in vectorised passes; every value must be the scalar
// definition's bits: sign(x) sqrt(|x|) correctly rounded, 0 for +-0 and NaN, whatever the
// position in the row (the vector body and the tail).
TEST(LowerTierTest, SignedSquareRootIsTheScalarDefinitionBitForBit) {
  const SqrtStage stage(Shape{1, 1, 37});
  MatrixF in(3, 37);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-100.0f, 100.0f);
  for (Eigen::Index i = 0; i < in.size(); ++i) in.data()[i] = uniform(rng);
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            -1e-40f,
                            2.0f,
                            -2.0f,
                            std::numeric_limits<float>::max(),
                            -std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::infinity(),
                            -1.0f,
                            1e-30f};
  for (size_t i = 0; i < std::size(specials); ++i) in.data()[7 * i] = specials[i];
  MatrixF out;
  stage.Apply(in, out);
  ASSERT_EQ(out.rows(), 3);
  ASSERT_EQ(out.cols(), 37);
  for (Eigen::Index i = 0; i < in.size(); ++i) {
    const float x = in.data()[i];
    const float expected = x > 0 ? std::sqrt(x) : (x < 0 ? -std::sqrt(-x) : 0.0f);
    EXPECT_EQ(std::bit_cast<uint32_t>(out.data()[i]), std::bit_cast<uint32_t>(expected))
        << "x = " << x << " at " << i;
  }
}

TEST(LowerTierTest, PcaFiltersAreOrthogonalAndStandardisedFeaturesAreUnitVariance) {
  const MatrixF images = MakeImages(200, 12, 12);
  LowerTierSpec spec;
  spec.image_height = spec.image_width = 12;
  spec.patch = 3;
  spec.filters = 4;
  spec.pool = 3;
  spec.expansion = 0;
  spec.pca_images = 100;
  absl::StatusOr<LowerTier> tier = LowerTier::Fit(spec, images);
  ASSERT_TRUE(tier.ok()) << tier.status();
  const auto& conv = dynamic_cast<const ConvStage&>(*tier->stages()[0]);
  const MatrixF& filters = conv.filters();
  for (int a = 0; a < filters.cols(); ++a) {
    EXPECT_NEAR(filters.col(a).sum(), 0.0, 1e-4);  // centred: they filter mean-removed patches
    for (int b = 0; b < a; ++b) {
      const float cosine =
          filters.col(a).dot(filters.col(b)) / (filters.col(a).norm() * filters.col(b).norm());
      EXPECT_NEAR(cosine, 0.0, 1e-3) << a << "," << b;
    }
  }
  // The whitening makes earlier (larger-variance) filters shorter.
  EXPECT_LT(filters.col(0).norm(), filters.col(3).norm());
  const MatrixF h = tier->Features(images);
  const Eigen::VectorXf mean = h.colwise().mean().transpose();
  EXPECT_LT(mean.cwiseAbs().maxCoeff(), 1e-3);
  const Eigen::VectorXf variance =
      (h.rowwise() - mean.transpose()).array().square().colwise().mean();
  for (Eigen::Index j = 0; j < variance.size(); ++j) EXPECT_NEAR(variance(j), 1.0, 1e-2) << j;
}

TEST(LowerTierTest, ElmAutoencoderDecoderIsTheRidgeSolution) {
  // With relu=0, the stage's output is x beta^T where beta solves the ridge problem on the hidden
  // layer; the reconstruction H beta must then beat any perturbed beta on the ridge objective.
  const MatrixF images = MakeImages(120, 6, 6);
  absl::StatusOr<Architecture> a =
      ParseArchitecture("input 6 6\nelm_ae units=10 lambda=0.5 relu=0\n");
  ASSERT_TRUE(a.ok());
  absl::StatusOr<LowerTier> tier = LowerTier::Fit(*a, images, 9);
  ASSERT_TRUE(tier.ok()) << tier.status();
  const auto& ae = dynamic_cast<const ElmAutoencoderStage&>(*tier->stages()[0]);
  EXPECT_EQ(ae.encoder().rows(), 36);
  EXPECT_EQ(ae.encoder().cols(), 10);
  const MatrixF out = tier->Features(images);
  EXPECT_TRUE(out.isApprox(images * ae.encoder(), 1e-5f));
}

TEST(LowerTierTest, FitIsDeterministicPerSeed) {
  const MatrixF images = MakeImages(60, 10, 8);
  const Architecture a = SmallArchitecture();
  absl::StatusOr<LowerTier> x = LowerTier::Fit(a, images, 1), y = LowerTier::Fit(a, images, 1),
                            z = LowerTier::Fit(a, images, 2);
  ASSERT_TRUE(x.ok() && y.ok() && z.ok());
  EXPECT_EQ(x->Features(images), y->Features(images));
  EXPECT_NE(x->Features(images), z->Features(images));
}

TEST(ArchitectureTest, ParsesAndPrintsCanonically) {
  absl::StatusOr<Architecture> a = ParseArchitecture(
      "input 28 28\n\n  conv   filters=8 patch=3 # comment\nsplit_relu\npool size=4\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->channels, 1);
  ASSERT_EQ(a->stages.size(), 3u);
  EXPECT_EQ(a->stages[0].params.at("patch"), "3");
  EXPECT_EQ(a->stages[0].line, 3);
  EXPECT_EQ(a->ToText(), "input 28 28 1\nconv filters=8 patch=3\nsplit_relu\npool size=4\n");
  absl::StatusOr<Architecture> again = ParseArchitecture(a->ToText());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ToText(), a->ToText());
}

TEST(ArchitectureTest, AugmentLineParsesAndPrintsAndIsNotAStage) {
  absl::StatusOr<Architecture> a = ParseArchitecture("input 8 8\nsqrt\naugment shift=1 hflip=1\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stages.size(), 1u);
  EXPECT_TRUE(a->augment.hflip);
  EXPECT_EQ(a->augment.shift, 1);
  EXPECT_EQ(a->augment.copies(), 5);
  EXPECT_EQ(a->ToText(), "input 8 8 1\nsqrt\naugment hflip=1 shift=1\n");
  absl::StatusOr<Architecture> none = ParseArchitecture("input 8 8\nsqrt\naugment hflip=0\n");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->augment.copies(), 0);
  EXPECT_EQ(none->ToText(), "input 8 8 1\nsqrt\n");
  EXPECT_THAT(ParseArchitecture("input 8 8\nsqrt\naugment rotate=1\n").status().message(),
              HasSubstr("line 3: augment: expected hflip=0|1 and shift=0..2, got \"rotate=1\""));
  EXPECT_THAT(ParseArchitecture("input 8 8\nsqrt\naugment shift=3\n").status().message(),
              HasSubstr("line 3: augment"));
}

TEST(ArchitectureTest, InvalidSpecsAreRefusedWithTheLineAndField) {
  auto error = [](const std::string& text) {
    absl::StatusOr<Architecture> a = ParseArchitecture(text);
    if (!a.ok()) return std::string(a.status().message());
    absl::StatusOr<LowerTier> tier = LowerTier::Fit(*a, MakeImages(4, 8, 8));
    return tier.ok() ? std::string("ok") : std::string(tier.status().message());
  };
  EXPECT_THAT(error("conv patch=3\n"), HasSubstr("no `input"));
  EXPECT_THAT(error("input 8 8\n"), HasSubstr("no stages"));
  EXPECT_THAT(error("input 8 8\ninput 8 8\nsqrt\n"), HasSubstr("line 2: a second `input`"));
  EXPECT_THAT(error("input 8 8\nfoo\n"), HasSubstr("line 2: unknown stage \"foo\""));
  EXPECT_THAT(error("input 8 8\nconv patch\n"), HasSubstr("line 2: expected key=value"));
  EXPECT_THAT(error("input 8 8\nconv patch=4\n"),
              HasSubstr("line 2: conv: patch=4, expected an odd"));
  EXPECT_THAT(error("input 8 8\nconv patch=3 filters=10\n"),
              HasSubstr("line 2: conv: filters=10, at most patch*patch*channels = 9"));
  EXPECT_THAT(error("input 8 8\nconv patch=x\n"), HasSubstr("patch=x, expected an integer"));
  EXPECT_THAT(error("input 8 8\nconv strides=2\n"), HasSubstr("unknown parameter strides"));
  EXPECT_THAT(error("input 8 8\npool size=9\n"), HasSubstr("size=9 is larger than the input"));
  EXPECT_THAT(error("input 8 8\nexpand units=4 concat=0\nconv\n"),
              HasSubstr("line 3: conv: needs a spatial input"));
  EXPECT_THAT(error("input 9 8\nsqrt\n"), HasSubstr("images have 64 values, the input is 9x8x1"));
  EXPECT_EQ(error("input 8 8\nsqrt\n"), "ok");
}

TEST(ArchitectureTest, ShippedSpecsParseAndBuild) {
  for (const char* name : {"default.spec", "fast.spec"}) {
    absl::StatusOr<Architecture> a =
        ReadArchitecture(std::string(STRATA_SOURCE_DIR) + "/specs/" + name);
    ASSERT_TRUE(a.ok()) << name << ": " << a.status();
    EXPECT_EQ(a->height, 28);
  }
  absl::StatusOr<Architecture> a =
      ReadArchitecture(std::string(STRATA_SOURCE_DIR) + "/specs/default.spec");
  ASSERT_TRUE(a.ok());
  // The built-in default is specs/default.spec.
  EXPECT_EQ(LowerTierSpec{}.ToArchitecture().ToText(), a->ToText());
  EXPECT_EQ(ReadArchitecture("/nonexistent.spec").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace strata::model
