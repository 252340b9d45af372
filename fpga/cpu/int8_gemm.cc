#include "fpga/cpu/int8_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512F__)
#include <immintrin.h>
#define STRATA_CPU_VNNI 1
#else
#define STRATA_CPU_VNNI 0
#endif

namespace strata::fpga::cpu {

bool HaveVnni() { return STRATA_CPU_VNNI != 0; }

PackedInt8Matrix::PackedInt8Matrix(const int8_t* matrix, int rows, int cols, int64_t stride)
    : rows_(rows),
      cols_(cols),
      padded_rows_((rows + 15) / 16 * 16),
      groups_((cols + 3) / 4),
      data_(static_cast<size_t>(padded_rows_) * groups_ * 4, 0),
      row_sums_(padded_rows_, 0) {
  for (int o = 0; o < rows; ++o) {
    const int8_t* row = matrix + o * stride;
    const int block = o / 16, lane = o % 16;
    int32_t sum = 0;
    for (int k = 0; k < cols; ++k) {
      const int g = k / 4, t = k % 4;
      data_[((static_cast<size_t>(block) * groups_ + g) * 16 + lane) * 4 + t] = row[k];
      sum += row[k];
    }
    row_sums_[o] = sum;
  }
}

void BiasedActivations(const int8_t* a, int rows, int cols, int64_t stride, int groups,
                       std::vector<uint8_t>& biased) {
  const int width = groups * 4;
  biased.resize(static_cast<size_t>(rows) * width);
  for (int r = 0; r < rows; ++r) {
    const int8_t* src = a + r * stride;
    uint8_t* dst = biased.data() + static_cast<size_t>(r) * width;
#if STRATA_CPU_VNNI
    // 64 bytes at a time, masked at the end of the row: short rows (a conv's 25 taps) would
    // otherwise run a scalar loop and a memset call per row. Bytes past `cols` load as 0 and
    // leave as 0x80, the padding.
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < width; k += 64) {
      const int valid = std::clamp(cols - k, 0, 64), span = std::min(64, width - k);
      const __mmask64 load = valid == 64 ? ~__mmask64{0} : (__mmask64{1} << valid) - 1;
      const __mmask64 store = span == 64 ? ~__mmask64{0} : (__mmask64{1} << span) - 1;
      const __m512i x = _mm512_maskz_loadu_epi8(load, src + k);
      _mm512_mask_storeu_epi8(dst + k, store, _mm512_xor_si512(x, flip));
    }
#else
    for (int k = 0; k < cols; ++k) dst[k] = static_cast<uint8_t>(src[k]) ^ 0x80u;
    for (int k = cols; k < width; ++k) dst[k] = 0x80u;
#endif
  }
}

namespace {

constexpr int kRowBlock = 4;     // rows of A per micro-kernel
constexpr int kVectorBlock = 4;  // 16-wide column blocks per micro-kernel
// Rows per micro-kernel when B has at most 2 column blocks (a conv's 24 filters): 8 rows x 2
// vectors keep as many accumulators busy as 4 x 4, with fewer loads per vpdpbusd.
constexpr int kWideRowBlock = 8;

#if STRATA_CPU_VNNI
// The epilogue of one 16-wide column block, decided once per micro-kernel call: the bias to add
// and the mask of the valid columns.
struct BlockEpilogue {
  __m512i bias;
  __mmask16 mask;
};

inline BlockEpilogue ForBlock(const GemmEpilogue& epilogue, int column) {
  const int valid = epilogue.columns < 0 ? 16 : std::clamp(epilogue.columns - column, 0, 16);
  return {epilogue.bias != nullptr ? _mm512_loadu_si512(epilogue.bias + column)
                                   : _mm512_setzero_si512(),
          valid == 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << valid) - 1)};
}

// kRows x (16 * kVectors) block of C at (r0, block0 * 16), accumulators in registers.
template <int kRows, int kVectors>
void MicroKernel(const uint8_t* a, int64_t lda, const int8_t* b, int groups, int block0, int32_t* c,
                 int64_t ldc, const GemmEpilogue& epilogue) {
  __m512i acc[kRows][kVectors];
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_si512();
  }
  const int8_t* b_block[kVectors];
  for (int v = 0; v < kVectors; ++v)
    b_block[v] = b + static_cast<int64_t>(block0 + v) * groups * 64;
  for (int g = 0; g < groups; ++g) {
    __m512i w[kVectors];
    for (int v = 0; v < kVectors; ++v) w[v] = _mm512_loadu_si512(b_block[v] + g * 64);
    for (int r = 0; r < kRows; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + r * lda + g * 4, 4);
      const __m512i x = _mm512_set1_epi32(quad);
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], x, w[v]);
    }
  }
  // Everything the stores need in registers first: stores to c could alias `epilogue`'s fields,
  // which the compiler would otherwise reload after every store.
  BlockEpilogue blocks[kVectors];
  for (int v = 0; v < kVectors; ++v) blocks[v] = ForBlock(epilogue, (block0 + v) * 16);
  const bool relu = epilogue.relu;
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVectors; ++v) {
      __m512i sums = _mm512_add_epi32(acc[r][v], blocks[v].bias);
      if (relu) sums = _mm512_max_epi32(sums, _mm512_setzero_si512());
      _mm512_mask_storeu_epi32(c + r * ldc + (block0 + v) * 16, blocks[v].mask, sums);
    }
  }
}

