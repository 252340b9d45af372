// OpCounts models: what each backend's dataflow does for a given shape. Pure functions of the
// shapes (and, for the kernels, of the tile sizes in kernels/kernels.h), used by the backends to
// report their work and by docs/fpga.md to explain it. Thread-safe.
#ifndef STRATA_FPGA_DATAFLOW_H_
#define STRATA_FPGA_DATAFLOW_H_

#include <cstdint>

#include "fpga/backend.h"

namespace strata::fpga {

// MACs: batch * in * out for every backend (edge-tile zero padding is not counted).
//
// CPU (cache-blocked GEMM): each operand crosses DRAM once: x, weights, bias (4 B/channel),
// scales (8 B/channel unless raw), y (1 or 4 B/element). No host<->device bytes.
OpCounts DenseInt8CpuCounts(int batch, int in_features, int out_features, bool raw_output);

// The strata_dense_int8 kernel (xrt, and emu which models it): x is re-read once per output tile,
// the weights once per batch tile, bias and scales once per batch tile, y written once; x goes to
// the card and y comes back over PCIe.
OpCounts DenseInt8KernelCounts(int batch, int in_features, int out_features, bool raw_output);

// Uploading a layer's parameters to the card: weights, bias and scales over PCIe and into DRAM.
OpCounts DenseInt8KernelLoadCounts(int in_features, int out_features);

// MACs: rows * d * (d + 1) / 2 for the lower triangle of G plus labelled_rows * d for Q's
// additions (counted as MACs: an upper bound on their energy). labelled_rows: rows whose class is
// not -1.
//
// CPU: h and classes read once, the lower triangle of G and Q read and written once (8 B each).
OpCounts GramInt8CpuCounts(int rows, int labelled_rows, int d, int classes);

// The strata_gram_int8 kernel: for each lower-triangle block pair, the two row slices of every
// row are read; per chunk of kGramRowsPerFlush rows the block's lower-triangle part of G is read
// and written; for each row tile and class tile, the classes are read, and each labelled row's
// slice is read once per row tile; h and classes go to the card over PCIe.
OpCounts GramInt8KernelCounts(int rows, int labelled_rows, int d, int classes);

// Reading G (d x d) and Q (d x classes) back from the card.
OpCounts GramInt8KernelReadCounts(int d, int classes);

}  // namespace strata::fpga

#endif  // STRATA_FPGA_DATAFLOW_H_
