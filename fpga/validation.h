// Argument checks shared by every backend, so that all of them reject the same calls with the
// same messages before touching any output. Thread-safe (pure functions).
#ifndef STRATA_FPGA_VALIDATION_H_
#define STRATA_FPGA_VALIDATION_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fpga/backend.h"

namespace strata::fpga {

// OK if x holds batch >= 1 rows of spec.in_features and the output the spec selects (y_int32 for
// raw_output, else y_int8) holds batch * spec.out_features; else INVALID_ARGUMENT.
absl::Status CheckDenseForward(const DenseInt8Spec& spec, std::span<const int8_t> x, int batch,
                               std::span<int8_t> y_int8, std::span<int32_t> y_int32);

// The number of labelled rows (class != -1) if h holds classes.size() rows of `dimension` and
// every class is -1 or in [0, num_classes); else INVALID_ARGUMENT.
absl::StatusOr<int> CheckGramAccumulate(int dimension, int num_classes, std::span<const int8_t> h,
                                        std::span<const int32_t> classes);

// OK if dimension >= 1 and num_classes >= 0 and G fits in memory addressing; else INVALID_ARGUMENT.
absl::Status CheckGramShape(int dimension, int num_classes);

// OK if `num_classes` >= `current` (GrowClasses cannot remove classes); else INVALID_ARGUMENT.
absl::Status CheckGrowClasses(int current, int num_classes);

// The class columns to allocate for Q so that `num_classes` classes fit, given `capacity` allocated
// now: `capacity` itself if they fit, else at least twice it (and at least num_classes), rounded up
// to a whole kernels::kGramClassTile. Growing geometrically is what makes adding classes one at a
// time cost amortised O(dimension) each: a widening copies d x capacity sums, and the capacities
// copied over the life of an accumulator sum to less than twice the last one.
int GrowClassCapacity(int capacity, int num_classes);

// Q (`dimension` rows of `old_stride` int64 sums, row-major) re-laid with `new_stride` sums per
// row: the first min(old_stride, new_stride) columns of every row are copied, any added columns are
// zero. Widening is exact, since earlier rows had target 0 for a class that did not exist yet;
// narrowing drops the allocated but unused columns (Read). O(dimension * (old + new stride)): on
// the class path call it only when the capacity grows (GrowClassCapacity).
std::vector<int64_t> RestrideCross(const std::vector<int64_t>& cross, int dimension, int old_stride,
                                   int new_stride);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_VALIDATION_H_
