#include "data/dataset.h"

#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace strata::data {
namespace {

std::string BigEndian(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void WriteGzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
  gzclose(f);
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test process: ctest runs the tests of this file in parallel processes.
    dir_ = ::testing::TempDir() + "/strata_dataset_test." + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    // Three 2x3 images with pixel values 10*i + j, labels 7, 8, 9.
    images_ = BigEndian(0x803) + BigEndian(3) + BigEndian(2) + BigEndian(3);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 6; ++j) images_.push_back(static_cast<char>(10 * i + j));
    }
    labels_ = BigEndian(0x801) + BigEndian(3) + std::string{7, 8, 9};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_, images_, labels_;
};

TEST_F(DatasetTest, ReadsPlainAndGzippedIdxWithRange) {
  WriteFile(dir_ + "/images", images_);
  WriteGzip(dir_ + "/labels.gz", labels_);
  absl::StatusOr<LabeledImages> all = ReadIdx(dir_ + "/images", dir_ + "/labels.gz");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 3u);
  EXPECT_EQ(all->height, 2);
  EXPECT_EQ(all->width, 3);
  EXPECT_EQ(all->labels, (std::vector<std::string>{"7", "8", "9"}));
  EXPECT_EQ(all->image(2)[5], 25);

  absl::StatusOr<LabeledImages> part =
      Load("idx:" + dir_ + "/images," + dir_ + "/labels.gz", {1, 1});
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(part->labels, std::vector<std::string>{"8"});
  EXPECT_EQ(part->image(0)[0], 10);
}

TEST_F(DatasetTest, RefusesTruncatedAndMismatchedFiles) {
  WriteFile(dir_ + "/images", images_.substr(0, images_.size() - 1));
  WriteFile(dir_ + "/labels", labels_);
  absl::StatusOr<LabeledImages> r = ReadIdx(dir_ + "/images", dir_ + "/labels");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("header promises 3 images"), absl::string_view::npos);

  WriteFile(dir_ + "/images", images_);
  WriteFile(dir_ + "/labels", BigEndian(0x801) + BigEndian(2) + std::string{7, 8});
  r = ReadIdx(dir_ + "/images", dir_ + "/labels");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  r = ReadIdx(dir_ + "/labels", dir_ + "/labels");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("magic"), absl::string_view::npos);

  WriteFile(dir_ + "/labels", labels_);
  r = ReadIdx(dir_ + "/images", dir_ + "/labels", {5, 0});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  r = ReadIdx(dir_ + "/missing", dir_ + "/labels");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DatasetTest, ReadsCsvWithHeaderAndStringLabels) {
  WriteFile(dir_ + "/d.csv",
            "label,p0,p1,p2,p3\n"
            "coat,0,1,2,3\r\n"
            "bag,255,254,253,252\n"
            "\n"
            "coat,9,9,9,9\n");
  absl::StatusOr<LabeledImages> all = Load(dir_ + "/d.csv");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->labels, (std::vector<std::string>{"coat", "bag", "coat"}));
  EXPECT_EQ(all->height, 2);
  EXPECT_EQ(all->image(1)[3], 252);
  absl::StatusOr<LabeledImages> tail = Load("csv:" + dir_ + "/d.csv", {2, 0});
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_EQ(tail->labels, std::vector<std::string>{"coat"});
}

TEST_F(DatasetTest, CsvErrorsNameLineAndColumn) {
  WriteFile(dir_ + "/bad.csv", "a,0,1,2,3\nb,0,1,256,3\n");
  absl::StatusOr<LabeledImages> r = ReadCsv(dir_ + "/bad.csv");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("bad.csv:2: column 4"), absl::string_view::npos)
      << r.status();
  WriteFile(dir_ + "/ragged.csv", "a,0,1,2,3\nb,0,1,2\n");
  EXPECT_EQ(ReadCsv(dir_ + "/ragged.csv").status().code(), absl::StatusCode::kDataLoss);
  WriteFile(dir_ + "/nonsquare.csv", "a,0,1,2\n");
  EXPECT_EQ(ReadCsv(dir_ + "/nonsquare.csv").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Load("parquet:x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FashionMnistTest, DebianPackageFilesLoad) {
  absl::StatusOr<LabeledImages> test = Load("fashion-mnist:test");
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->size(), 10000u);
  EXPECT_EQ(test->height, 28);
  EXPECT_EQ(test->width, 28);
  // The first test image of Fashion-MNIST is an ankle boot (class 9).
  EXPECT_EQ(test->labels[0], "Ankle boot");
  absl::StatusOr<LabeledImages> raw =
      ReadIdx(std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz",
              std::string(kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz", {0, 1});
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->labels[0], "9");
  absl::StatusOr<LabeledImages> train = Load("fashion-mnist:train", {59990, 100});
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->size(), 10u);
}

}  // namespace
}  // namespace strata::data
