#include "fpga/emu/emu_backend.h"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "fpga/dataflow.h"
#include "fpga/kernels/kernels.h"
#include "fpga/validation.h"

namespace strata::fpga {
namespace {

class EmuDenseInt8Layer final : public DenseInt8Layer {
 public:
  explicit EmuDenseInt8Layer(DenseInt8Spec spec) : spec_(std::move(spec)) {
    if (spec_.bias.empty()) spec_.bias.assign(spec_.out_features, 0);
    multipliers_.resize(spec_.out_features, 0);
    shifts_.resize(spec_.out_features, 0);
    for (size_t o = 0; o < spec_.scales.size(); ++o) {
      multipliers_[o] = spec_.scales[o].multiplier;
      shifts_[o] = spec_.scales[o].shift;
    }
  }

  absl::StatusOr<OpCounts> Forward(std::span<const int8_t> x, int batch, std::span<int8_t> y_int8,
                                   std::span<int32_t> y_int32) const override {
    if (absl::Status s = CheckDenseForward(spec_, x, batch, y_int8, y_int32); !s.ok()) return s;
    const int flags = (spec_.relu ? kernels::kDenseFlagRelu : 0) |
                      (spec_.raw_output ? kernels::kDenseFlagRawOutput : 0);
    strata_dense_int8(x.data(), spec_.weights.data(), spec_.bias.data(), multipliers_.data(),
                      shifts_.data(), y_int8.data(), y_int32.data(), batch, spec_.in_features,
                      spec_.out_features, flags);
    return DenseInt8KernelCounts(batch, spec_.in_features, spec_.out_features, spec_.raw_output);
  }

  const DenseInt8Spec& spec() const override { return spec_; }

 private:
  DenseInt8Spec spec_;
  std::vector<int32_t> multipliers_;
  std::vector<int32_t> shifts_;
};

class EmuGramInt8Accumulator final : public GramInt8Accumulator {
 public:
  EmuGramInt8Accumulator(int dimension, int num_classes)
      : dimension_(dimension),
        num_classes_(num_classes),
        class_capacity_(num_classes),
        gram_(static_cast<size_t>(dimension) * dimension, 0),
        cross_(static_cast<size_t>(dimension) * num_classes, 0) {}

  absl::StatusOr<OpCounts> Accumulate(std::span<const int8_t> h,
                                      std::span<const int32_t> classes) override {
    absl::StatusOr<int> labelled = CheckGramAccumulate(dimension_, num_classes_, h, classes);
    if (!labelled.ok()) return labelled.status();
    const int rows = static_cast<int>(classes.size());
    // The kernel's `classes` is Q's row stride: the allocated columns (their extra ones stay 0,
    // no row has their class).
    strata_gram_int8(h.data(), classes.data(), gram_.data(), cross_.data(), rows, dimension_,
                     class_capacity_);
    rows_ += static_cast<uint64_t>(rows);
    return GramInt8KernelCounts(rows, *labelled, dimension_, class_capacity_);
  }

  absl::StatusOr<OpCounts> Read(std::vector<int64_t>* gram,
                                std::vector<int64_t>* cross) const override {
    *gram = gram_;  // the kernel never writes the strict upper triangle: it stays 0
    *cross = RestrideCross(cross_, dimension_, class_capacity_, num_classes_);  // drop unused
    return GramInt8KernelReadCounts(dimension_, class_capacity_);
  }

  absl::Status GrowClasses(int num_classes) override {
    if (absl::Status s = CheckGrowClasses(num_classes_, num_classes); !s.ok()) return s;
    const int capacity = GrowClassCapacity(class_capacity_, num_classes);
    if (capacity > class_capacity_) {
      cross_ = RestrideCross(cross_, dimension_, class_capacity_, capacity);
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
  int dimension_;
  int num_classes_;
  int class_capacity_;
  std::vector<int64_t> gram_;   // dimension x dimension, lower triangle
  std::vector<int64_t> cross_;  // dimension x class_capacity_, the kernel's row-major layout
  uint64_t rows_ = 0;
};

class EmuBackend final : public Backend {
 public:
  EmuBackend() {
    info_.name = "emu";
    info_.description = "C simulation of the FPGA kernels (strata_dense_int8, strata_gram_int8)";
  }

  const BackendInfo& info() const override { return info_; }

  absl::StatusOr<std::unique_ptr<DenseInt8Layer>> LoadDenseInt8(DenseInt8Spec spec) override {
    if (absl::Status s = spec.Validate(); !s.ok()) return s;
    return std::make_unique<EmuDenseInt8Layer>(std::move(spec));
  }

  absl::StatusOr<std::unique_ptr<GramInt8Accumulator>> CreateGramInt8(int dimension,
                                                                      int num_classes) override {
    if (absl::Status s = CheckGramShape(dimension, num_classes); !s.ok()) return s;
    return std::make_unique<EmuGramInt8Accumulator>(dimension, num_classes);
  }

 private:
  BackendInfo info_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateEmuBackend(const BackendOptions& options) {
  return std::make_unique<EmuBackend>();
}

}  // namespace strata::fpga
