// Unit tests of the server's parts that need no network: request validation, the model store (and
// its version reservation) and the work queue.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"
#include "server/auth.h"
#include "server/validation.h"
#include "server/work_queue.h"
#include "tests/fault_injection_env.h"
#include "update/model_store.h"
#include "update/version_reservation.h"

namespace strata::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kSize = 16;  // a 4x4 "image"
const model::InputKind kImageKind = model::InputKind::Image(model::Shape{4, 4, 1});

// server::ReadSample of one image into `out` (`size` floats).
absl::Status ReadSample(const v1::Sample& sample, int size, absl::string_view field, float* out) {
  model::SampleBatch batch;
  batch.values.resize(1, size);
  absl::Status status = server::ReadSample(sample, kImageKind, field, &batch, 0);
  std::copy(batch.values.data(), batch.values.data() + size, out);
  return status;
}

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
    EXPECT_THAT(status.message(),
                HasSubstr("samples[2].values.values[9]: expected a finite float"));
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
  EXPECT_EQ(ReadBatch(samples, kImageKind, 2).status().code(), absl::StatusCode::kInvalidArgument);
  for (int i = 0; i < 2; ++i) samples.Add()->set_pixels(std::string(kSize, static_cast<char>(i)));
  absl::StatusOr<model::SampleBatch> batch = ReadBatch(samples, kImageKind, 2);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->size(), 2);
  EXPECT_EQ(batch->values(1, 0), 1.0f / 255.0f);
  samples.Add()->set_pixels(std::string(kSize, '\0'));
  EXPECT_EQ(ReadBatch(samples, kImageKind, 2).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// Text samples for a text model: read in order; every bad one names its field; the wrong kind
// either way is INVALID_ARGUMENT naming the field that was set.
TEST(ReadBatchTest, TextsForATextModel) {
  const model::InputKind text_kind = model::InputKind::Text(/*max_text_bytes=*/8, 128);
  google::protobuf::RepeatedPtrField<v1::Sample> samples;
  samples.Add()->set_text("h\xc3\xa9llo");
  samples.Add()->set_text("12345678");
  absl::StatusOr<model::SampleBatch> batch = ReadBatch(samples, text_kind, 4);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_THAT(batch->texts, ElementsAre("h\xc3\xa9llo", "12345678"));
  EXPECT_EQ(batch->size(), 2);

  const std::vector<std::pair<std::string, std::string>> bad_texts = {
      {"", "samples[2].text: empty text, expected 1..8 bytes of UTF-8"},
      {"123456789", "samples[2].text: 9 bytes, expected at most 8"},
      {"ab\xed\xa0\x80", "samples[2].text: not valid UTF-8 at byte 2"},  // a surrogate
      {"\xc0\xaf", "samples[2].text: not valid UTF-8 at byte 0"},        // overlong
      {"abc\xe2\x82", "samples[2].text: not valid UTF-8 at byte 3"},     // cut short
  };
  for (const auto& [text, expected] : bad_texts) {
    google::protobuf::RepeatedPtrField<v1::Sample> bad = samples;
    bad.Add()->set_text(text);
    EXPECT_EQ(ReadBatch(bad, text_kind, 4).status().message(), expected);
  }
  google::protobuf::RepeatedPtrField<v1::Sample> pixels = samples;
  pixels.Add()->set_pixels("x");
  EXPECT_EQ(ReadBatch(pixels, text_kind, 4).status().message(),
            "samples[2].pixels: this model takes text, not pixels");
  google::protobuf::RepeatedPtrField<v1::Sample> texts_to_images;
  texts_to_images.Add()->set_text("hello");
  EXPECT_EQ(ReadBatch(texts_to_images, kImageKind, 4).status().message(),
            "samples[0].text: this model takes images (pixels or values), not text");
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
    for (int j = 0; j < 64; ++j)
      images(i, j) = ((i * 7 + j * 3) % 11) / 10.0f * (i < 10 ? 0.2f : 1);
  }
  absl::StatusOr<model::LowerTier> lower = model::LowerTier::Fit(spec, images);
  EXPECT_TRUE(lower.ok()) << lower.status();
  model::UpperTier upper(lower->feature_size(), 1.0);
  std::vector<std::string> labels;
  for (int i = 0; i < 20; ++i) labels.push_back(i < 10 ? "a" : "b");
  EXPECT_TRUE(upper.AbsorbLabeled(lower->Features(images), labels).ok());
  return model::Bundle{std::make_shared<const model::LowerTier>(*std::move(lower)),
                       std::move(upper), 5};
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
  const model::LowerTier& lower = *v5->extractor->lower_tier();
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
  EXPECT_EQ((*v6)->extractor, v5->extractor);  // the frozen lower tier is shared
  EXPECT_EQ(store.Current(), *v6);
  // The old version is untouched and still usable by whoever holds it.
  EXPECT_EQ(v5->version, 5u);
  EXPECT_THAT(v5->readout.labels, ElementsAre("a", "b"));
  EXPECT_EQ(v5->readout.weights.cols(), 2);
}

