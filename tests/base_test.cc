#include <unistd.h>

#include <filesystem>
#include <string>

#include "base/crc32c.h"
#include "base/file.h"
#include "gtest/gtest.h"

namespace strata::base {
namespace {

TEST(Crc32cTest, KnownVectors) {
  // Check values from RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  std::string ones(32, '\xff');
  EXPECT_EQ(Crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(Crc32cTest, ExtendEqualsWhole) {
  std::string text = "the lower tier is frozen; the upper tier learns";
  for (size_t split = 0; split <= text.size(); ++split) {
    uint32_t crc =
        Crc32cExtend(Crc32c(text.data(), split), text.data() + split, text.size() - split);
    EXPECT_EQ(crc, Crc32c(text.data(), text.size())) << "split at " << split;
  }
}

TEST(FileTest, AtomicWriteReplacesAndReadsBack) {
  const std::string dir = ::testing::TempDir() + "/strata_file_test." + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, std::string(100000, 'x')).ok());
  absl::StatusOr<std::string> read = ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, std::string(100000, 'x'));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove_all(dir);
}

TEST(FileTest, ErrorsNameThePath) {
  absl::StatusOr<std::string> read = ReadFile("/nonexistent/strata/file");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("/nonexistent/strata/file"), absl::string_view::npos);
  absl::Status write = WriteFileAtomically("/nonexistent/strata/file", "x");
  EXPECT_EQ(write.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(write.message().find("/nonexistent/strata/file.tmp"), absl::string_view::npos);
}

}  // namespace
}  // namespace strata::base
