// The safetensors reader on real small files this test writes: a valid file reads back its values;
// each kind of damage (truncated, bad header JSON, offsets out of range, wrong dtype, wrong shape,
// size mismatch, overlap) is one INVALID_ARGUMENT naming the tensor, never a crash.
#include "text/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::text {
namespace {

using ::testing::HasSubstr;

// A safetensors file: the 8-byte length, `header`, then `data`.
std::string Safetensors(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &n, 8);
  return bytes + header + data;
}

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

class SafetensorsTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& bytes) {
    const std::string path = (std::filesystem::temp_directory_path() /
                              absl::StrCat("strata_safetensors_test_", getpid(), "_", files_++))
                                 .string();
    std::ofstream(path, std::ios::binary) << bytes;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const auto& p : paths_) std::filesystem::remove(p);
  }
  absl::Status OpenStatus(const std::string& bytes) {
    return SafetensorsFile::Open(Write(bytes)).status();
  }

  int files_ = 0;
  std::vector<std::string> paths_;
};

const char kValidHeader[] = R"({"__metadata__":{"format":"pt"},)"
                            R"("a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                            R"("a.bias":{"dtype":"F32","shape":[3],"data_offsets":[24,36]},)"
                            R"("ids":{"dtype":"I64","shape":[2],"data_offsets":[36,52]}})";

std::string ValidData() {
  std::string data = Floats({1, 2, 3, 4, 5, 6}) + Floats({-1, 0.5f, 7});
  const int64_t ids[2] = {5, 9};
  data.append(reinterpret_cast<const char*>(ids), sizeof(ids));
  return data;
}

TEST_F(SafetensorsTest, ReadsAValidFile) {
  absl::StatusOr<SafetensorsFile> file =
      SafetensorsFile::Open(Write(Safetensors(kValidHeader, ValidData())));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT(file->Names(), ::testing::ElementsAre("a.bias", "a.weight", "ids"));
  absl::StatusOr<std::vector<float>> weight = file->ReadFloat32("a.weight", {2, 3});
  ASSERT_TRUE(weight.ok()) << weight.status();
  EXPECT_EQ(*weight, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  absl::StatusOr<std::vector<float>> bias = file->ReadFloat32("a.bias", {3});
  ASSERT_TRUE(bias.ok());
  EXPECT_EQ(*bias, (std::vector<float>{-1, 0.5f, 7}));
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent/model.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, TruncatedFiles) {
  const std::string valid = Safetensors(kValidHeader, ValidData());
  // Shorter than the length field.
  absl::Status s = OpenStatus(valid.substr(0, 5));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("too short"));
  // Cut inside the header.
  s = OpenStatus(valid.substr(0, 40));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("header length"));
  // Cut inside the data: the last tensor's offsets run past the end.
  s = OpenStatus(valid.substr(0, valid.size() - 4));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor ids"));
  EXPECT_THAT(s.message(), HasSubstr("out of range"));
}

TEST_F(SafetensorsTest, BadHeaderJson) {
  for (const std::string& header : {std::string("{not json"), std::string("[1, 2]"),
                                    std::string("\"a string\""), std::string("")}) {
    const absl::Status s = OpenStatus(Safetensors(header, ValidData()));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << header;
    EXPECT_THAT(s.message(), HasSubstr("not a JSON object")) << header;
  }
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  const absl::Status s = OpenStatus(Safetensors(
      R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[40,56]}})", Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor w: data_offsets [40, 56] out of range"));
  const absl::Status reversed = OpenStatus(Safetensors(
      R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", Floats({1, 2, 3, 4})));
  EXPECT_THAT(reversed.message(), HasSubstr("tensor w: data_offsets [8, 4] out of range"));
  const absl::Status negative = OpenStatus(
      Safetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", Floats({1})));
  EXPECT_THAT(negative.message(), HasSubstr("tensor w: data_offsets is not [begin, end]"));
}

TEST_F(SafetensorsTest, SizeDisagreesWithShapeAndDtype) {
  const absl::Status s = OpenStatus(Safetensors(
      R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor w: 16 bytes of data for F32 [3], which needs 12"));
}

TEST_F(SafetensorsTest, UnknownDtype) {
  const absl::Status s = OpenStatus(Safetensors(
      R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor w: dtype \"F128\" is not a safetensors dtype"));
}

TEST_F(SafetensorsTest, WrongDtypeOrShapeWhenRead) {
  absl::StatusOr<SafetensorsFile> file =
      SafetensorsFile::Open(Write(Safetensors(kValidHeader, ValidData())));
  ASSERT_TRUE(file.ok());
  absl::Status s = file->ReadFloat32("ids", {2}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor ids is I64, expected F32"));
  s = file->ReadFloat32("a.weight", {3, 2}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor a.weight has shape [2, 3], expected [3, 2]"));
  s = file->ReadFloat32("b.weight", {1}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("no tensor b.weight"));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const absl::Status s =
      OpenStatus(Safetensors(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                             Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor b overlaps tensor a"));
}

TEST_F(SafetensorsTest, HugeShapeDoesNotOverflow) {
  const absl::Status s = OpenStatus(Safetensors(
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})",
      Floats({1, 2, 3, 4})));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor w: shape"));
}

}  // namespace
}  // namespace strata::text
