#include "model/quantized_lower_tier.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fpga/backend.h"
#include "fpga/dataflow.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/architecture.h"
#include "model/lower_tier.h"
#include "model/stages.h"
#include "model_test_util.h"

namespace strata::model {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<fpga::Backend> MakeBackend(const char* name) {
  absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(name);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return *std::move(backend);
}

// ||a - b||_F / ||b||_F.
double RelativeError(const MatrixF& a, const MatrixF& b) { return (a - b).norm() / b.norm(); }

class QuantizedLowerTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    images_ = MakeImages(150, 10, 8);
    absl::StatusOr<LowerTier> tier = LowerTier::Fit(SmallArchitecture(), images_, 3);
    ASSERT_TRUE(tier.ok()) << tier.status();
    tier_ = std::make_shared<const LowerTier>(*std::move(tier));
    cpu_ = MakeBackend("cpu");
    emu_ = MakeBackend("emu");
  }

  QuantizedLowerTier Quantize(fpga::Backend& backend, ActivationCalibration calibration = {}) {
    absl::StatusOr<QuantizedLowerTier> q =
        QuantizedLowerTier::Calibrate(tier_, images_.topRows(100), backend, calibration);
    EXPECT_TRUE(q.ok()) << q.status();
    return *std::move(q);
  }

  MatrixF images_;
  std::shared_ptr<const LowerTier> tier_;
  std::unique_ptr<fpga::Backend> cpu_, emu_;
};

TEST_F(QuantizedLowerTierTest, CpuAndEmuGiveBitIdenticalFeaturesCloseToTheFloatTier) {
  const QuantizedLowerTier on_cpu = Quantize(*cpu_);
  const QuantizedLowerTier on_emu = Quantize(*emu_);
  ASSERT_EQ(on_cpu.quantized_stages().size(), 4u);  // conv, conv, expand, elm_ae
  EXPECT_EQ(on_cpu.quantized_stages()[0].kind, "conv");
  EXPECT_EQ(on_cpu.quantized_stages()[0].rows_per_sample, 80);
  EXPECT_EQ(on_cpu.quantized_stages()[1].kind, "conv");
  EXPECT_EQ(on_cpu.quantized_stages()[2].kind, "expand");
  EXPECT_EQ(on_cpu.quantized_stages()[3].kind, "elm_ae");
  EXPECT_EQ(on_cpu.DescribeQuantization().size(), 4u);

  // 150 images: three chunks on the OpenMP threads, the last one partial.
  absl::StatusOr<MatrixF> cpu_features = on_cpu.Features(images_);
  absl::StatusOr<MatrixF> emu_features = on_emu.Features(images_);
  ASSERT_TRUE(cpu_features.ok()) << cpu_features.status();
  ASSERT_TRUE(emu_features.ok()) << emu_features.status();
  ASSERT_EQ(cpu_features->rows(), 150);
  ASSERT_EQ(cpu_features->cols(), tier_->feature_size());
  // Integer accumulation is exact and the host's float code is the same: identical bits.
  EXPECT_EQ(*cpu_features, *emu_features);

  // A batch of one gives the same rows as the big batch (no cross-row effects).
  absl::StatusOr<MatrixF> one = on_emu.Features(images_.middleRows(7, 1));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, cpu_features->middleRows(7, 1));

  // Against the float tier. The only error is the rounding of activations and weights to 8 bits
  // (relative step ~1/254 per tensor, i.e. ~0.1-0.3% RMS per product), compounded through two
  // convs, the signed sqrt (which magnifies small values) and standardise (which magnifies
  // low-variance features). Measured: 0.94% relative (Frobenius) error on these features; the
  // bound is 5%. A wrong scale, a transposed weight or a dropped bias gives errors of order 100%.
  const MatrixF reference = tier_->Features(images_);
  const double error = RelativeError(*cpu_features, reference);
  RecordProperty("relative_error_vs_float", absl::StrCat(error));
  EXPECT_LT(error, 0.05);
  EXPECT_GT(error, 0.0);  // the int8 path really ran
  // The features' overall pattern is preserved: per-row argmax agrees for most rows.
  int same_argmax = 0;
  for (Eigen::Index i = 0; i < reference.rows(); ++i) {
    Eigen::Index a, b;
    reference.row(i).maxCoeff(&a);
    cpu_features->row(i).maxCoeff(&b);
    same_argmax += a == b;
  }
  EXPECT_GE(same_argmax, 140);
}

