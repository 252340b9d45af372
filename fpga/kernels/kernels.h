// The Strata FPGA kernels: their top-level C interfaces, tile sizes and limits.
//
// The same sources (dense_int8.cc, gram_int8.cc) are synthesised by Vitis HLS into the xclbin and
// compiled by g++ for the "emu" backend and the C-simulation tests; the HLS pragmas in them are
// ignored by g++. docs/fpga.md describes the kernels, their memory layout and arithmetic.
//
// All matrices are dense and row-major. Pointers are device (m_axi) addresses on the card and
// host pointers in C simulation. The kernels do not validate their arguments: the host code
// (fpga/backend.h's implementations) checks every precondition listed here before a call.
#ifndef STRATA_FPGA_KERNELS_KERNELS_H_
#define STRATA_FPGA_KERNELS_KERNELS_H_

#include <cstdint>

namespace strata::fpga::kernels {

// ---- strata_dense_int8 -------------------------------------------------------------------------
// Tile sizes: the on-chip buffers are x[kDenseTileB][kDenseTileI], w[kDenseTileO][kDenseTileI] and
// acc[kDenseTileB][kDenseTileO]; every cycle the kDenseTileB x kDenseTileO MAC array consumes one
// input column. Any shape works: edge tiles are zero-padded on load and masked on store.
inline constexpr int kDenseTileB = 8;    // batch rows per tile
inline constexpr int kDenseTileO = 32;   // output channels per tile
inline constexpr int kDenseTileI = 256;  // input features per tile

// Accumulator range: with |x|, |w| <= 128, in_features <= kDenseMaxInFeatures and
// |bias| <= kDenseMaxAbsBias, |acc| <= 65535 * 16384 + 2^30 < 2^31, so int32 never overflows.
inline constexpr int kDenseMaxInFeatures = 65535;
inline constexpr int32_t kDenseMaxAbsBias = int32_t{1} << 30;

// `flags` bits.
inline constexpr int kDenseFlagRelu = 1;       // max(., 0) after requantisation (or on raw acc)
inline constexpr int kDenseFlagRawOutput = 2;  // write int32 acc (+bias, ReLU) to y_raw, not y

// ---- strata_gram_int8 --------------------------------------------------------------------------
// G is tiled in kGramTile x kGramTile blocks with int32 on-chip accumulators; Q in
// kGramTile x kGramClassTile blocks. Rows are streamed in chunks of at most kGramRowsPerFlush;
// after each chunk the int32 tile is added into the int64 G/Q in device memory. |h| <= 128 so one
// product is at most 2^14 and a chunk sums to at most 131071 * 2^14 < 2^31: no overflow for any
// number of rows, and int64 G holds more than 5 * 10^14 rows' worth.
inline constexpr int kGramTile = 64;
inline constexpr int kGramClassTile = 16;
inline constexpr int kGramRowsPerFlush = 131071;

}  // namespace strata::fpga::kernels

extern "C" {

// Y[b][o] = requant(sum_i X[b][i] * W[o][i] + bias[o]) for b < batch, o < out_features.
//   x: batch x in_features int8; w: out_features x in_features int8; bias: out_features int32;
//   multiplier, shift: out_features, the per-channel FixedPointMultiplier (kernels/fixed.h);
//   y: batch x out_features int8 (written unless kDenseFlagRawOutput);
//   y_raw: batch x out_features int32 (written only with kDenseFlagRawOutput; then `multiplier`
//   and `shift` are not read).
// Preconditions: batch >= 1, 1 <= in_features <= kDenseMaxInFeatures, out_features >= 1,
// |bias| <= kDenseMaxAbsBias, shift in [-31, 30].
void strata_dense_int8(const int8_t* x, const int8_t* w, const int32_t* bias,
                       const int32_t* multiplier, const int32_t* shift, int8_t* y, int32_t* y_raw,
                       int batch, int in_features, int out_features, int flags);

// G[i][j] += sum_n H[n][i] * H[n][j] for j <= i (the strict upper triangle is neither read nor
// written), and Q[i][c] += sum_{n : y[n] == c} H[n][i].
//   h: rows x d int8; y: rows int32 class indices (rows with y outside [0, classes) add to G only);
//   g: d x d int64, read and written; q: d x classes int64, read and written (not touched when
//   classes == 0).
// Preconditions: rows >= 0, d >= 1, classes >= 0.
void strata_gram_int8(const int8_t* h, const int32_t* y, int64_t* g, int64_t* q, int rows, int d,
                      int classes);

}  // extern "C"

#endif  // STRATA_FPGA_KERNELS_KERNELS_H_