template <int kRows>
void MicroKernelRows(int vectors, const uint8_t* a, int64_t lda, const int8_t* b, int groups,
                     int block0, int32_t* c, int64_t ldc, const GemmEpilogue& e) {
  switch (vectors) {
    case 1:
      return MicroKernel<kRows, 1>(a, lda, b, groups, block0, c, ldc, e);
    case 2:
      return MicroKernel<kRows, 2>(a, lda, b, groups, block0, c, ldc, e);
    case 3:
      return MicroKernel<kRows, 3>(a, lda, b, groups, block0, c, ldc, e);
    default:
      return MicroKernel<kRows, 4>(a, lda, b, groups, block0, c, ldc, e);
  }
}

// 1 or 2 vectors (B with at most 32 columns).
template <int kRows>
void MicroKernelNarrow(int vectors, const uint8_t* a, int64_t lda, const int8_t* b, int groups,
                       int block0, int32_t* c, int64_t ldc, const GemmEpilogue& e) {
  if (vectors == 1) return MicroKernel<kRows, 1>(a, lda, b, groups, block0, c, ldc, e);
  return MicroKernel<kRows, 2>(a, lda, b, groups, block0, c, ldc, e);
}

void Block(int rows, int vectors, const uint8_t* a, int64_t lda, const int8_t* b, int groups,
           int block0, int32_t* c, int64_t ldc, const GemmEpilogue& e) {
  switch (rows) {
    case 1:
      return MicroKernelRows<1>(vectors, a, lda, b, groups, block0, c, ldc, e);
    case 2:
      return MicroKernelRows<2>(vectors, a, lda, b, groups, block0, c, ldc, e);
    case 3:
      return MicroKernelRows<3>(vectors, a, lda, b, groups, block0, c, ldc, e);
    case 4:
      return MicroKernelRows<4>(vectors, a, lda, b, groups, block0, c, ldc, e);
    // More than 4 rows only with at most 2 vectors (kWideRowBlock).
    case 5:
      return MicroKernelNarrow<5>(vectors, a, lda, b, groups, block0, c, ldc, e);
    case 6:
      return MicroKernelNarrow<6>(vectors, a, lda, b, groups, block0, c, ldc, e);
    case 7:
      return MicroKernelNarrow<7>(vectors, a, lda, b, groups, block0, c, ldc, e);
    default:
      return MicroKernelNarrow<8>(vectors, a, lda, b, groups, block0, c, ldc, e);
  }
}
#else
void Block(int rows, int vectors, const uint8_t* a, int64_t lda, const int8_t* b, int groups,
           int block0, int32_t* c, int64_t ldc, const GemmEpilogue& e) {
  for (int r = 0; r < rows; ++r) {
    for (int v = 0; v < vectors; ++v) {
      const int8_t* block = b + static_cast<int64_t>(block0 + v) * groups * 64;
      for (int lane = 0; lane < 16; ++lane) {
        const int column = (block0 + v) * 16 + lane;
        if (e.columns >= 0 && column >= e.columns) continue;
        int32_t sum = 0;
        for (int g = 0; g < groups; ++g) {
          for (int t = 0; t < 4; ++t) {
            sum += static_cast<int32_t>(a[r * lda + g * 4 + t]) * block[(g * 16 + lane) * 4 + t];
          }
        }
        if (e.bias != nullptr) sum += e.bias[column];
        if (e.relu && sum < 0) sum = 0;
        c[r * ldc + column] = sum;
      }
    }
  }
}
#endif

}  // namespace

void MultiplyPacked(const uint8_t* a_biased, int rows, const PackedInt8Matrix& b, int32_t* c,
                    int64_t ldc, bool lower_only, int threads, int row_offset,
                    const GemmEpilogue& epilogue) {
  const int groups = b.groups();
  const int64_t lda = static_cast<int64_t>(groups) * 4;
  const int blocks = b.padded_rows() / 16;
  const int column_groups = (blocks + kVectorBlock - 1) / kVectorBlock;
#if STRATA_CPU_VNNI
  const int row_block = blocks <= 2 ? kWideRowBlock : kRowBlock;
#else
  const int row_block = kRowBlock;
#endif
  const int row_blocks = (rows + row_block - 1) / row_block;
  const double work = static_cast<double>(rows) * b.padded_rows() * groups * 4;
  const bool parallel = work > 4e6;
  const int num_threads = threads > 0 ? threads : 0;
  // Tasks of one column group (its packed B, groups * 256 bytes, stays in cache) by a chunk of
  // row blocks, dynamically scheduled so that a thread slowed by other processes does not hold
  // the others up.
  constexpr int kRowBlocksPerTask = 16;
  const int row_tasks = (row_blocks + kRowBlocksPerTask - 1) / kRowBlocksPerTask;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (parallel) \
    num_threads(num_threads > 0 ? num_threads : omp_get_max_threads())
  for (int cg = 0; cg < column_groups; ++cg) {
    for (int rt = 0; rt < row_tasks; ++rt) {
      const int block0 = cg * kVectorBlock;
      const int vectors = std::min(kVectorBlock, blocks - block0);
      const int rb_end = std::min(row_blocks, (rt + 1) * kRowBlocksPerTask);
      for (int rb = rt * kRowBlocksPerTask; rb < rb_end; ++rb) {
        const int r0 = rb * row_block;
        const int block_rows = std::min(row_block, rows - r0);
        if (lower_only && block0 * 16 > row_offset + r0 + block_rows - 1) continue;
        Block(block_rows, vectors, a_biased + r0 * lda, lda, b.data(), groups, block0, c + r0 * ldc,
              ldc, epilogue);
      }
    }
  }
}

}  // namespace strata::fpga::cpu
