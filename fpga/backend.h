// The accelerator interface the rest of Strata sees: the lower tier's int8 dense layers and the
// upper tier's int8 Gram accumulation, on a "cpu", "emu" or "xrt" backend.
//
// Shaped after ggml's backend interface: a small set of required operations (every backend has
// both), a description per backend (BackendInfo), and a registry of the compiled-in backends with
// their factories, availability probes and energy tables (fpga/registry.h; CreateBackend below).
//
//   cpu  the reference: plain C++ (AVX-512 VNNI when the CPU has it). Integer arithmetic is exact,
//        so it equals the others bit for bit.
//   emu  the FPGA kernels' own source (fpga/kernels/) compiled for the CPU and called directly: a
//        C simulation, bit-exact with the card, and slow.
//   xrt  an AMD/Xilinx Alveo card through XRT running the kernels from an xclbin.
//   auto xrt when a card and an xclbin are present and the card accepts it, else cpu; logs its
//        choice and why (the rule: fpga::ChooseAutoBackend, fpga/registry.h).
//
// Parameters are uploaded once (a DenseInt8Layer holds its weights, on the card for xrt; a
// GramInt8Accumulator holds G and Q, on the card for xrt); each call then moves only activations.
// Every call returns OpCounts, what it did, for the energy meter (fpga/energy.h).
//
// Numerics (docs/fpga.md has the details):
//   Dense: acc[b][o] = bias[o] + sum_i x[b][i] * w[o][i] in int32;
//          y = saturate_int8(relu?(RequantizeInt32(acc, multiplier[o], shift[o]))) (fixed.h), or
//          the raw int32 acc (after ReLU if asked) in raw-output mode. Quantisation is symmetric
//          (zero points are 0).
//   Gram:  G[i][j] += sum_n h[n][i] h[n][j] (j <= i) and Q[i][c] += sum_{n: y_n = c} h[n][i], int64.
#ifndef STRATA_FPGA_BACKEND_H_
#define STRATA_FPGA_BACKEND_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fpga/kernels/fixed.h"

namespace strata::fpga {

using kernels::FixedPointMultiplier;

// What an operation did: arithmetic by precision and bytes moved. Counts are derived from the
// shapes and the executing backend's dataflow (documented per backend in docs/fpga.md), never
// measured, so they are deterministic.
struct OpCounts {
  uint64_t int8_macs = 0;  // int8 x int8 multiply-accumulates into int32
  uint64_t fp32_macs = 0;
  uint64_t fp64_macs = 0;
  // Bytes read plus written in the memory the computation runs against: host DRAM for cpu,
  // the card's HBM/DDR for xrt and emu (emu models the card's kernel traffic, tile re-reads
  // included).
  uint64_t dram_bytes = 0;
  uint64_t host_to_device_bytes = 0;  // over PCIe (xrt, and the card emu models)
  uint64_t device_to_host_bytes = 0;

  OpCounts& operator+=(const OpCounts& other);
  friend bool operator==(const OpCounts&, const OpCounts&) = default;
};
OpCounts operator+(OpCounts a, const OpCounts& b);
std::string ToString(const OpCounts& counts);

// The parameters of one int8 dense layer: out_features x in_features weights, row-major
// (w[o * in_features + i]); conv layers pass their im2col form (one output channel per row).
struct DenseInt8Spec {
  int in_features = 0;                       // [1, 65535]
  int out_features = 0;                      // >= 1
  std::vector<int8_t> weights;               // out_features * in_features
  std::vector<int32_t> bias;                 // out_features, |bias| <= 2^30 (empty: zeros)
  std::vector<FixedPointMultiplier> scales;  // out_features (ignored with raw_output)
  bool relu = false;
  // Output the int32 accumulators (after bias and ReLU) instead of requantised int8, e.g. for a
  // final layer whose scores are dequantised on the host.
  bool raw_output = false;

