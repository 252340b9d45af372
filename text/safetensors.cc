#include "text/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file.h"
#include "nlohmann/json.hpp"

namespace strata::text {
namespace {

using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and is read in place");

// The safetensors library's own limit on the header (100 MB): a larger length is a corrupt file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// One header entry checked against the data section's size; `error` is the message prefix.
absl::StatusOr<TensorInfo> ParseEntry(const json& entry, uint64_t data_size,
                                      const std::string& error) {
  if (!entry.is_object()) return absl::InvalidArgumentError(error + "entry is not an object");
  TensorInfo info;
  const auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string() || DtypeSize(dtype->get<std::string>()) == 0) {
    return absl::InvalidArgumentError(
        error + "dtype " + (dtype == entry.end() ? std::string("missing") : dtype->dump()) +
        " is not a safetensors dtype");
  }
  info.dtype = dtype->get<std::string>();
  const auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) {
    return absl::InvalidArgumentError(error + "shape is not an array");
  }
  uint64_t elements = 1;
  for (const json& dim : *shape) {
    if (!dim.is_number_unsigned()) {
      return absl::InvalidArgumentError(error + "shape " + shape->dump() +
                                        " has a dimension that is not a non-negative integer");
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d != 0 && elements > data_size / d) {
      return absl::InvalidArgumentError(error + "shape " + shape->dump() + " exceeds the file");
    }
    elements *= d;
    info.shape.push_back(static_cast<int64_t>(d));
  }
  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(error + "data_offsets is not [begin, end]");
  }
  info.begin = (*offsets)[0].get<uint64_t>();
  info.end = (*offsets)[1].get<uint64_t>();
  if (info.begin > info.end || info.end > data_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(error, "data_offsets [", info.begin, ", ", info.end,
                     "] out of range: the data section has ", data_size, " bytes"));
  }
  const uint64_t expected = elements * static_cast<uint64_t>(DtypeSize(info.dtype));
  if (info.end - info.begin != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(error, info.end - info.begin, " bytes of data for ", info.dtype, " ",
                     ShapeString(info.shape), ", which needs ", expected));
  }
  return info;
}

}  // namespace

int DtypeSize(absl::string_view dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  absl::StatusOr<std::string> bytes = base::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return FromBytes(*std::move(bytes), path);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::FromBytes(std::string bytes,
                                                           const std::string& name) {
  SafetensorsFile file;
  file.name_ = name;
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": ", bytes.size(), " bytes, too short for a safetensors header length"));
  }
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  if (header_length > kMaxHeaderBytes || header_length > bytes.size() - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": header length ", header_length, " exceeds the file's ",
                     bytes.size() - 8, " bytes after it (truncated or not safetensors)"));
  }
  file.data_start_ = 8 + header_length;
  file.bytes_ = std::move(bytes);
  if (absl::Status s = file.ParseHeader(
          absl::string_view(file.bytes_).substr(8, static_cast<size_t>(header_length)));
      !s.ok()) {
    return s;
  }
  return file;
}

absl::Status SafetensorsFile::ParseHeader(absl::string_view header) {
  const json root = json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": the header is not a JSON object"));
  }
  const uint64_t data_size = bytes_.size() - data_start_;
  std::vector<std::pair<uint64_t, std::string>> by_offset;
  for (const auto& [tensor, entry] : root.items()) {
    if (tensor == "__metadata__") continue;
    absl::StatusOr<TensorInfo> info =
        ParseEntry(entry, data_size, absl::StrCat(name_, ": tensor ", tensor, ": "));
    if (!info.ok()) return info.status();
    if (info->end > info->begin) by_offset.emplace_back(info->begin, tensor);
    tensors_.emplace(tensor, *std::move(info));
  }
  std::sort(by_offset.begin(), by_offset.end());
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& previous = tensors_.at(by_offset[i - 1].second);
    if (by_offset[i].first < previous.end) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": tensor ", by_offset[i].second,
                                                     " overlaps tensor ", by_offset[i - 1].second));
    }
  }
  return absl::OkStatus();
}

const TensorInfo* SafetensorsFile::Find(absl::string_view tensor) const {
  const auto it = tensors_.find(tensor);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat32(
    const std::string& tensor, const std::vector<int64_t>& shape) const {
  const TensorInfo* info = Find(tensor);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(name_, ": no tensor ", tensor));
  }
  if (info->dtype != "F32") {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": tensor ", tensor, " is ", info->dtype, ", expected F32"));
  }
  if (info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": tensor ", tensor, " has shape ",
                                                   ShapeString(info->shape), ", expected ",
                                                   ShapeString(shape)));
  }
  std::vector<float> values((info->end - info->begin) / sizeof(float));
  // memcpy: the data section need not be 4-byte aligned. An empty tensor has a null data().
  if (!values.empty()) {
    std::memcpy(values.data(), bytes_.data() + data_start_ + info->begin, info->end - info->begin);
  }
  return values;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, info] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace strata::text
