// A reader of the safetensors format (Hugging Face): an 8-byte little-endian header length N, N
// bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// optional "__metadata__": {string: string}}, then the raw little-endian tensor data, offsets
// relative to its start.
//
// Open checks everything before any tensor is read: the header length against the file, the JSON,
// every tensor's dtype (a known one), shape (non-negative integers), offsets (begin <= end <= the
// data's size) and size (end - begin = product(shape) x the dtype's size), and that no two tensors
// overlap. A bad file is one INVALID_ARGUMENT naming the file and, where one is at fault, the
// tensor.
#ifndef STRATA_TEXT_SAFETENSORS_H_
#define STRATA_TEXT_SAFETENSORS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::text {

struct TensorInfo {
  std::string dtype;  // "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t begin = 0;          // byte offsets in the data section
  uint64_t end = 0;
};

// Immutable after Open; const methods are thread-safe.
class SafetensorsFile {
 public:
  // Reads and checks the whole file (the data stays in memory). NOT_FOUND if it does not exist;
  // INVALID_ARGUMENT as described at the top of this file.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  // The same checks on bytes already in memory; `name` is used in error messages.
  static absl::StatusOr<SafetensorsFile> FromBytes(std::string bytes, const std::string& name);

  // The tensor's header entry, or null.
  const TensorInfo* Find(absl::string_view tensor) const;
  // The values of a float32 tensor of exactly `shape`. NOT_FOUND naming the tensor if it is absent;
  // INVALID_ARGUMENT naming it if its dtype is not F32 or its shape differs.
  absl::StatusOr<std::vector<float>> ReadFloat32(const std::string& tensor,
                                                 const std::vector<int64_t>& shape) const;
  // The tensor names, sorted.
  std::vector<std::string> Names() const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader(absl::string_view header);

  std::string name_;
  std::string bytes_;
  uint64_t data_start_ = 0;
  absl::flat_hash_map<std::string, TensorInfo> tensors_;
};

// Bytes per element of a safetensors dtype, 0 for an unknown one.
int DtypeSize(absl::string_view dtype);

}  // namespace strata::text

#endif  // STRATA_TEXT_SAFETENSORS_H_
