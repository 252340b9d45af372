#include "fpga/cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fpga/cpu/int8_gemm.h"
#include "fpga/cpu/onednn_matmul.h"
#include "fpga/dataflow.h"
#include "fpga/kernels/fixed.h"
#include "fpga/validation.h"

namespace strata::fpga {
namespace {

using kernels::RequantizeInt32;
using kernels::SaturateToInt8;

// Rows of H per int32 block of the Gram product: |(h + 128) * h| <= 255 * 128 = 32640 and
// 32768 * 32640 < 2^31, so the biased int32 sums cannot overflow.
constexpr int kGramRowsPerBlock = 32768;
// Rows of G per panel (bounds the int32 scratch to kGramPanel x padded d).
constexpr int kGramPanel = 256;

// Writes one output value of a dense layer from its int32 accumulator (bias included).
inline void StoreOutput(const DenseInt8Spec& spec, int64_t at, int o, int32_t acc,
                        std::span<int8_t> y_int8, std::span<int32_t> y_int32) {
  if (spec.raw_output) {
    y_int32[at] = spec.relu && acc < 0 ? 0 : acc;
    return;
  }
  int32_t value = RequantizeInt32(acc, spec.scales[o].multiplier, spec.scales[o].shift);
  if (spec.relu && value < 0) value = 0;
  y_int8[at] = SaturateToInt8(value);
}

class CpuDenseInt8Layer final : public DenseInt8Layer {
 public:
  CpuDenseInt8Layer(DenseInt8Spec spec, bool portable, bool onednn, int threads)
      : spec_(std::move(spec)), portable_(portable), threads_(threads) {
    if (spec_.bias.empty()) spec_.bias.assign(spec_.out_features, 0);
    if (!portable_) {
      packed_ = cpu::PackedInt8Matrix(spec_.weights.data(), spec_.out_features, spec_.in_features,
                                      spec_.in_features);
      // bias - 128 * sum_i w[o][i] removes the +128 the VNNI path adds to every activation.
      corrected_bias_.assign(packed_.padded_rows(), 0);  // padded for the 16-wide epilogue
      for (int o = 0; o < spec_.out_features; ++o) {
        corrected_bias_[o] = spec_.bias[o] - 128 * packed_.row_sums()[o];
      }
      if (onednn) {
        onednn_ = cpu::OnednnInt8Matmul::Create(spec_.weights.data(), spec_.out_features,
                                                spec_.in_features, 4 * packed_.groups());
      }
    }
  }

  absl::StatusOr<OpCounts> Forward(std::span<const int8_t> x, int batch, std::span<int8_t> y_int8,
                                   std::span<int32_t> y_int32) const override {
    if (absl::Status s = CheckDenseForward(spec_, x, batch, y_int8, y_int32); !s.ok()) return s;
    const int in = spec_.in_features, out = spec_.out_features;
    if (portable_) {
      for (int b = 0; b < batch; ++b) {
        const int8_t* xb = x.data() + static_cast<int64_t>(b) * in;
        for (int o = 0; o < out; ++o) {
          const int8_t* wo = spec_.weights.data() + static_cast<int64_t>(o) * in;
          int32_t acc = 0;
          for (int i = 0; i < in; ++i) acc += static_cast<int32_t>(xb[i]) * wo[i];
          StoreOutput(spec_, static_cast<int64_t>(b) * out + o, o, acc + spec_.bias[o], y_int8,
                      y_int32);
        }
      }
    } else {
      ForwardVnni(x, batch, y_int8, y_int32);
    }
    return DenseInt8CpuCounts(batch, in, out, spec_.raw_output);
  }

  const DenseInt8Spec& spec() const override { return spec_; }

