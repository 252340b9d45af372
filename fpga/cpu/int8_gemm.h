// The cpu backend's int8 GEMM: C[r][o] = sum_k A[r][k] * B[o][k], int32, with B packed once.
//
// With AVX-512 VNNI (vpdpbusd: unsigned x signed bytes, 4 per 32-bit lane) A must be unsigned:
// callers pass A' = A + 128 (a xor 0x80 per byte) and subtract 128 * sum_k B[o][k], which
// PackedInt8Matrix precomputes (row_sums). Without VNNI the same interface runs portable loops.
// Thread-safety: PackedInt8Matrix is immutable after construction; MultiplyPacked is reentrant.
#ifndef STRATA_FPGA_CPU_INT8_GEMM_H_
#define STRATA_FPGA_CPU_INT8_GEMM_H_

#include <cstdint>
#include <vector>

namespace strata::fpga::cpu {

// True if this build uses the AVX-512 VNNI path (compiled with -mavx512vnni, e.g. -march=native on
// a CPU that has it).
bool HaveVnni();

// B (rows x cols int8, row-major) rearranged for the VNNI kernel: blocks of 16 rows, 4 columns per
// 32-bit lane, rows padded to 16 and columns to 4 with zeros.
class PackedInt8Matrix {
 public:
  PackedInt8Matrix() = default;
  // `stride` is the distance between consecutive rows of `matrix` (>= cols).
  PackedInt8Matrix(const int8_t* matrix, int rows, int cols, int64_t stride);

  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int padded_rows() const { return padded_rows_; }  // multiple of 16
  int groups() const { return groups_; }            // ceil(cols / 4)
  const int8_t* data() const { return data_.data(); }
  // sum_k B[o][k] for each row o (padded_rows entries, 0 in the padding).
  const std::vector<int32_t>& row_sums() const { return row_sums_; }

 private:
  int rows_ = 0, cols_ = 0, padded_rows_ = 0, groups_ = 0;
  std::vector<int8_t> data_;
  std::vector<int32_t> row_sums_;
};

// A' rows (rows x 4 * groups bytes, row-major, A' = A xor 0x80, padding bytes 0x80) into
// `biased`, which is resized (its capacity is reused from call to call).
void BiasedActivations(const int8_t* a, int rows, int cols, int64_t stride, int groups,
                       std::vector<uint8_t>& biased);

// What MultiplyPacked does with each int32 sum before storing it: C = max?(sum + bias[o], 0) for
// o < columns; columns past `columns` are not written. The default stores the raw sums of every
// padded column.
struct GemmEpilogue {
  const int32_t* bias = nullptr;  // b.padded_rows() values, or null for none
  bool relu = false;
  int columns = -1;  // -1: every padded column
};

// C[r][o] = sum_k A'[r][k] * B[o][k] for r < rows, o < b.padded_rows() (the +128 bias NOT yet
// removed, unless the epilogue's bias does it), c with leading dimension ldc >= the columns
// written (b.padded_rows(), or epilogue.columns). If lower_only, only the 16-wide
// column blocks that intersect o <= row_offset + r are guaranteed written (for symmetric
// products computed in panels of rows starting at row_offset).
// Parallelised with OpenMP over `threads` (0: default) when the work is large.
void MultiplyPacked(const uint8_t* a_biased, int rows, const PackedInt8Matrix& b, int32_t* c,
                    int64_t ldc, bool lower_only, int threads, int row_offset,
                    const GemmEpilogue& epilogue = {});

}  // namespace strata::fpga::cpu

#endif  // STRATA_FPGA_CPU_INT8_GEMM_H_
