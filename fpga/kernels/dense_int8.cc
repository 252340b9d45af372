// strata_dense_int8: a tiled int8 dense (or conv-as-GEMM) layer. Interface in kernels.h.
//
// Dataflow per (batch tile, output tile): the int32 accumulators start at the bias; for each input
// tile the X and W tiles are burst-read into BRAM (zero-padded at the edges), then a
// kDenseTileB x kDenseTileO MAC array consumes one input column per cycle (PIPELINE II=1 over the
// column, both array dimensions unrolled); finally each accumulator is requantised per output
// channel, optionally rectified, saturated to int8 and written, edge lanes masked.
#include <cstdint>

#include "fpga/kernels/fixed.h"
#include "fpga/kernels/kernels.h"

namespace {

using strata::fpga::kernels::kDenseFlagRawOutput;
using strata::fpga::kernels::kDenseFlagRelu;
using strata::fpga::kernels::kDenseTileB;
using strata::fpga::kernels::kDenseTileI;
using strata::fpga::kernels::kDenseTileO;

// Copies rows [row0, row0 + kRows) x columns [col0, col0 + kDenseTileI) of a rows x cols int8
// matrix into `tile`, with zeros outside the matrix.
template <int kRows>
void LoadTile(const int8_t* matrix, int rows, int cols, int row0, int col0,
              int8_t tile[kRows][kDenseTileI]) {
load_rows:
  for (int r = 0; r < kRows; ++r) {
  load_cols:
    for (int c = 0; c < kDenseTileI; ++c) {
#pragma HLS PIPELINE II = 1
      const int row = row0 + r, col = col0 + c;
      tile[r][c] = (row < rows && col < cols) ? matrix[static_cast<int64_t>(row) * cols + col]
                                              : static_cast<int8_t>(0);
    }
  }
}

}  // namespace

extern "C" void strata_dense_int8(const int8_t* x, const int8_t* w, const int32_t* bias,
                                  const int32_t* multiplier, const int32_t* shift, int8_t* y,
                                  int32_t* y_raw, int batch, int in_features, int out_features,
                                  int flags) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0 max_read_burst_length = 64
#pragma HLS INTERFACE m_axi port = w offset = slave bundle = gmem1 max_read_burst_length = 64
#pragma HLS INTERFACE m_axi port = bias offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = multiplier offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = shift offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = y offset = slave bundle = gmem3
#pragma HLS INTERFACE m_axi port = y_raw offset = slave bundle = gmem3
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = in_features
#pragma HLS INTERFACE s_axilite port = out_features
#pragma HLS INTERFACE s_axilite port = flags
#pragma HLS INTERFACE s_axilite port = return

  int8_t x_tile[kDenseTileB][kDenseTileI];
#pragma HLS ARRAY_PARTITION variable = x_tile complete dim = 1
  int8_t w_tile[kDenseTileO][kDenseTileI];
#pragma HLS ARRAY_PARTITION variable = w_tile complete dim = 1
  int32_t acc[kDenseTileB][kDenseTileO];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
  int32_t multiplier_tile[kDenseTileO];
#pragma HLS ARRAY_PARTITION variable = multiplier_tile complete
  int32_t shift_tile[kDenseTileO];
#pragma HLS ARRAY_PARTITION variable = shift_tile complete

  const bool relu = (flags & kDenseFlagRelu) != 0;
  const bool raw = (flags & kDenseFlagRawOutput) != 0;

batch_tiles:
  for (int b0 = 0; b0 < batch; b0 += kDenseTileB) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 8 avg = 2
  output_tiles:
    for (int o0 = 0; o0 < out_features; o0 += kDenseTileO) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 128 avg = 16
    load_channel_parameters:
      for (int o = 0; o < kDenseTileO; ++o) {
#pragma HLS PIPELINE II = 1
        const bool valid = o0 + o < out_features;
        const int32_t bias_o = valid ? bias[o0 + o] : 0;
        multiplier_tile[o] = valid && !raw ? multiplier[o0 + o] : 0;
        shift_tile[o] = valid && !raw ? shift[o0 + o] : 0;
        for (int b = 0; b < kDenseTileB; ++b) {
#pragma HLS UNROLL
          acc[b][o] = bias_o;
        }
      }

    input_tiles:
      for (int i0 = 0; i0 < in_features; i0 += kDenseTileI) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 16 avg = 4
        LoadTile<kDenseTileB>(x, batch, in_features, b0, i0, x_tile);
        LoadTile<kDenseTileO>(w, out_features, in_features, o0, i0, w_tile);
      mac_columns:
        for (int i = 0; i < kDenseTileI; ++i) {
#pragma HLS PIPELINE II = 1
        mac_rows:
          for (int b = 0; b < kDenseTileB; ++b) {
#pragma HLS UNROLL
          mac_outputs:
            for (int o = 0; o < kDenseTileO; ++o) {
#pragma HLS UNROLL
              acc[b][o] += static_cast<int32_t>(x_tile[b][i]) * static_cast<int32_t>(w_tile[o][i]);
            }
          }
        }
      }

    store_rows:
      for (int b = 0; b < kDenseTileB; ++b) {
      store_outputs:
        for (int o = 0; o < kDenseTileO; ++o) {
#pragma HLS PIPELINE II = 1
          const int row = b0 + b, col = o0 + o;
          if (row < batch && col < out_features) {
            const int64_t at = static_cast<int64_t>(row) * out_features + col;
            if (raw) {
              const int32_t value = acc[b][o];
              y_raw[at] = relu && value < 0 ? 0 : value;
            } else {
              int32_t value = strata::fpga::kernels::RequantizeInt32(acc[b][o], multiplier_tile[o],
                                                                     shift_tile[o]);
              if (relu && value < 0) value = 0;
              y[at] = strata::fpga::kernels::SaturateToInt8(value);
            }
          }
        }
      }
    }
  }
}