 private:
  // The VNNI GEMM. Raw output is written by the GEMM's epilogue (bias, ReLU, the valid columns)
  // straight into y_int32; int8 output goes through an int32 scratch and the requantisation.
  void ForwardVnni(std::span<const int8_t> x, int batch, std::span<int8_t> y_int8,
                   std::span<int32_t> y_int32) const {
    const int in = spec_.in_features, out = spec_.out_features;
    // Scratch per thread, kept between calls: Forward runs concurrently on the batch workers,
    // and allocating (and zeroing) it per call cost more than small layers' arithmetic.
    thread_local std::vector<uint8_t> biased;
    std::vector<int32_t>& sums = Sums();
    cpu::BiasedActivations(x.data(), batch, in, in, packed_.groups(), biased);
    int32_t* const raw = spec_.raw_output ? y_int32.data() : nullptr;
    if (onednn_ != nullptr) {
      if (!spec_.raw_output) sums.resize(static_cast<size_t>(batch) * out);
      int32_t* const c = spec_.raw_output ? raw : sums.data();
      if (onednn_->Multiply(biased.data(), batch, c, threads_)) {
        AddBias(c, batch, spec_.raw_output && spec_.relu);
        if (!spec_.raw_output) Requantize(y_int8);
        return;
      }
    }
    cpu::GemmEpilogue epilogue{.bias = corrected_bias_.data(), .relu = false, .columns = out};
    if (spec_.raw_output) {
      epilogue.relu = spec_.relu;
      cpu::MultiplyPacked(biased.data(), batch, packed_, y_int32.data(), out, /*lower_only=*/false,
                          threads_, /*row_offset=*/0, epilogue);
      return;
    }
    sums.resize(static_cast<size_t>(batch) * out);
    cpu::MultiplyPacked(biased.data(), batch, packed_, sums.data(), out, /*lower_only=*/false,
                        threads_, /*row_offset=*/0, epilogue);
    Requantize(y_int8);
  }

  // This thread's int32 sums before requantisation, kept between calls.
  static std::vector<int32_t>& Sums() {
    thread_local std::vector<int32_t> sums;
    return sums;
  }

  // c[r][o] += corrected_bias_[o] (then ReLU) for `rows` rows of out_features sums: the bias and
  // the +128 correction after a product that has neither (oneDNN's).
  void AddBias(int32_t* c, int rows, bool relu) const {
    const int out = spec_.out_features;
    const int32_t* bias = corrected_bias_.data();
    for (int r = 0; r < rows; ++r, c += out) {
      if (relu) {
        for (int o = 0; o < out; ++o) c[o] = std::max(c[o] + bias[o], 0);
      } else {
        for (int o = 0; o < out; ++o) c[o] += bias[o];
      }
    }
  }

  // y_int8 from this thread's int32 sums (bias included): the kernel's requantisation, ReLU and
  // saturation (fixed.h), bit for bit.
  void Requantize(std::span<int8_t> y_int8) const {
    const std::vector<int32_t>& sums = Sums();
    const int out = spec_.out_features;
    for (size_t i = 0; i < y_int8.size(); ++i) {
      const int o = static_cast<int>(i % out);
      int32_t value = RequantizeInt32(sums[i], spec_.scales[o].multiplier, spec_.scales[o].shift);
      if (spec_.relu && value < 0) value = 0;
      y_int8[i] = SaturateToInt8(value);
    }
  }

  DenseInt8Spec spec_;
  bool portable_;
  int threads_;
  cpu::PackedInt8Matrix packed_;
  std::vector<int32_t> corrected_bias_;
  // oneDNN's kernel for this layer, or null (the portable loops, a CPU without VNNI, or
  // BackendOptions::cpu_onednn off): then MultiplyPacked.
  std::unique_ptr<cpu::OnednnInt8Matmul> onednn_;
};

class CpuGramInt8Accumulator final : public GramInt8Accumulator {
 public:
  CpuGramInt8Accumulator(int dimension, int num_classes, bool portable, int threads)
      : dimension_(dimension),
        num_classes_(num_classes),
        portable_(portable),
        threads_(threads),
        class_capacity_(num_classes),
        gram_(static_cast<size_t>(dimension) * dimension, 0),
        cross_(static_cast<size_t>(dimension) * num_classes, 0) {}

