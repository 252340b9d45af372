// Unit tests of the server's parts that need no network: request validation, the model store and
// the work queue.
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"
#include "server/auth.h"
#include "update/model_store.h"
#include "server/validation.h"
#include "server/work_queue.h"

namespace strata::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kSize = 16;  // a 4x4 "image"

// ---- validation ------------------------------------------------------------------------------

TEST(ReadSampleTest, PixelsAreScaledTo01) {
  v1::Sample sample;
  std::string pixels(kSize, '\0');
  pixels[1] = '\xff';
  pixels[2] = static_cast<char>(51);
  sample.set_pixels(pixels);
  std::vector<float> out(kSize, -1.0f);
  ASSERT_TRUE(ReadSample(sample, kSize, "samples[0]", out.data()).ok());
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], 51.0f / 255.0f);
}

TEST(ReadSampleTest, ValuesAreCopied) {
  v1::Sample sample;
  for (int i = 0; i < kSize; ++i) sample.mutable_values()->add_values(0.5f * i);
  std::vector<float> out(kSize);
  ASSERT_TRUE(ReadSample(sample, kSize, "x", out.data()).ok());
  EXPECT_EQ(out[3], 1.5f);
}

TEST(ReadSampleTest, ErrorsNameTheField) {
  std::vector<float> out(kSize);
  v1::Sample sample;
  absl::Status status = ReadSample(sample, kSize, "samples[4]", out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("samples[4]: neither pixels nor values set"));

  sample.set_pixels(std::string(kSize + 1, '\0'));
  status = ReadSample(sample, kSize, "samples[1].sample", out.data());
  EXPECT_EQ(status.message(), "samples[1].sample.pixels: expected 16 bytes, got 17");

  sample.mutable_values()->add_values(1.0f);
  status = ReadSample(sample, kSize, "samples[0]", out.data());
  EXPECT_EQ(status.message(), "samples[0].values.values: expected 16 floats, got 1");

  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    sample.mutable_values()->Clear();
    for (int i = 0; i < kSize; ++i) sample.mutable_values()->add_values(i == 9 ? bad : 0.0f);
    status = ReadSample(sample, kSize, "samples[2]", out.data());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("samples[2].values.values[9]: expected a finite float"));
  }
}

TEST(ValidateLabelTest, EmptyAndLongLabelsAreRejected) {
  EXPECT_TRUE(ValidateLabel("shirt", "l").ok());
  EXPECT_TRUE(ValidateLabel(std::string(kMaxLabelBytes, 'a'), "l").ok());
  EXPECT_EQ(ValidateLabel("", "samples[0].label").message(),
            "samples[0].label: empty label, expected 1..256 bytes");
  EXPECT_EQ(ValidateLabel(std::string(kMaxLabelBytes + 1, 'a'), "samples[0].label").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ReadBatchTest, BoundsAndRows) {
  google::protobuf::RepeatedPtrField<v1::Sample> samples;
  EXPECT_EQ(ReadBatch(samples, kSize, 2).status().code(), absl::StatusCode::kInvalidArgument);
  for (int i = 0; i < 2; ++i) samples.Add()->set_pixels(std::string(kSize, static_cast<char>(i)));
  absl::StatusOr<model::MatrixF> batch = ReadBatch(samples, kSize, 2);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->rows(), 2);
  EXPECT_EQ((*batch)(1, 0), 1.0f / 255.0f);
  samples.Add()->set_pixels(std::string(kSize, '\0'));
  EXPECT_EQ(ReadBatch(samples, kSize, 2).status().code(), absl::StatusCode::kResourceExhausted);
}

// ---- model store -----------------------------------------------------------------------------

// A tiny bundle over 8x8 images: 2 classes "a" (dark images) and "b" (bright images).
model::Bundle TinyBundle() {
  model::LowerTierSpec spec;
  spec.image_height = 8;
  spec.image_width = 8;
  spec.patch = 3;
  spec.filters = 2;
  spec.pool = 4;
  spec.expansion = 8;
  spec.pca_images = 20;
  model::MatrixF images(20, 64);
  for (int i = 0; i < 20; ++i) {
    for (int j = 0; j < 64; ++j) images(i, j) = ((i * 7 + j * 3) % 11) / 10.0f * (i < 10 ? 0.2f : 1);
  }
  absl::StatusOr<model::LowerTier> lower = model::LowerTier::Fit(spec, images);
  EXPECT_TRUE(lower.ok()) << lower.status();
  model::UpperTier upper(lower->feature_size(), 1.0);
  std::vector<std::string> labels;
  for (int i = 0; i < 20; ++i) labels.push_back(i < 10 ? "a" : "b");
  EXPECT_TRUE(upper.AbsorbLabeled(lower->Features(images), labels).ok());
  return model::Bundle{*std::move(lower), std::move(upper), 5};
}