TEST_F(QuantizedLowerTierTest, CalibrationRefusesMismatchedImages) {
  MatrixF wrong_width = MatrixF::Constant(10, 81, 0.5f);
  absl::StatusOr<QuantizedLowerTier> q = QuantizedLowerTier::Calibrate(tier_, wrong_width, *cpu_);
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      q.status().message(),
      HasSubstr("calibration images have 81 values, the lower tier's input is 10x8x1 = 80"));

  q = QuantizedLowerTier::Calibrate(tier_, MatrixF(0, 80), *cpu_);
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("no calibration images"));

  MatrixF with_nan = images_.topRows(5);
  with_nan(2, 3) = std::numeric_limits<float>::quiet_NaN();
  q = QuantizedLowerTier::Calibrate(tier_, with_nan, *cpu_);
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("NaN or Inf"));

  q = QuantizedLowerTier::Calibrate(tier_, images_, *cpu_, {.percentile = 0});
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("percentile"));

  // Features refuses the wrong width too, without touching the backend.
  const QuantizedLowerTier good = Quantize(*cpu_);
  fpga::OpCounts counts;
  absl::StatusOr<MatrixF> features = good.Features(wrong_width, &counts);
  EXPECT_EQ(features.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(features.status().message(), HasSubstr("images have 81 values, the input has 80"));
  EXPECT_EQ(counts, fpga::OpCounts{});
}

TEST_F(QuantizedLowerTierTest, OpCountsAreWhatTheShapesImply) {
  uint64_t macs_per_image = 0;
  for (const auto& stage : tier_->stages()) macs_per_image += stage->MacsPerSample();
  ASSERT_GT(macs_per_image, 0u);
  // conv1: 80 px * 9 taps * 4; conv2: 20 px * 72 taps * 6; expand: 48 * 7; elm_ae: (48 + 7) * 5.
  EXPECT_EQ(macs_per_image, 80u * 9 * 4 + 20u * 72 * 6 + 48u * 7 + 55u * 5);

  for (fpga::Backend* backend : {cpu_.get(), emu_.get()}) {
    SCOPED_TRACE(backend->info().name);
    const QuantizedLowerTier q = Quantize(*backend);
    EXPECT_EQ(q.Int8MacsPerSample(), macs_per_image);

    // One chunk (one thread, <= 64 images): on these host backends the convolutions (every
    // stage before the first dense layer) run image by image, one Forward per image, and the
    // dense layers once for the chunk; the counts are the sum of the backend's dataflow model
    // over those calls.
    constexpr int kBatch = 13;
    fpga::OpCounts counts;
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    ASSERT_TRUE(q.Features(images_.topRows(kBatch), &counts).ok());
    omp_set_num_threads(threads);
    fpga::OpCounts expected;
    for (const QuantizedStageInfo& info : q.quantized_stages()) {
      const bool per_image = info.kind == "conv";
      const int rows = per_image ? info.rows_per_sample : kBatch;
      const fpga::OpCounts call =
          backend->info().name == "cpu"
              ? fpga::DenseInt8CpuCounts(rows, info.in_features, info.out_features, true)
              : fpga::DenseInt8KernelCounts(rows, info.in_features, info.out_features, true);
      for (int i = 0; i < (per_image ? kBatch : 1); ++i) expected += call;
    }
    EXPECT_EQ(counts, expected) << fpga::ToString(counts);
    EXPECT_EQ(counts.int8_macs, kBatch * macs_per_image);
    EXPECT_EQ(counts.fp32_macs, 0u);

    // Several chunks: the MACs still add up per image.
    ASSERT_TRUE(q.Features(images_, &counts).ok());
    EXPECT_EQ(counts.int8_macs, 150 * macs_per_image);
  }
}

// A single expand stage, checked against the quantisation recipe computed by hand: x_q =
// round(x / s_x), w_q = round(w / s_w[o]) with s_w[o] = max |w[:, o]| / 127, b_q = round(b /
// (s_x s_w[o])), y = relu(acc) * s_x * s_w[o]; the concatenated copy of x stays float.
TEST(QuantizedLowerTierRecipeTest, ExpandMatchesTheRecipeComputedByHand) {
  absl::StatusOr<Architecture> a =
      ParseArchitecture("input 6 5 1\nexpand units=9 bias_scale=0.5\n");
  ASSERT_TRUE(a.ok()) << a.status();
  const MatrixF images = MakeImages(40, 6, 5);
  absl::StatusOr<LowerTier> fitted = LowerTier::Fit(*a, images, 5);
  ASSERT_TRUE(fitted.ok()) << fitted.status();
  const auto tier = std::make_shared<const LowerTier>(*std::move(fitted));
  std::unique_ptr<fpga::Backend> cpu = MakeBackend("cpu");
  absl::StatusOr<QuantizedLowerTier> q =
      QuantizedLowerTier::Calibrate(tier, images, *cpu, {.percentile = 100});
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->quantized_stages().size(), 1u);
  const QuantizedStageInfo& info = q->quantized_stages()[0];
  // With the 100th percentile the scale is the calibration maximum: nothing clips.
  const float max_abs = images.cwiseAbs().maxCoeff();
  EXPECT_FLOAT_EQ(info.activation_scale, max_abs / 127.0f);
  EXPECT_FLOAT_EQ(info.max_abs_activation, max_abs);
  EXPECT_EQ(info.clipped_fraction, 0.0);

  const auto& expand = static_cast<const ExpandStage&>(*tier->stages()[0]);
  const MatrixF& p = expand.projection();
  absl::StatusOr<MatrixF> features = q->Features(images);
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->cols(), 30 + 9);
  EXPECT_EQ(features->leftCols(30), images);
  // In the same float arithmetic as the implementation, so that no value rounds differently.
  const float s_x = info.activation_scale;
  const float inverse_s_x = 1.0f / s_x;
  for (Eigen::Index n = 0; n < images.rows(); ++n) {
    for (int o = 0; o < 9; ++o) {
      const float s_w = p.col(o).cwiseAbs().maxCoeff() / 127.0f;
      int64_t acc = std::llround(std::nearbyint(expand.bias()(o) / (double{s_x} * s_w)));
      for (int i = 0; i < 30; ++i) {
        acc += std::llround(std::nearbyint(images(n, i) * inverse_s_x)) *
               std::llround(std::nearbyint(p(i, o) / s_w));
      }
      const double expected = std::max<int64_t>(acc, 0) * (double{s_x} * s_w);
      EXPECT_NEAR((*features)(n, 30 + o), expected, 1e-5 * (1 + std::abs(expected)))
          << "image " << n << " unit " << o;
    }
  }

  // A low percentile clips: at the median about half the values saturate.
  q = QuantizedLowerTier::Calibrate(tier, images, *cpu, {.percentile = 50});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_GT(q->quantized_stages()[0].clipped_fraction, 0.3);
  EXPECT_LE(q->quantized_stages()[0].clipped_fraction, 0.5);
}