// ---- version reservation (docs/model-versions-format.md) ---------------------------------------

using update::DecodeVersionsFile;
using update::EncodeVersionsFile;
using update::Env;
using update::FaultInjectionEnv;
using update::kVersionBlock;
using update::kVersionsFileName;
using update::ModelStore;
using update::ModelVersion;
using update::VersionReservation;

class VersionReservationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/strata_versions_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = absl::StrCat(dir_, "/", kVersionsFileName);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<VersionReservation> Open(uint64_t block) {
    absl::StatusOr<std::unique_ptr<VersionReservation>> versions =
        VersionReservation::Open(&env_, dir_, block);
    EXPECT_TRUE(versions.ok()) << versions.status();
    return versions.ok() ? *std::move(versions) : nullptr;
  }

  // A few labelled feature rows for `store`'s model, so that Publish() has something to solve.
  static void AbsorbSome(ModelStore& store) {
    const model::MatrixF features =
        store.Current()->extractor->lower_tier()->Features(model::MatrixF::Constant(2, 64, 0.25f));
    ASSERT_TRUE(store.Absorb(features, std::vector<std::string>{"a", "b"}).ok());
  }

  FaultInjectionEnv env_;
  std::string dir_;
  std::string path_;
};

TEST_F(VersionReservationTest, ReservesInBlocksAndARestartStartsAboveEveryReservedVersion) {
  std::unique_ptr<VersionReservation> versions = Open(/*block=*/10);
  ASSERT_NE(versions, nullptr);
  EXPECT_FALSE(versions->had_file());
  EXPECT_EQ(versions->reserved(), 0u);
  EXPECT_EQ(versions->FirstVersion(5), 5u);  // a new directory: recovery's own choice

  ASSERT_TRUE(versions->Cover(5).ok());
  EXPECT_EQ(versions->reserved(), 14u);
  for (uint64_t v = 6; v <= 14; ++v) ASSERT_TRUE(versions->Cover(v).ok());
  EXPECT_EQ(env_.atomic_writes.load(), 1);  // one write per block
  ASSERT_TRUE(versions->Cover(15).ok());
  EXPECT_EQ(versions->reserved(), 24u);
  EXPECT_EQ(env_.atomic_writes.load(), 2);

  // Read back as a restart does: the first version is above everything that may have been
  // visible, whatever recovery alone would have chosen.
  std::unique_ptr<VersionReservation> reopened = Open(10);
  ASSERT_NE(reopened, nullptr);
  EXPECT_TRUE(reopened->had_file());
  EXPECT_EQ(reopened->reserved(), 24u);
  EXPECT_EQ(reopened->FirstVersion(2), 25u);
  EXPECT_EQ(reopened->FirstVersion(40), 40u);
}

