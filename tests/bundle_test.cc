#include "model/bundle.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_test_util.h"

namespace strata::model {
namespace {

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per process: ctest -j runs the cases of this suite in parallel processes.
    dir_ = ::testing::TempDir() + "/strata_bundle_test." + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    images_ = MakeImages(80, 12, 12);
    LowerTierSpec spec;
    spec.image_height = spec.image_width = 12;
    spec.patch = 3;
    spec.filters = 3;
    spec.pool = 4;
    spec.expansion = 5;
    spec.pca_images = 40;
    absl::StatusOr<LowerTier> lower = LowerTier::Fit(spec, images_);
    ASSERT_TRUE(lower.ok()) << lower.status();
    UpperTier upper(lower->feature_size(), 2.5);
    std::vector<std::string> labels;
    for (int i = 0; i < images_.rows(); ++i) labels.push_back(i % 3 == 0 ? "shirt" : "trouser");
    ASSERT_TRUE(upper.AbsorbLabeled(lower->Features(images_), labels).ok());
    bundle_.emplace(
        Bundle{std::make_shared<const LowerTier>(*std::move(lower)), std::move(upper), 42});
    path_ = dir_ + "/model.bundle";
    ASSERT_TRUE(WriteBundle(*bundle_, path_).ok());
  }

  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Contents() { return *base::ReadFile(path_); }
  void Overwrite(const std::string& bytes) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::string dir_, path_;
  MatrixF images_;
  std::optional<Bundle> bundle_;
};

TEST_F(BundleTest, RoundTripKeepsEveryParameterExactly) {
  absl::StatusOr<Bundle> read = ReadBundle(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->version, 42u);
  EXPECT_EQ(read->lower->architecture().ToText(), bundle_->lower->architecture().ToText());
  const auto& a = dynamic_cast<const ExpandStage&>(*bundle_->lower->stages().back());
  const auto& b = dynamic_cast<const ExpandStage&>(*read->lower->stages().back());
  EXPECT_EQ(a.projection(), b.projection());
  EXPECT_EQ(a.bias(), b.bias());
  const MatrixD stored = read->upper.gram().triangularView<Eigen::Lower>();
  const MatrixD written = bundle_->upper.gram().triangularView<Eigen::Lower>();
  EXPECT_EQ(stored, written);
  EXPECT_EQ(read->upper.cross(), bundle_->upper.cross());
  EXPECT_EQ(read->upper.labels(), (std::vector<std::string>{"shirt", "trouser"}));
  EXPECT_EQ(read->upper.samples_seen(), 80u);
  EXPECT_EQ(read->upper.lambda(), 2.5);
  EXPECT_EQ(read->lower->Features(images_), bundle_->lower->Features(images_));
}

TEST_F(BundleTest, Int8CalibrationIsOptionalAndRoundTrips) {
  // Without int8 records (as before they existed): empty.
  absl::StatusOr<Bundle> read = ReadBundle(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->int8.empty());

  absl::StatusOr<Int8Calibration> int8 =
      QuantizedLowerTier::CalibrateActivations(*bundle_->lower, images_, {.percentile = 99.9});
  ASSERT_TRUE(int8.ok()) << int8.status();
  ASSERT_EQ(int8->activation_scales.size(), 2u);  // conv and expand
  bundle_->int8 = *int8;
  ASSERT_TRUE(WriteBundle(*bundle_, path_).ok());
  read = ReadBundle(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->int8.activation_scales, int8->activation_scales);
  EXPECT_EQ(read->int8.max_abs_activations, int8->max_abs_activations);
  EXPECT_EQ(read->int8.clipped_fractions, int8->clipped_fractions);
  EXPECT_EQ(read->int8.percentile, 99.9);
  EXPECT_EQ(read->int8.calibration_images, 80u);

  // A non-positive scale is refused as corrupt.
  bundle_->int8.activation_scales[1] = 0;
  ASSERT_TRUE(WriteBundle(*bundle_, path_).ok());
  read = ReadBundle(path_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_THAT(read.status().message(), ::testing::HasSubstr("lower.int8.activation_scale"));
}

TEST_F(BundleTest, TruncatedFileIsRefusedAtEveryLength) {
  const std::string whole = Contents();
  for (size_t length : {size_t{0}, size_t{7}, size_t{31}, size_t{32}, size_t{100}, whole.size() / 2,
                        whole.size() - 1}) {
    Overwrite(whole.substr(0, length));
    absl::StatusOr<Bundle> read = ReadBundle(path_);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << length;
    EXPECT_THAT(std::string(read.status().message()), ::testing::HasSubstr(path_));
  }
  Overwrite(whole.substr(0, whole.size() / 2));
  EXPECT_THAT(std::string(ReadBundle(path_).status().message()), ::testing::HasSubstr("truncated"));
}

TEST_F(BundleTest, AnyFlippedByteIsDetected) {
  const std::string whole = Contents();
  for (size_t offset = 0; offset < whole.size(); offset += whole.size() / 97 + 1) {
    std::string corrupt = whole;
    corrupt[offset] ^= 0x20;
    Overwrite(corrupt);
    absl::StatusOr<Bundle> read = ReadBundle(path_);
    EXPECT_FALSE(read.ok()) << "flip at offset " << offset << " was not detected";
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << offset;
  }
}

TEST_F(BundleTest, MissingFileAndForeignFile) {
  EXPECT_EQ(ReadBundle(dir_ + "/nope").status().code(), absl::StatusCode::kNotFound);
  Overwrite(std::string(64, 'x'));
  EXPECT_THAT(std::string(ReadBundle(path_).status().message()), ::testing::HasSubstr("bad magic"));
}

// The optional int8 readout records (upper.readout.*) round-trip exactly, and a bundle without
// them (every bundle written before they existed, like the fixture's) reads as a float readout.
TEST_F(BundleTest, Int8ReadoutScalesRoundTrip) {
  absl::StatusOr<Bundle> old = ReadBundle(path_);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_FALSE(old->upper.int8_readout());
  EXPECT_EQ(old->readout_features, "float");
  EXPECT_EQ(old->readout_percentile, 0);

  const MatrixF features = bundle_->lower->Features(images_);
  absl::StatusOr<std::vector<float>> scales = CalibrateReadoutScales(features, 99);
  ASSERT_TRUE(scales.ok()) << scales.status();
  ASSERT_TRUE(bundle_->upper.set_readout_scales(*scales).ok());
  bundle_->readout_features = "int8";
  bundle_->readout_percentile = 99;
  ASSERT_TRUE(WriteBundle(*bundle_, path_).ok());
  absl::StatusOr<Bundle> read = ReadBundle(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->upper.int8_readout());
  EXPECT_EQ(read->upper.readout_scales(), bundle_->upper.readout_scales());
  EXPECT_EQ(read->readout_features, "int8");
  EXPECT_EQ(read->readout_percentile, 99);
  // The stored (16-bit) scales quantise the rows exactly as the writer's did.
  std::vector<int8_t> a, b;
  ASSERT_TRUE(bundle_->upper.QuantizeFeatures(features, &a, nullptr).ok());
  ASSERT_TRUE(read->upper.QuantizeFeatures(features, &b, nullptr).ok());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace strata::model