// conv -> split_relu -> pool runs fused (one pass over the conv's int32 sums, image by image):
// it must equal the three stages run one after the other on the dequantised conv output, bit for
// bit. The conv's sums are recomputed by hand from the quantisation recipe. 4 filters take the
// general loop, 24 (the shipped specs') the one unrolled for that count.
TEST(QuantizedLowerTierRecipeTest, FusedConvSplitReluPoolEqualsTheStagesBitForBit) {
  constexpr int kHeight = 8, kWidth = 6, kPixels = kHeight * kWidth;
  for (const auto [patch, filters] : {std::pair{3, 4}, std::pair{5, 24}}) {
    SCOPED_TRACE(absl::StrCat(filters, " filters"));
    const int taps = patch * patch;
    absl::StatusOr<Architecture> a = ParseArchitecture(
        absl::StrCat("input ", kHeight, " ", kWidth, " 1\nconv patch=", patch, " filters=", filters,
                     " pca_images=50\nsplit_relu\npool size=2\n"));
    ASSERT_TRUE(a.ok()) << a.status();
    const MatrixF images = MakeImages(30, kHeight, kWidth);
    absl::StatusOr<LowerTier> fitted = LowerTier::Fit(*a, images, 5);
    ASSERT_TRUE(fitted.ok()) << fitted.status();
    const auto tier = std::make_shared<const LowerTier>(*std::move(fitted));
    for (const char* device : {"cpu", "emu"}) {
      SCOPED_TRACE(device);
      std::unique_ptr<fpga::Backend> backend = MakeBackend(device);
      absl::StatusOr<QuantizedLowerTier> q = QuantizedLowerTier::Calibrate(tier, images, *backend);
      ASSERT_TRUE(q.ok()) << q.status();
      absl::StatusOr<MatrixF> features = q->Features(images);
      ASSERT_TRUE(features.ok()) << features.status();

      const auto& conv = static_cast<const ConvStage&>(*tier->stages()[0]);
      const MatrixF& w = conv.filters();  // taps x filters
      const float s_x = q->quantized_stages()[0].activation_scale;
      const float inverse_s_x = 1.0f / s_x;
      MatrixF dequantised(images.rows(), kPixels * filters), patches;
      for (Eigen::Index n = 0; n < images.rows(); ++n) {
        conv.Patches(images.row(n).data(), patches);  // pixels x taps
        for (Eigen::Index p = 0; p < kPixels; ++p) {
          for (int o = 0; o < filters; ++o) {
            const float s_w = w.col(o).cwiseAbs().maxCoeff() / 127.0f;
            int32_t acc = 0;
            for (int i = 0; i < taps; ++i) {
              const float x = std::clamp(patches(p, i) * inverse_s_x, -127.0f, 127.0f);
              const float wq = std::clamp(w(i, o) / s_w, -127.0f, 127.0f);
              acc += static_cast<int32_t>(std::nearbyint(x)) *
                     static_cast<int32_t>(std::nearbyint(wq));
            }
            dequantised(n, p * filters + o) =
                static_cast<float>(acc) * static_cast<float>(static_cast<double>(s_x) * s_w);
          }
        }
      }
      MatrixF split, pooled;
      tier->stages()[1]->Apply(dequantised, split);
      tier->stages()[2]->Apply(split, pooled);
      EXPECT_EQ(*features, pooled);
    }
  }
}

}  // namespace
}  // namespace strata::model
