// strata_gram_int8: exact int8 Gram and class-sum accumulation. Interface in kernels.h.
//
// For every lower-triangle block (ti, tj) of G, the rows of H are streamed once: each row's two
// kGramTile-wide slices sit in registers and a kGramTile-wide MAC row updates one accumulator row
// per cycle (PIPELINE II=1 over the accumulator rows, the columns unrolled). After at most
// kGramRowsPerFlush rows the int32 block is added into the int64 G in device memory, so no
// accumulator can overflow whatever the number of rows. Q is accumulated the same way in
// kGramTile x kGramClassTile blocks. Every update is an exact integer sum, so splitting the rows
// over any number of calls gives bit-identical G and Q.
#include <cstdint>

#include "fpga/kernels/kernels.h"

namespace {

using strata::fpga::kernels::kGramClassTile;
using strata::fpga::kernels::kGramRowsPerFlush;
using strata::fpga::kernels::kGramTile;

// h[n][col0 .. col0 + kGramTile) into `slice`, zeros past column d.
void LoadRowSlice(const int8_t* h, int d, int n, int col0, int8_t slice[kGramTile]) {
load_slice:
  for (int a = 0; a < kGramTile; ++a) {
#pragma HLS PIPELINE II = 1
    const int col = col0 + a;
    slice[a] = col < d ? h[static_cast<int64_t>(n) * d + col] : static_cast<int8_t>(0);
  }
}

void AccumulateGramBlock(const int8_t* h, int64_t* g, int rows, int d, int ti0, int tj0) {
  int32_t acc[kGramTile][kGramTile];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 2
  int8_t row_i[kGramTile];
#pragma HLS ARRAY_PARTITION variable = row_i complete
  int8_t row_j[kGramTile];
#pragma HLS ARRAY_PARTITION variable = row_j complete

row_chunks:
  for (int r0 = 0; r0 < rows; r0 += kGramRowsPerFlush) {
    const int r_end = rows - r0 > kGramRowsPerFlush ? r0 + kGramRowsPerFlush : rows;
  clear:
    for (int a = 0; a < kGramTile; ++a) {
#pragma HLS PIPELINE II = 1
      for (int b = 0; b < kGramTile; ++b) {
#pragma HLS UNROLL
        acc[a][b] = 0;
      }
    }
  stream_rows:
    for (int n = r0; n < r_end; ++n) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 4096 avg = 256
      LoadRowSlice(h, d, n, ti0, row_i);
      LoadRowSlice(h, d, n, tj0, row_j);
    mac_rows:
      for (int a = 0; a < kGramTile; ++a) {
#pragma HLS PIPELINE II = 1
      mac_cols:
        for (int b = 0; b < kGramTile; ++b) {
#pragma HLS UNROLL
          acc[a][b] += static_cast<int32_t>(row_i[a]) * static_cast<int32_t>(row_j[b]);
        }
      }
    }
  flush_rows:
    for (int a = 0; a < kGramTile; ++a) {
    flush_cols:
      for (int b = 0; b < kGramTile; ++b) {
#pragma HLS PIPELINE II = 1
        const int i = ti0 + a, j = tj0 + b;
        if (i < d && j <= i) g[static_cast<int64_t>(i) * d + j] += acc[a][b];
      }
    }
  }
}

void AccumulateClassBlock(const int8_t* h, const int32_t* y, int64_t* q, int rows, int d,
                          int classes, int ti0, int c0) {
  int32_t acc[kGramTile][kGramClassTile];
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 1
  int8_t row_i[kGramTile];
#pragma HLS ARRAY_PARTITION variable = row_i complete

row_chunks:
  for (int r0 = 0; r0 < rows; r0 += kGramRowsPerFlush) {
    const int r_end = rows - r0 > kGramRowsPerFlush ? r0 + kGramRowsPerFlush : rows;
  clear:
    for (int c = 0; c < kGramClassTile; ++c) {
#pragma HLS PIPELINE II = 1
      for (int a = 0; a < kGramTile; ++a) {
#pragma HLS UNROLL
        acc[a][c] = 0;
      }
    }
  stream_rows:
    for (int n = r0; n < r_end; ++n) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 4096 avg = 256
      const int32_t c = y[n] - c0;
      if (c >= 0 && c < kGramClassTile && c0 + c < classes) {
        LoadRowSlice(h, d, n, ti0, row_i);
      add_row:
        for (int a = 0; a < kGramTile; ++a) {
#pragma HLS UNROLL
          acc[a][c] += row_i[a];
        }
      }
    }
  flush_rows:
    for (int a = 0; a < kGramTile; ++a) {
    flush_classes:
      for (int c = 0; c < kGramClassTile; ++c) {
#pragma HLS PIPELINE II = 1
        const int i = ti0 + a, cls = c0 + c;
        if (i < d && cls < classes) q[static_cast<int64_t>(i) * classes + cls] += acc[a][c];
      }
    }
  }
}

}  // namespace

extern "C" void strata_gram_int8(const int8_t* h, const int32_t* y, int64_t* g, int64_t* q,
                                 int rows, int d, int classes) {
#pragma HLS INTERFACE m_axi port = h offset = slave bundle = gmem0 max_read_burst_length = 64
#pragma HLS INTERFACE m_axi port = y offset = slave bundle = gmem1
#pragma HLS INTERFACE m_axi port = g offset = slave bundle = gmem2
#pragma HLS INTERFACE m_axi port = q offset = slave bundle = gmem3
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = d
#pragma HLS INTERFACE s_axilite port = classes
#pragma HLS INTERFACE s_axilite port = return

gram_block_rows:
  for (int ti0 = 0; ti0 < d; ti0 += kGramTile) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 128 avg = 32
  gram_block_cols:
    for (int tj0 = 0; tj0 <= ti0; tj0 += kGramTile) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 128 avg = 16
      AccumulateGramBlock(h, g, rows, d, ti0, tj0);
    }
  class_blocks:
    for (int c0 = 0; c0 < classes; c0 += kGramClassTile) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = 4 avg = 1
      AccumulateClassBlock(h, y, q, rows, d, classes, ti0, c0);
    }
  }
}
