// Snapshots: round trip, retention, and every kind of damage detected with the file named.
#include "update/snapshot.h"

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/upper_tier.h"
#include "tests/model_test_util.h"

namespace strata::update {
namespace {

using ::testing::HasSubstr;

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/strata_snapshot_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    model::LabelledFeatures data = model::MakeClusters(200, 16, 3);
    ASSERT_TRUE(upper_.AbsorbLabeled(data.features, data.labels).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Env* env_ = Env::Default();
  std::string dir_;
  model::UpperTier upper_{16, 0.5};
};

TEST_F(SnapshotTest, RoundTrip) {
  absl::StatusOr<SnapshotFile> file = WriteSnapshot(env_, dir_, 7, 42, upper_);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->path, dir_ + "/" + SnapshotFileName(42));
  EXPECT_EQ(file->bytes, std::filesystem::file_size(file->path));
  absl::StatusOr<UpperTierSnapshot> read = ReadSnapshot(env_, file->path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->model_version, 7u);
  EXPECT_EQ(read->log_position, 42u);
  EXPECT_EQ(read->upper.lambda(), upper_.lambda());
  EXPECT_EQ(read->upper.samples_seen(), upper_.samples_seen());
  EXPECT_EQ(read->upper.labels(), upper_.labels());
  EXPECT_EQ(read->upper.cross(), upper_.cross());
  const model::MatrixD expected = upper_.gram().selfadjointView<Eigen::Lower>();
  const model::MatrixD actual = read->upper.gram().selfadjointView<Eigen::Lower>();
  EXPECT_EQ(actual, expected);  // bit-exact
}

TEST_F(SnapshotTest, KeepsTheNewestTwo) {
  for (uint64_t position : {5, 9, 3, 12}) {
    ASSERT_TRUE(WriteSnapshot(env_, dir_, 1, position, upper_).ok());
  }
  absl::StatusOr<std::vector<SnapshotFile>> files = ListSnapshots(env_, dir_);
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].log_position, 12u);
  EXPECT_EQ((*files)[1].log_position, 9u);
}

TEST_F(SnapshotTest, FlippedBytesAndTruncationAreDetected) {
  absl::StatusOr<SnapshotFile> file = WriteSnapshot(env_, dir_, 1, 1, upper_);
  ASSERT_TRUE(file.ok());
  absl::StatusOr<std::string> whole = base::ReadFile(file->path);
  ASSERT_TRUE(whole.ok());
  // Every byte of the header, and a stride through the payload.
  for (size_t at = 0; at < whole->size(); at += (at < 64 ? 1 : 97)) {
    std::string damaged = *whole;
    damaged[at] ^= 0x04;
    ASSERT_TRUE(base::WriteFileAtomically(file->path, damaged).ok());
    absl::StatusOr<UpperTierSnapshot> read = ReadSnapshot(env_, file->path);
    ASSERT_FALSE(read.ok()) << "flip at " << at;
    EXPECT_TRUE(absl::IsDataLoss(read.status()) ||
                absl::IsFailedPrecondition(read.status()))  // a flipped format version
        << read.status();
    EXPECT_THAT(read.status().message(), HasSubstr(file->path));
  }
  for (size_t size : {size_t{0}, size_t{31}, whole->size() / 2, whole->size() - 1}) {
    ASSERT_TRUE(base::WriteFileAtomically(file->path, whole->substr(0, size)).ok());
    absl::StatusOr<UpperTierSnapshot> read = ReadSnapshot(env_, file->path);
    EXPECT_TRUE(absl::IsDataLoss(read.status()))
        << "truncated to " << size << ": " << read.status();
    EXPECT_THAT(read.status().message(), HasSubstr(file->path));
  }
}

}  // namespace
}  // namespace strata::update
