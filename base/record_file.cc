#include "base/record_file.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/crc32c.h"

namespace strata::base {
namespace {

constexpr size_t kHeaderSize = 32;
constexpr size_t kMaxNameLength = 256;
constexpr size_t kMaxRank = 2;

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF64:
      return "f64";
    case DType::kU64:
      return "u64";
    case DType::kI64:
      return "i64";
    case DType::kString:
      return "string";
  }
  return "?";
}

template <typename T>
void Put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the format is little-endian, as is x86-64
  out.append(bytes, sizeof(T));
}

template <typename T>
T Get(absl::string_view bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

std::string ShapeString(const std::vector<uint64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) absl::StrAppend(&s, i ? "x" : "", dims[i]);
  return s + "]";
}

}  // namespace

void RecordFileWriter::Header(absl::string_view name, DType dtype,
                              std::initializer_list<uint64_t> dims) {
  Put<uint16_t>(payload_, static_cast<uint16_t>(name.size()));
  payload_.append(name.data(), name.size());
  Put<uint8_t>(payload_, static_cast<uint8_t>(dtype));
  Put<uint8_t>(payload_, static_cast<uint8_t>(dims.size()));
  for (uint64_t d : dims) Put<uint64_t>(payload_, d);
  ++records_;
}

void RecordFileWriter::Strings(absl::string_view name, const std::vector<std::string>& values) {
  Header(name, DType::kString, {values.size()});
  for (const std::string& value : values) {
    Put<uint32_t>(payload_, static_cast<uint32_t>(value.size()));
    payload_.append(value);
  }
}

std::string RecordFileWriter::Finish() const {
  std::string file(kind_.magic, sizeof(kind_.magic));
  Put<uint32_t>(file, kind_.format_version);
  Put<uint32_t>(file, records_);
  Put<uint64_t>(file, payload_.size());
  Put<uint32_t>(file, Crc32c(payload_.data(), payload_.size()));
  Put<uint32_t>(file, Crc32c(file.data(), file.size()));
  file.append(payload_);
  return file;
}

absl::StatusOr<RecordFileReader> RecordFileReader::Parse(const RecordFileKind& kind,
                                                         std::string path, std::string contents) {
  RecordFileReader reader(kind, std::move(path), std::move(contents));
  if (absl::Status s = reader.ParseAll(); !s.ok()) return s;
  return reader;
}

absl::Status RecordFileReader::Loss(absl::string_view what) const {
  return absl::DataLossError(absl::StrCat(kind_.name, " ", path_, ": ", what));
}

absl::Status RecordFileReader::ParseAll() {
  const absl::string_view file = contents_;
  if (file.size() < kHeaderSize) {
    return Loss(absl::StrCat("truncated: ", file.size(), " bytes, shorter than the ", kHeaderSize,
                             "-byte header"));
  }
  if (std::memcmp(file.data(), kind_.magic, sizeof(kind_.magic)) != 0) {
    return Loss(absl::StrCat("not a ", kind_.name, " (bad magic at offset 0)"));
  }
  if (Crc32c(file.data(), 28) != Get<uint32_t>(file, 28)) {
    return Loss("header checksum mismatch at offset 28: the header is corrupt");
  }
  format_version_ = Get<uint32_t>(file, 8);
  if (format_version_ > kind_.format_version) {
    return absl::FailedPreconditionError(
        absl::StrCat(kind_.name, " ", path_, ": format version ", format_version_,
                     " is newer than this build reads (", kind_.format_version, ")"));
  }
  const uint32_t record_count = Get<uint32_t>(file, 12);
  const uint64_t payload_size = Get<uint64_t>(file, 16);
  if (file.size() - kHeaderSize != payload_size) {
    const bool short_file = file.size() - kHeaderSize < payload_size;
    return Loss(absl::StrCat(short_file ? "truncated" : "too long", ": the header promises ",
                             kHeaderSize + payload_size, " bytes, the file has ", file.size(),
                             " (offset ",
                             std::min<uint64_t>(file.size(), kHeaderSize + payload_size), ")"));
  }
  const uint32_t computed = Crc32c(file.data() + kHeaderSize, payload_size);
  if (computed != Get<uint32_t>(file, 24)) {
    return Loss(absl::StrFormat(
        "payload checksum mismatch (stored 0x%08x, computed 0x%08x over offsets %d..%d): "
        "the file is corrupt",
        Get<uint32_t>(file, 24), computed, kHeaderSize, file.size()));
  }
  size_t offset = kHeaderSize;
  for (uint32_t r = 0; r < record_count; ++r) {
    if (absl::Status s = ParseRecord(offset); !s.ok()) return s;
  }
  if (offset != file.size()) {
    return Loss(
        absl::StrCat(file.size() - offset, " bytes after the last record, at offset ", offset));
  }
  return absl::OkStatus();
}