  absl::StatusOr<OpCounts> Accumulate(std::span<const int8_t> h,
                                      std::span<const int32_t> classes) override {
    absl::StatusOr<int> labelled = CheckGramAccumulate(dimension_, num_classes_, h, classes);
    if (!labelled.ok()) return labelled.status();
    const int rows = static_cast<int>(classes.size());
    const int d = dimension_;
    for (int n = 0; n < rows; ++n) {
      if (classes[n] < 0) continue;
      const int8_t* hn = h.data() + static_cast<int64_t>(n) * d;
      int64_t* qc = cross_.data() + static_cast<size_t>(classes[n]) * d;
      for (int i = 0; i < d; ++i) qc[i] += hn[i];
    }
    for (int r0 = 0; r0 < rows; r0 += kGramRowsPerBlock) {
      const int block_rows = std::min(kGramRowsPerBlock, rows - r0);
      const int8_t* block = h.data() + static_cast<int64_t>(r0) * d;
      if (portable_) {
        AccumulatePortable(block, block_rows);
      } else {
        AccumulateVnni(block, block_rows);
      }
    }
    rows_ += static_cast<uint64_t>(rows);
    return GramInt8CpuCounts(rows, *labelled, d, num_classes_);
  }

  absl::StatusOr<OpCounts> Read(std::vector<int64_t>* gram,
                                std::vector<int64_t>* cross) const override {
    *gram = gram_;
    // Q is kept class-major (see cross_); the interface's layout is dimension x num_classes.
    const size_t d = dimension_, c = num_classes_;
    cross->resize(d * c);
    for (size_t k = 0; k < c; ++k) {
      for (size_t i = 0; i < d; ++i) (*cross)[i * c + k] = cross_[k * d + i];
    }
    OpCounts counts;
    counts.dram_bytes = 2 * 8 * (gram_.size() + d * c);
    return counts;
  }

  HostSums host_sums() const override { return {gram_.data(), cross_.data()}; }

  absl::StatusOr<OpCounts> Clear() override {
    const size_t d = dimension_;
    for (size_t i = 0; i < d; ++i) std::fill_n(gram_.data() + i * d, i + 1, int64_t{0});
    std::fill_n(cross_.data(), d * num_classes_, int64_t{0});
    rows_ = 0;
    OpCounts counts;  // the lower triangle and Q's used columns written
    counts.dram_bytes = 8 * (d * (d + 1) / 2 + d * num_classes_);
    return counts;
  }

  absl::Status GrowClasses(int num_classes) override {
    if (absl::Status s = CheckGrowClasses(num_classes_, num_classes); !s.ok()) return s;
    const int capacity = GrowClassCapacity(class_capacity_, num_classes);
    if (capacity > class_capacity_) {
      // Class-major: the new columns are appended. reserve() to exactly the new capacity, so
      // that the capacity is ours (GrowClassCapacity), not std::vector's growth policy.
      const size_t d = dimension_;
      cross_.reserve(d * capacity);
      cross_.resize(d * capacity, 0);
      class_capacity_ = capacity;
    }
    num_classes_ = num_classes;  // the columns up to the capacity are already zero
    return absl::OkStatus();
  }

  int dimension() const override { return dimension_; }
  int num_classes() const override { return num_classes_; }
  int class_capacity() const override { return class_capacity_; }
  uint64_t rows() const override { return rows_; }

 private:
  void AccumulatePortable(const int8_t* h, int rows) {
    const int d = dimension_;
    for (int n = 0; n < rows; ++n) {
      const int8_t* hn = h + static_cast<int64_t>(n) * d;
      for (int i = 0; i < d; ++i) {
        const int64_t hi = hn[i];
        int64_t* gi = gram_.data() + static_cast<int64_t>(i) * d;
        for (int j = 0; j <= i; ++j) gi[j] += hi * hn[j];
      }
    }
  }