  // OK if the shapes and ranges above hold; otherwise INVALID_ARGUMENT naming the field.
  absl::Status Validate() const;
};

// A dense layer resident on a backend. Thread-safe: concurrent Forward calls are allowed (xrt
// serialises them on its compute unit).
class DenseInt8Layer {
 public:
  virtual ~DenseInt8Layer() = default;

  // y = layer(x) for `batch` rows. x: batch * in_features, row-major. Exactly one output is used:
  // y_int8 (batch * out_features) unless the spec has raw_output, then y_int32. INVALID_ARGUMENT
  // if a span has the wrong size (nothing written); UNAVAILABLE/INTERNAL from the device (xrt)
  // with XRT's message, the outputs then unspecified.
  virtual absl::StatusOr<OpCounts> Forward(std::span<const int8_t> x, int batch,
                                           std::span<int8_t> y_int8,
                                           std::span<int32_t> y_int32) const = 0;

  virtual const DenseInt8Spec& spec() const = 0;
};

// Exact sufficient statistics of a least-squares readout over int8 features, resident on a
// backend: G = sum_n h_n h_n^T (lower triangle) and Q[:, c] = sum_{n: y_n = c} h_n, both int64.
// Integer sums are exact: any split of the rows over Accumulate calls gives bit-identical G and Q.
// Not thread-safe: callers serialise all calls (like model::UpperTier).
class GramInt8Accumulator {
 public:
  virtual ~GramInt8Accumulator() = default;

  // Adds rows: h is rows * dimension() int8 (row-major), classes has one class index per row in
  // [0, num_classes()), or -1 for an unlabelled row (added to G only). INVALID_ARGUMENT (and
  // nothing added) if the sizes disagree, a class is out of range or rows > 2^31 - 1.
  virtual absl::StatusOr<OpCounts> Accumulate(std::span<const int8_t> h,
                                              std::span<const int32_t> classes) = 0;

  // Copies the statistics out: gram is dimension() x dimension() row-major with the lower
  // triangle (j <= i) filled and the strict upper triangle 0; cross is dimension() x
  // num_classes() row-major. Resizes the vectors.
  virtual absl::StatusOr<OpCounts> Read(std::vector<int64_t>* gram,
                                        std::vector<int64_t>* cross) const = 0;

  // The sums where they live, when that is host memory (cpu), so that a caller can fold them into
  // its own statistics without Read()'s copy and then Clear() them: gram is dimension() x
  // dimension() row-major, lower triangle valid; cross is class-major (class k's dimension() sums
  // at cross + k * dimension()). Both null for a device (emu, xrt): use Read() there.
  struct HostSums {
    const int64_t* gram = nullptr;
    const int64_t* cross = nullptr;
  };
  virtual HostSums host_sums() const { return {}; }

  // Zeroes the sums (G's lower triangle and Q) and rows() in place, for a caller that folded them
  // from host_sums(); returns the work (the zeros written). UNIMPLEMENTED where host_sums() is
  // null (a device accumulator is replaced by a fresh one instead).
  virtual absl::StatusOr<OpCounts> Clear() {
    return absl::UnimplementedError("Clear: the sums are not in host memory");
  }

  // Adds zero columns to Q so classes [num_classes(), num_classes) become valid. Exact: earlier
  // rows had target 0 for a new class. INVALID_ARGUMENT if num_classes < num_classes().
  // Cost: O(1) while num_classes <= class_capacity(); beyond it Q is re-allocated with at least
  // twice the capacity (fpga::GrowClassCapacity) and the sums copied, so adding classes one at a
  // time costs amortised O(dimension()) per class, not O(dimension() x classes). UNAVAILABLE from
  // the device (xrt) when that re-allocation fails; then nothing changed.
  virtual absl::Status GrowClasses(int num_classes) = 0;

