#include "fpga/dataflow.h"

#include <algorithm>
#include <cstdint>

#include "fpga/kernels/kernels.h"

namespace strata::fpga {
namespace {

uint64_t U(int value) { return static_cast<uint64_t>(value); }
uint64_t CeilDiv(int a, int b) { return (U(a) + U(b) - 1) / U(b); }
// Bytes per output channel of bias (4) plus scales (multiplier 4 + shift 4) unless raw.
uint64_t ChannelBytes(bool raw_output) { return raw_output ? 4 : 12; }

}  // namespace

OpCounts DenseInt8CpuCounts(int batch, int in_features, int out_features, bool raw_output) {
  OpCounts counts;
  counts.int8_macs = U(batch) * U(in_features) * U(out_features);
  counts.dram_bytes = U(batch) * U(in_features) + U(out_features) * U(in_features) +
                      U(out_features) * ChannelBytes(raw_output) +
                      U(batch) * U(out_features) * (raw_output ? 4 : 1);
  return counts;
}

OpCounts DenseInt8KernelCounts(int batch, int in_features, int out_features, bool raw_output) {
  using kernels::kDenseTileB;
  using kernels::kDenseTileO;
  OpCounts counts;
  counts.int8_macs = U(batch) * U(in_features) * U(out_features);
  const uint64_t batch_tiles = CeilDiv(batch, kDenseTileB);
  const uint64_t output_tiles = CeilDiv(out_features, kDenseTileO);
  const uint64_t y_bytes = U(batch) * U(out_features) * (raw_output ? 4 : 1);
  counts.dram_bytes = U(batch) * U(in_features) * output_tiles +
                      U(out_features) * U(in_features) * batch_tiles +
                      U(out_features) * ChannelBytes(raw_output) * batch_tiles + y_bytes;
  counts.host_to_device_bytes = U(batch) * U(in_features);
  counts.device_to_host_bytes = y_bytes;
  // The card writes x into its DRAM and reads y out of it: the PCIe transfers touch DRAM too.
  counts.dram_bytes += counts.host_to_device_bytes + counts.device_to_host_bytes;
  return counts;
}

OpCounts DenseInt8KernelLoadCounts(int in_features, int out_features) {
  OpCounts counts;
  counts.host_to_device_bytes = U(out_features) * U(in_features) + U(out_features) * 12;
  counts.dram_bytes = counts.host_to_device_bytes;
  return counts;
}

OpCounts GramInt8CpuCounts(int rows, int labelled_rows, int d, int classes) {
  OpCounts counts;
  counts.int8_macs = U(rows) * U(d) * (U(d) + 1) / 2 + U(labelled_rows) * U(d);
  counts.dram_bytes =
      U(rows) * U(d) + U(rows) * 4 + U(d) * (U(d) + 1) / 2 * 16 + U(d) * U(classes) * 16;
  return counts;
}

OpCounts GramInt8KernelCounts(int rows, int labelled_rows, int d, int classes) {
  using kernels::kGramClassTile;
  using kernels::kGramRowsPerFlush;
  using kernels::kGramTile;
  OpCounts counts;
  counts.int8_macs = U(rows) * U(d) * (U(d) + 1) / 2 + U(labelled_rows) * U(d);
  const uint64_t row_tiles = CeilDiv(d, kGramTile);
  const uint64_t chunks = CeilDiv(rows, kGramRowsPerFlush);
  // Row-slice reads for the G block pairs: each pair reads both slices' valid widths per row.
  uint64_t pair_width_sum = 0;
  for (uint64_t p = 0; p < row_tiles; ++p) {
    const uint64_t width_p = std::min<uint64_t>(kGramTile, U(d) - p * kGramTile);
    for (uint64_t q = 0; q <= p; ++q) {
      pair_width_sum += width_p + std::min<uint64_t>(kGramTile, U(d) - q * kGramTile);
    }
  }
  uint64_t bytes = pair_width_sum * U(rows);
  bytes += chunks * U(d) * (U(d) + 1) / 2 * 16;  // G lower triangle read + written per chunk
  if (classes > 0) {
    const uint64_t class_tiles = CeilDiv(classes, kGramClassTile);
    bytes += row_tiles * class_tiles * U(rows) * 4;  // classes read per (row tile, class tile)
    bytes += U(labelled_rows) * U(d);                // a labelled row's slice once per row tile
    bytes += chunks * U(d) * U(classes) * 16;        // Q read + written per chunk
  }
  counts.host_to_device_bytes = U(rows) * U(d) + U(rows) * 4;
  counts.dram_bytes = bytes + counts.host_to_device_bytes;
  return counts;
}

OpCounts GramInt8KernelReadCounts(int d, int classes) {
  OpCounts counts;
  counts.device_to_host_bytes = U(d) * U(d) * 8 + U(d) * U(classes) * 8;
  counts.dram_bytes = counts.device_to_host_bytes;
  return counts;
}

}  // namespace strata::fpga