  // G += H^T H as a GEMM of H^T with itself: H^T (+128) as the unsigned operand, H^T packed as
  // the signed one, minus 128 * (column sums) per column, panel by panel of G's rows.
  void AccumulateVnni(const int8_t* h, int rows) {
    const int d = dimension_;
    std::vector<int8_t> transposed(static_cast<size_t>(d) * rows);
    for (int n = 0; n < rows; ++n) {
      for (int i = 0; i < d; ++i)
        transposed[static_cast<size_t>(i) * rows + n] = h[static_cast<int64_t>(n) * d + i];
    }
    const cpu::PackedInt8Matrix packed(transposed.data(), d, rows, rows);
    const std::vector<int32_t>& column_sums = packed.row_sums();
    const int64_t ldc = packed.padded_rows();
    std::vector<int32_t> panel(static_cast<size_t>(kGramPanel) * ldc);
    std::vector<uint8_t> biased;
    for (int i0 = 0; i0 < d; i0 += kGramPanel) {
      const int panel_rows = std::min(kGramPanel, d - i0);
      cpu::BiasedActivations(transposed.data() + static_cast<int64_t>(i0) * rows, panel_rows, rows,
                             rows, packed.groups(), biased);
      // Only the column blocks that reach the lower triangle (j <= i0 + a) are computed.
      cpu::MultiplyPacked(biased.data(), panel_rows, packed, panel.data(), ldc,
                          /*lower_only=*/true, threads_, /*row_offset=*/i0);
      const int threads = threads_ > 0 ? threads_ : omp_get_max_threads();
#pragma omp parallel for schedule(static) \
    num_threads(threads) if (static_cast <int64_t>(panel_rows) * d > (1 << 16))
      for (int a = 0; a < panel_rows; ++a) {
        const int i = i0 + a;
        int64_t* gi = gram_.data() + static_cast<int64_t>(i) * d;
        const int32_t* ci = panel.data() + a * ldc;
        for (int j = 0; j <= i; ++j)
          gi[j] += static_cast<int64_t>(ci[j]) - 128 * int64_t{column_sums[j]};
      }
    }
  }

  int dimension_;
  int num_classes_;
  bool portable_;
  int threads_;
  int class_capacity_;
  std::vector<int64_t> gram_;  // dimension x dimension, lower triangle
  // Class-major, class_capacity_ x dimension: class c's sums are contiguous at c * dimension, so a
  // new class appends a column (amortised O(dimension), GrowClasses) and a row's Q update is one
  // contiguous add. Columns past num_classes_ are zero.
  std::vector<int64_t> cross_;
  uint64_t rows_ = 0;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options)
      : portable_(options.cpu_portable || !cpu::HaveVnni()),
        onednn_(options.cpu_onednn),
        threads_(options.cpu_threads) {
    info_.name = "cpu";
    const int threads = threads_ > 0 ? threads_ : omp_get_max_threads();
    info_.description = absl::StrCat(
        portable_ ? "portable int8 loops"
                  : (onednn_ ? "oneDNN / AVX-512 VNNI int8 GEMM" : "AVX-512 VNNI int8 GEMM"),
        " on ", threads, threads == 1 ? " thread" : " threads");
  }

  const BackendInfo& info() const override { return info_; }

  absl::StatusOr<std::unique_ptr<DenseInt8Layer>> LoadDenseInt8(DenseInt8Spec spec) override {
    if (absl::Status s = spec.Validate(); !s.ok()) return s;
    return std::make_unique<CpuDenseInt8Layer>(std::move(spec), portable_, onednn_, threads_);
  }

  absl::StatusOr<std::unique_ptr<GramInt8Accumulator>> CreateGramInt8(int dimension,
                                                                      int num_classes) override {
    if (absl::Status s = CheckGramShape(dimension, num_classes); !s.ok()) return s;
    return std::make_unique<CpuGramInt8Accumulator>(dimension, num_classes, portable_, threads_);
  }

 private:
  bool portable_;
  bool onednn_;
  int threads_;
  BackendInfo info_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace strata::fpga