  virtual int dimension() const = 0;
  virtual int num_classes() const = 0;
  // Class columns of Q allocated (>= num_classes()); the columns past num_classes() hold zeros.
  // Equal to the num_classes the accumulator was created with until GrowClasses exceeds it. On
  // emu and xrt the kernel's Q row stride is the capacity, so the kernel runs (and OpCounts
  // count) its class tiles over the allocated columns: at most twice the classes' tiles.
  virtual int class_capacity() const = 0;
  virtual uint64_t rows() const = 0;  // rows accumulated so far
};

// What a backend is: its registered name and, for logs, what exactly runs.
struct BackendInfo {
  std::string name;         // "cpu", "emu", "xrt": its name in the registry (fpga/registry.h)
  std::string description;  // e.g. "AVX-512 VNNI int8 GEMM on 2 threads", the card's name
  // True if calls compute in host memory (cpu, emu), so many small calls cost no more than one
  // large one; false for a card (xrt), where every call pays transfers and a kernel launch.
  // Callers use it to size their calls (model::QuantizedLowerTier runs its convolutions image by
  // image on the host, so each image's activations stay in cache).
  bool computes_on_host = true;
};

// The interface. Creating layers and accumulators is thread-safe; see each object for its own.
class Backend {
 public:
  virtual ~Backend() = default;

  virtual const BackendInfo& info() const = 0;

  // Uploads a dense layer's parameters. INVALID_ARGUMENT if spec.Validate() fails;
  // RESOURCE_EXHAUSTED/INTERNAL from the device.
  virtual absl::StatusOr<std::unique_ptr<DenseInt8Layer>> LoadDenseInt8(DenseInt8Spec spec) = 0;

  // A zeroed accumulator over `dimension` >= 1 features and `num_classes` >= 0 classes.
  virtual absl::StatusOr<std::unique_ptr<GramInt8Accumulator>> CreateGramInt8(int dimension,
                                                                              int num_classes) = 0;
};

// How to create a backend. Fields not used by the chosen backend are ignored.
struct BackendOptions {
  // cpu: worker threads for large calls (0: OpenMP's default, all cores).
  int cpu_threads = 0;
  // cpu: use the portable (auto-vectorised) loops even when AVX-512 VNNI is available. For tests
  // and comparisons; the results are identical.
  bool cpu_portable = false;
  // cpu: dense layers on oneDNN's int8 kernels (fpga/cpu/onednn_matmul.h) where it has exact
  // (VNNI) ones, else the hand-written VNNI kernel. false: always the hand-written one, for tests
  // and comparisons; the results are identical.
  bool cpu_onednn = true;
  // xrt: the card's index in XRT's enumeration.
  unsigned int xrt_device_index = 0;
  // xrt and auto: path of the xclbin holding strata_dense_int8 and strata_gram_int8. Empty: none.
  std::string xclbin_path;
  // xrt: batch rows per kernel run; runs are double-buffered so the next chunk's transfer
  // overlaps the current chunk's compute.
  int xrt_chunk_rows = 256;
};

// The names CreateBackend accepts: the registered backends ("cpu", "emu", "xrt"), then "auto".
std::vector<std::string> BackendNames();

// Creates a backend by name (see the top of this file; fpga/registry.h holds the table). Errors:
//   INVALID_ARGUMENT: an unknown name (the message lists the known ones).
//   xrt, no card: FAILED_PRECONDITION "xrt backend: no FPGA card found
//     (xrt::system::enumerate_devices() == 0); pick another device with --device=emu or
//     --device=cpu" (or "... (<XRT's error>); ..." when XRT cannot even enumerate).
//   xrt, xclbin_path names a missing file: NOT_FOUND naming it; an invalid xclbin or one
//     without both kernels: INVALID_ARGUMENT with XRT's reason.
// "auto" never fails for lack of a card: it logs why it fell back to cpu (ChooseAutoBackend).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(absl::string_view name,
                                                       const BackendOptions& options = {});

}  // namespace strata::fpga

#endif  // STRATA_FPGA_BACKEND_H_