TEST_F(VersionReservationTest, ADamagedFileIsDataLossNamingIt) {
  ASSERT_TRUE(base::WriteFileAtomically(path_, EncodeVersionsFile(300)).ok());
  absl::StatusOr<std::string> contents = base::ReadFile(path_);
  ASSERT_TRUE(contents.ok());
  (*contents)[contents->size() - 3] ^= 0x01;  // inside the reserved value
  ASSERT_TRUE(base::WriteFileAtomically(path_, *contents).ok());
  absl::StatusOr<std::unique_ptr<VersionReservation>> versions =
      VersionReservation::Open(&env_, dir_);
  EXPECT_EQ(versions.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(versions.status().message(), HasSubstr(path_));

  ASSERT_TRUE(base::WriteFileAtomically(path_, contents->substr(0, 20)).ok());  // truncated
  EXPECT_EQ(VersionReservation::Open(&env_, dir_).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(VersionReservationTest, AFailedReservationFailsThePublishAndChangesNothing) {
  std::unique_ptr<VersionReservation> versions = Open(/*block=*/2);
  ASSERT_NE(versions, nullptr);
  ModelStore store;
  ASSERT_TRUE(store.Load(TinyBundle(), nullptr, versions.get()).ok());  // version 5, reserves 5..6
  EXPECT_EQ(versions->reserved(), 6u);
  AbsorbSome(store);
  absl::StatusOr<std::shared_ptr<const ModelVersion>> v6 = store.Publish();
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ((*v6)->version, 6u);  // within the block: no write
  EXPECT_EQ(env_.atomic_writes.load(), 1);

  // Version 7 needs a new block, and the disk is full.
  AbsorbSome(store);
  env_.fail_atomic_writes = true;
  absl::StatusOr<std::shared_ptr<const ModelVersion>> failed = store.Publish();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(failed.status().message(), HasSubstr("reserving model version 7"));
  EXPECT_THAT(failed.status().message(), HasSubstr(path_));
  EXPECT_EQ(store.Current(), *v6);  // not published, not even under another number
  EXPECT_EQ(versions->reserved(), 6u);
  absl::StatusOr<std::unique_ptr<VersionReservation>> on_disk =
      VersionReservation::Open(Env::Default(), dir_);
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ((*on_disk)->reserved(), 6u);

  // The disk recovers: the next Publish reserves and includes the samples the failed one had.
  env_.fail_atomic_writes = false;
  absl::StatusOr<std::shared_ptr<const ModelVersion>> v7 = store.Publish();
  ASSERT_TRUE(v7.ok()) << v7.status();
  EXPECT_EQ((*v7)->version, 7u);
  EXPECT_EQ((*v7)->samples_seen, 24u);
  EXPECT_EQ(versions->reserved(), 8u);
}

TEST_F(VersionReservationTest, LoadFailsWithoutAReservationAndServesNothing) {
  std::unique_ptr<VersionReservation> versions = Open(kVersionBlock);
  ASSERT_NE(versions, nullptr);
  ModelStore store;
  env_.fail_atomic_writes = true;
  EXPECT_EQ(store.Load(TinyBundle(), nullptr, versions.get()).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store.Current(), nullptr);
  EXPECT_EQ(store.Publish().status().code(), absl::StatusCode::kFailedPrecondition);
  env_.fail_atomic_writes = false;
  ASSERT_TRUE(store.Load(TinyBundle(), nullptr, versions.get()).ok());
  EXPECT_EQ(store.Current()->version, 5u);
  EXPECT_EQ(versions->reserved(), 5u + kVersionBlock - 1);
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
  EXPECT_FALSE(ConstantTimeEquals("token", "tok"));         // a prefix
  EXPECT_FALSE(ConstantTimeEquals("token", "tokentoken"));  // the token repeated
  EXPECT_FALSE(ConstantTimeEquals("token", ""));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

}  // namespace
}  // namespace strata::server