TEST(ModelStoreTest, EmptyUntilLoaded) {
  update::ModelStore store;
  EXPECT_EQ(store.Current(), nullptr);
  EXPECT_EQ(store.Publish().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.Absorb(model::MatrixF(0, 1), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store.Load(TinyBundle()).ok());
  ASSERT_NE(store.Current(), nullptr);
  EXPECT_EQ(store.Current()->version, 5u);
  EXPECT_EQ(store.Current()->samples_seen, 20u);
  EXPECT_THAT(store.Current()->readout.labels, ElementsAre("a", "b"));
  EXPECT_EQ(store.Load(TinyBundle()).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ModelStoreTest, AbsorbIsInvisibleUntilPublishAndReadersKeepTheirVersion) {
  update::ModelStore store;
  ASSERT_TRUE(store.Load(TinyBundle()).ok());
  std::shared_ptr<const update::ModelVersion> v5 = store.Current();
  const model::LowerTier& lower = *v5->lower;
  model::MatrixF features = lower.Features(model::MatrixF::Constant(3, 64, 0.5f));

  // A width mismatch absorbs nothing.
  EXPECT_EQ(store.Absorb(model::MatrixF(1, features.cols() + 1), std::vector<std::string>{"a"})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Absorb(features, std::vector<std::string>{"a"}).status().code(),
            absl::StatusCode::kInvalidArgument);

  absl::StatusOr<std::vector<std::string>> new_labels =
      store.Absorb(features, std::vector<std::string>{"b", "c", "c"});
  ASSERT_TRUE(new_labels.ok()) << new_labels.status();
  EXPECT_THAT(*new_labels, ElementsAre("c"));
  EXPECT_EQ(store.Current(), v5);  // not published yet

  absl::StatusOr<std::shared_ptr<const update::ModelVersion>> v6 = store.Publish();
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ((*v6)->version, 6u);
  EXPECT_EQ((*v6)->samples_seen, 23u);
  EXPECT_THAT((*v6)->readout.labels, ElementsAre("a", "b", "c"));
  EXPECT_EQ((*v6)->lower, v5->lower);  // the frozen lower tier is shared
  EXPECT_EQ(store.Current(), *v6);
  // The old version is untouched and still usable by whoever holds it.
  EXPECT_EQ(v5->version, 5u);
  EXPECT_THAT(v5->readout.labels, ElementsAre("a", "b"));
  EXPECT_EQ(v5->readout.weights.cols(), 2);
}

// ---- work queue --------------------------------------------------------------------------------

TEST(WorkQueueTest, RunsEverythingBeforeDrainReturns) {
  std::atomic<int> done{0};
  absl::Notification release;
  {
    WorkQueue queue("test", 2);
    queue.Schedule([&] {
      release.WaitForNotification();
      ++done;
    });
    for (int i = 0; i < 100; ++i) queue.Schedule([&] { ++done; });
    release.Notify();
    queue.Drain();
    EXPECT_EQ(done.load(), 101);
    queue.Schedule([&] { ++done; });  // after Drain: runs inline
    EXPECT_EQ(done.load(), 102);
  }
}

TEST(ConstantTimeEqualsTest, EqualOnlyForTheSameBytes) {
  EXPECT_TRUE(ConstantTimeEquals("token", "token"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("token", "tokem"));
  EXPECT_FALSE(ConstantTimeEquals("token", "Token"));
  EXPECT_FALSE(ConstantTimeEquals("token", "tok"));           // a prefix
  EXPECT_FALSE(ConstantTimeEquals("token", "tokentoken"));    // the token repeated
  EXPECT_FALSE(ConstantTimeEquals("token", ""));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

}  // namespace
}  // namespace strata::server
