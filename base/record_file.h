// The record file: a checksummed container of named tensors, the on-disk form of model bundles
// and snapshots. Layout (docs/bundle-format.md, "Layout"):
//
//   32-byte header: magic (8 bytes, names the kind of file), format version, record count, payload
//   size, CRC-32C of the payload, CRC-32C of the header; then the records, each a name, a dtype, a
//   shape and row-major little-endian data.
//
// Readers check everything before handing out a value: a truncated file, a flipped bit, a record
// running past the end, a duplicate name, or a record of the wrong type or shape is DATA_LOSS with
// the file's path and, where it applies, the byte offset.
#ifndef STRATA_BASE_RECORD_FILE_H_
#define STRATA_BASE_RECORD_FILE_H_

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::base {

enum class DType : uint8_t { kF32 = 1, kF64 = 2, kU64 = 3, kI64 = 4, kString = 5 };

template <typename T>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  if constexpr (std::is_same_v<T, double>) return DType::kF64;
  if constexpr (std::is_same_v<T, uint64_t>) return DType::kU64;
  if constexpr (std::is_same_v<T, int64_t>) return DType::kI64;
}

// Identifies a kind of record file: its 8-byte magic, the newest format version this build reads
// and writes, and a name for messages ("model bundle", "snapshot").
struct RecordFileKind {
  char magic[8];
  uint32_t format_version;
  const char* name;
};

// Builds a record file in memory. Not thread-safe.
class RecordFileWriter {
 public:
  explicit RecordFileWriter(const RecordFileKind& kind) : kind_(kind) {}

  template <typename T>
  void Scalar(absl::string_view name, T value) {
    Header(name, DTypeOf<T>(), {});
    Append(&value, sizeof(T));
  }
  // `data` holds the product of `dims` elements, row-major.
  template <typename T>
  void Tensor(absl::string_view name, const T* data, std::initializer_list<uint64_t> dims) {
    Header(name, DTypeOf<T>(), dims);
    uint64_t count = 1;
    for (uint64_t d : dims) count *= d;
    Append(data, count * sizeof(T));
  }
  void Strings(absl::string_view name, const std::vector<std::string>& values);

  // The whole file: header + payload.
  std::string Finish() const;

 private:
  void Header(absl::string_view name, DType dtype, std::initializer_list<uint64_t> dims);
  void Append(const void* data, size_t n) { payload_.append(static_cast<const char*>(data), n); }

  RecordFileKind kind_;
  std::string payload_;
  uint32_t records_ = 0;
};

// Parses and checks a record file, then hands out typed records. Thread-compatible.
class RecordFileReader {
 public:
  // Checks `contents` (the whole file read from `path`). DATA_LOSS if it is not a whole, intact
  // record file of `kind`; FAILED_PRECONDITION if its format version is newer than kind's.
  static absl::StatusOr<RecordFileReader> Parse(const RecordFileKind& kind, std::string path,
                                                std::string contents);

  uint32_t format_version() const { return format_version_; }
  bool Has(absl::string_view name) const { return records_.contains(name); }

  template <typename T>
  absl::StatusOr<T> Scalar(absl::string_view name) const {
    absl::StatusOr<const Record*> record = Find(name, DTypeOf<T>(), 0);
    if (!record.ok()) return record.status();
    T value;
    std::memcpy(&value, Data(**record), sizeof(T));
    return value;
  }

  // Copies the tensor `name`, which must have exactly the shape `dims`, into `out`: a vector or
  // matrix type with resize() and a contiguous row-major data() (an Eigen row-major type).
  template <typename T, typename Dense>
  absl::Status Tensor(absl::string_view name, std::initializer_list<uint64_t> dims,
                      Dense& out) const {
    absl::StatusOr<const Record*> record = FindShaped(name, DTypeOf<T>(), dims);
    if (!record.ok()) return record.status();
    if constexpr (Dense::IsVectorAtCompileTime) {
      out.resize(static_cast<long>(*dims.begin()));
    } else {
      out.resize(static_cast<long>(*dims.begin()), static_cast<long>(*(dims.begin() + 1)));
    }
    // An empty tensor (an upper tier with no classes yet) has a null data(): memcpy must not see it.
    if ((*record)->size != 0) std::memcpy(out.data(), Data(**record), (*record)->size);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> Strings(absl::string_view name) const;

  // DATA_LOSS "<kind> <path>: <what>".
  absl::Status Loss(absl::string_view what) const;

 private:
  struct Record {
    DType dtype;
    std::vector<uint64_t> dims;
    size_t offset;  // of the data in contents_ (an offset, not a pointer: the reader may move)
    size_t size;
  };
  const char* Data(const Record& record) const { return contents_.data() + record.offset; }

  RecordFileReader(const RecordFileKind& kind, std::string path, std::string contents)
      : kind_(kind), path_(std::move(path)), contents_(std::move(contents)) {}
  absl::Status ParseAll();
  absl::Status ParseRecord(size_t& offset);
  absl::StatusOr<const Record*> Find(absl::string_view name, DType dtype, size_t rank) const;
  absl::StatusOr<const Record*> FindShaped(absl::string_view name, DType dtype,
                                           std::initializer_list<uint64_t> dims) const;

  RecordFileKind kind_;
  std::string path_;
  std::string contents_;
  uint32_t format_version_ = 0;
  absl::flat_hash_map<std::string, Record> records_;
};

}  // namespace strata::base

#endif  // STRATA_BASE_RECORD_FILE_H_
