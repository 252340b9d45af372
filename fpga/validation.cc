#include "fpga/validation.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "fpga/kernels/kernels.h"

namespace strata::fpga {

absl::Status CheckDenseForward(const DenseInt8Spec& spec, std::span<const int8_t> x, int batch,
                               std::span<int8_t> y_int8, std::span<int32_t> y_int32) {
  if (batch < 1) return absl::InvalidArgumentError(absl::StrCat("dense: batch ", batch, " < 1"));
  const uint64_t rows = static_cast<uint64_t>(batch);
  if (x.size() != rows * spec.in_features) {
    return absl::InvalidArgumentError(absl::StrCat("dense: x has ", x.size(), " values, expected ",
                                                   batch, " x ", spec.in_features));
  }
  const uint64_t outputs = rows * spec.out_features;
  if (spec.raw_output && y_int32.size() != outputs) {
    return absl::InvalidArgumentError(absl::StrCat("dense: y_int32 has ", y_int32.size(),
                                                   " values, expected ", batch, " x ",
                                                   spec.out_features, " (raw output layer)"));
  }
  if (!spec.raw_output && y_int8.size() != outputs) {
    return absl::InvalidArgumentError(absl::StrCat("dense: y_int8 has ", y_int8.size(),
                                                   " values, expected ", batch, " x ",
                                                   spec.out_features));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> CheckGramAccumulate(int dimension, int num_classes, std::span<const int8_t> h,
                                        std::span<const int32_t> classes) {
  if (classes.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("gram: ", classes.size(), " rows > 2^31 - 1"));
  }
  if (h.size() != classes.size() * static_cast<uint64_t>(dimension)) {
    return absl::InvalidArgumentError(absl::StrCat("gram: h has ", h.size(), " values, expected ",
                                                   classes.size(), " rows x ", dimension));
  }
  int labelled = 0;
  for (size_t n = 0; n < classes.size(); ++n) {
    if (classes[n] == -1) continue;
    if (classes[n] < 0 || classes[n] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("gram: row ", n, " has class ", classes[n],
                                                     ", outside [0, ", num_classes,
                                                     ") and not -1 (unlabelled)"));
    }
    ++labelled;
  }
  return labelled;
}

absl::Status CheckGramShape(int dimension, int num_classes) {
  if (dimension < 1) {
    return absl::InvalidArgumentError(absl::StrCat("gram: dimension ", dimension, " < 1"));
  }
  if (num_classes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("gram: num_classes ", num_classes, " < 0"));
  }
  return absl::OkStatus();
}

absl::Status CheckGrowClasses(int current, int num_classes) {
  if (num_classes < current) {
    return absl::InvalidArgumentError("gram: GrowClasses cannot remove classes");
  }
  return absl::OkStatus();
}

int GrowClassCapacity(int capacity, int num_classes) {
  if (num_classes <= capacity) return capacity;
  const int64_t tile = kernels::kGramClassTile;
  const int64_t wanted = std::max<int64_t>(num_classes, 2 * int64_t{capacity});
  return static_cast<int>(std::min<int64_t>((wanted + tile - 1) / tile * tile, INT32_MAX));
}

std::vector<int64_t> RestrideCross(const std::vector<int64_t>& cross, int dimension, int old_stride,
                                   int new_stride) {
  std::vector<int64_t> out(static_cast<size_t>(dimension) * new_stride, 0);
  const int columns = std::min(old_stride, new_stride);
  for (int i = 0; i < dimension; ++i) {
    std::copy_n(cross.begin() + static_cast<size_t>(i) * old_stride, columns,
                out.begin() + static_cast<size_t>(i) * new_stride);
  }
  return out;
}

}  // namespace strata::fpga