absl::Status RecordFileReader::ParseRecord(size_t& offset) {
  const absl::string_view file = contents_;
  const size_t start = offset;
  auto need = [&](size_t bytes, absl::string_view what) -> absl::Status {
    if (file.size() - offset < bytes) {
      return Loss(absl::StrCat("record at offset ", start, " runs past the end of the file (", what,
                               " at offset ", offset, " needs ", bytes, " bytes)"));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = need(2, "name length"); !s.ok()) return s;
  const uint16_t name_length = Get<uint16_t>(file, offset);
  offset += 2;
  if (name_length == 0 || name_length > kMaxNameLength) {
    return Loss(absl::StrCat("record at offset ", start, ": name length ", name_length,
                             " is not in 1..", kMaxNameLength));
  }
  if (absl::Status s = need(name_length + 2, "name, dtype and rank"); !s.ok()) return s;
  std::string name(file.substr(offset, name_length));
  offset += name_length;
  const uint8_t dtype = Get<uint8_t>(file, offset);
  const uint8_t rank = Get<uint8_t>(file, offset + 1);
  offset += 2;
  if (dtype < 1 || dtype > 5) {
    return Loss(absl::StrCat("record ", name, " at offset ", start, ": unknown dtype ", dtype));
  }
  if (rank > kMaxRank) {
    return Loss(absl::StrCat("record ", name, " at offset ", start, ": rank ", rank, " is over ",
                             kMaxRank));
  }
  Record record;
  record.dtype = static_cast<DType>(dtype);
  if (absl::Status s = need(8u * rank, "dims"); !s.ok()) return s;
  for (int d = 0; d < rank; ++d) {
    record.dims.push_back(Get<uint64_t>(file, offset));
    offset += 8;
  }
  record.offset = offset;
  if (record.dtype == DType::kString) {
    if (rank != 1) return Loss(absl::StrCat("record ", name, ": strings must have rank 1"));
    for (uint64_t i = 0; i < record.dims[0]; ++i) {
      if (absl::Status s = need(4, "string length"); !s.ok()) return s;
      const uint32_t length = Get<uint32_t>(file, offset);
      offset += 4;
      if (absl::Status s = need(length, "string bytes"); !s.ok()) return s;
      offset += length;
    }
  } else {
    const size_t element_size = record.dtype == DType::kF32 ? 4 : 8;
    uint64_t elements = 1;
    for (uint64_t d : record.dims) {
      if (d != 0 && elements > (file.size() / element_size) / d) {
        return Loss(absl::StrCat("record ", name, " at offset ", start,
                                 ": its shape is larger than the file"));
      }
      elements *= d;
    }
    if (absl::Status s = need(elements * element_size, "data"); !s.ok()) return s;
    offset += elements * element_size;
  }
  record.size = offset - record.offset;
  if (!records_.try_emplace(name, std::move(record)).second) {
    return Loss(absl::StrCat("record ", name, " at offset ", start, " appears twice"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const RecordFileReader::Record*> RecordFileReader::Find(absl::string_view name,
                                                                       DType dtype,
                                                                       size_t rank) const {
  auto it = records_.find(name);
  if (it == records_.end()) return Loss(absl::StrCat("required record ", name, " is missing"));
  const Record& record = it->second;
  if (record.dtype != dtype || record.dims.size() != rank) {
    return Loss(absl::StrCat("record ", name, " is ", DTypeName(record.dtype), " of rank ",
                             record.dims.size(), ", expected ", DTypeName(dtype), " of rank ",
                             rank));
  }
  return &record;
}

absl::StatusOr<const RecordFileReader::Record*> RecordFileReader::FindShaped(
    absl::string_view name, DType dtype, std::initializer_list<uint64_t> dims) const {
  absl::StatusOr<const Record*> record = Find(name, dtype, dims.size());
  if (!record.ok()) return record.status();
  if (!std::equal(dims.begin(), dims.end(), (*record)->dims.begin())) {
    return Loss(absl::StrCat("record ", name, " has shape ", ShapeString((*record)->dims),
                             ", expected ", ShapeString(std::vector<uint64_t>(dims))));
  }
  return record;
}

absl::StatusOr<std::vector<std::string>> RecordFileReader::Strings(absl::string_view name) const {
  absl::StatusOr<const Record*> record = Find(name, DType::kString, 1);
  if (!record.ok()) return record.status();
  std::vector<std::string> values;
  const absl::string_view data(Data(**record), (*record)->size);
  size_t offset = 0;
  for (uint64_t i = 0; i < (*record)->dims[0]; ++i) {
    const uint32_t length = Get<uint32_t>(data, offset);
    values.emplace_back(data.substr(offset + 4, length));
    offset += 4 + length;
  }
  return values;
}

}  // namespace strata::base
