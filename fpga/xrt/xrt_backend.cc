#include "fpga/xrt/xrt_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "experimental/xrt_system.h"
#include "experimental/xrt_xclbin.h"
#include "fpga/dataflow.h"
#include "fpga/kernels/kernels.h"
#include "fpga/validation.h"
#include "xrt/xrt_bo.h"
#include "xrt/xrt_device.h"
#include "xrt/xrt_kernel.h"

namespace strata::fpga {
namespace {

constexpr char kDenseKernel[] = "strata_dense_int8";
constexpr char kGramKernel[] = "strata_gram_int8";
constexpr size_t kMinBoBytes = 64;  // XRT rejects zero-sized buffers

// Argument indices of the kernels' top functions (kernels/kernels.h).
enum DenseArg {
  kDenseX = 0,
  kDenseW,
  kDenseBias,
  kDenseMultiplier,
  kDenseShift,
  kDenseY,
  kDenseYRaw
};
enum GramArg { kGramH = 0, kGramY, kGramG, kGramQ };

absl::Status XrtError(absl::string_view what, const std::exception& e) {
  return absl::UnavailableError(absl::StrCat("xrt backend: ", what, ": ", e.what()));
}

absl::Status NoCard(absl::string_view cause) {
  return absl::FailedPreconditionError(
      absl::StrCat("xrt backend: no FPGA card found (", cause,
                   "); pick another device with --device=emu or --device=cpu"));
}

absl::Status CheckXclbinFile(const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::NotFoundError(
        absl::StrCat("xrt backend: xclbin file '", path,
                     "' not found; build it with Vitis (docs/fpga.md) or pick another device with "
                     "--device=emu or --device=cpu"));
  }
  return absl::OkStatus();
}

// The number of cards XRT sees. XRT throws when it cannot load its PCIe shim; that is reported as
// "no card" with XRT's reason.
absl::StatusOr<unsigned int> CountCards() {
  unsigned int count = 0;
  try {
    count = xrt::system::enumerate_devices();
  } catch (const std::exception& e) {
    return NoCard(absl::StrCat("xrt::system::enumerate_devices() failed: ", e.what()));
  }
  if (count == 0) return NoCard("xrt::system::enumerate_devices() == 0");
  return count;
}

// One compute unit's kernel handle and the reusable, double-buffered I/O buffers of its calls.
struct ComputeUnit {
  xrt::kernel kernel;
  absl::Mutex mutex;  // serialises calls on this CU and guards the buffers
  // Two slots so that chunk k + 1's transfer overlaps chunk k's run.
  xrt::bo input[2] ABSL_GUARDED_BY(mutex);
  xrt::bo side_input[2] ABSL_GUARDED_BY(mutex);  // gram: the class indices
  xrt::bo output[2] ABSL_GUARDED_BY(mutex);
  xrt::bo unused_output ABSL_GUARDED_BY(mutex);  // dense: the output port a layer does not use
};

// A buffer of at least `bytes` in the memory bank of `kernel`'s argument `arg`, reusing `bo`.
void EnsureBo(const xrt::device& device, const xrt::kernel& kernel, int arg, size_t bytes,
              xrt::bo* bo) {
  bytes = std::max(bytes, kMinBoBytes);
  if (*bo && bo->size() >= bytes) return;
  // Grow by half again to avoid reallocating on every slightly larger call.
  *bo = xrt::bo(device, bytes + bytes / 2, xrt::bo::flags::normal, kernel.group_id(arg));
}

xrt::bo UploadBo(const xrt::device& device, const xrt::kernel& kernel, int arg, const void* data,
                 size_t bytes) {
  xrt::bo bo(device, std::max(bytes, kMinBoBytes), xrt::bo::flags::normal, kernel.group_id(arg));
  if (bytes > 0) {
    bo.write(data, bytes, 0);
    bo.sync(XCL_BO_SYNC_BO_TO_DEVICE, bytes, 0);
  }
  return bo;
}

absl::Status CheckRun(const xrt::run& run, absl::string_view kernel) {
  const ert_cmd_state state = run.wait();
  if (state != ERT_CMD_STATE_COMPLETED) {
    return absl::InternalError(
        absl::StrCat("xrt backend: ", kernel, " run ended in state ", static_cast<int>(state)));
  }
  return absl::OkStatus();
}

struct Card {
  xrt::device device;
  std::string name;
  int chunk_rows = 256;
  std::unique_ptr<ComputeUnit> dense;
  std::unique_ptr<ComputeUnit> gram;
};

class XrtDenseInt8Layer final : public DenseInt8Layer {
 public:
  XrtDenseInt8Layer(std::shared_ptr<Card> card, DenseInt8Spec spec)
      : card_(std::move(card)), spec_(std::move(spec)) {}

  // Uploads the parameters. Throws XRT's exceptions (the caller converts them).
  void Upload() {
    if (spec_.bias.empty()) spec_.bias.assign(spec_.out_features, 0);
    std::vector<int32_t> multipliers(spec_.out_features, 0), shifts(spec_.out_features, 0);
    for (size_t o = 0; o < spec_.scales.size(); ++o) {
      multipliers[o] = spec_.scales[o].multiplier;
      shifts[o] = spec_.scales[o].shift;
    }
    const xrt::kernel& k = card_->dense->kernel;
    const size_t outs = spec_.out_features;
    weights_ = UploadBo(card_->device, k, kDenseW, spec_.weights.data(), spec_.weights.size());
    bias_ = UploadBo(card_->device, k, kDenseBias, spec_.bias.data(), outs * 4);
    multipliers_ = UploadBo(card_->device, k, kDenseMultiplier, multipliers.data(), outs * 4);
    shifts_ = UploadBo(card_->device, k, kDenseShift, shifts.data(), outs * 4);
  }

  absl::StatusOr<OpCounts> Forward(std::span<const int8_t> x, int batch, std::span<int8_t> y_int8,
                                   std::span<int32_t> y_int32) const override {
    if (absl::Status s = CheckDenseForward(spec_, x, batch, y_int8, y_int32); !s.ok()) return s;
    ComputeUnit& cu = *card_->dense;
    absl::MutexLock lock(&cu.mutex);
    try {
      if (absl::Status s = RunChunks(cu, x, batch, y_int8, y_int32); !s.ok()) return s;
    } catch (const std::exception& e) {
      return XrtError("strata_dense_int8", e);
    }
    return DenseInt8KernelCounts(batch, spec_.in_features, spec_.out_features, spec_.raw_output);
  }

  const DenseInt8Spec& spec() const override { return spec_; }

 private:
  // Double buffering: chunk k's input is written and started while chunk k - 1 runs; chunk k - 2's
  // output (same slot) is collected first.
  absl::Status RunChunks(ComputeUnit& cu, std::span<const int8_t> x, int batch,
                         std::span<int8_t> y_int8, std::span<int32_t> y_int32) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(cu.mutex) {
    const int in = spec_.in_features, out = spec_.out_features;
    const size_t y_size = spec_.raw_output ? 4 : 1;
    const int chunk = std::max(1, card_->chunk_rows);
    const int flags = (spec_.relu ? kernels::kDenseFlagRelu : 0) |
                      (spec_.raw_output ? kernels::kDenseFlagRawOutput : 0);
    const int rows_in_slot = std::min(chunk, batch);
    for (int s = 0; s < 2; ++s) {
      EnsureBo(card_->device, cu.kernel, kDenseX, static_cast<size_t>(rows_in_slot) * in,
               &cu.input[s]);
      EnsureBo(card_->device, cu.kernel, kDenseY, static_cast<size_t>(rows_in_slot) * out * y_size,
               &cu.output[s]);
    }
    EnsureBo(card_->device, cu.kernel, kDenseY, kMinBoBytes, &cu.unused_output);

    xrt::run runs[2];
    int started_row[2] = {0, 0}, started_rows[2] = {0, 0};
    auto collect = [&](int s) -> absl::Status {
      // Called only below, under RunChunks' lock; the analysis does not follow into lambdas.
      cu.mutex.AssertHeld();
      if (absl::Status st = CheckRun(runs[s], kDenseKernel); !st.ok()) return st;
      const size_t bytes = static_cast<size_t>(started_rows[s]) * out * y_size;
      cu.output[s].sync(XCL_BO_SYNC_BO_FROM_DEVICE, bytes, 0);
      void* dst =
          spec_.raw_output
              ? static_cast<void*>(y_int32.data() + static_cast<size_t>(started_row[s]) * out)
              : static_cast<void*>(y_int8.data() + static_cast<size_t>(started_row[s]) * out);
      cu.output[s].read(dst, bytes, 0);
      runs[s] = xrt::run();
      return absl::OkStatus();
    };
    int k = 0;
    for (int row = 0; row < batch; row += chunk, ++k) {
      const int s = k % 2;
      if (runs[s]) {
        if (absl::Status st = collect(s); !st.ok()) return st;
      }
      const int rows = std::min(chunk, batch - row);
      const size_t bytes = static_cast<size_t>(rows) * in;
      cu.input[s].write(x.data() + static_cast<size_t>(row) * in, bytes, 0);
      cu.input[s].sync(XCL_BO_SYNC_BO_TO_DEVICE, bytes, 0);
      xrt::bo& y8 = spec_.raw_output ? cu.unused_output : cu.output[s];
      xrt::bo& y32 = spec_.raw_output ? cu.output[s] : cu.unused_output;
      runs[s] = cu.kernel(cu.input[s], weights_, bias_, multipliers_, shifts_, y8, y32, rows, in,
                          out, flags);
      started_row[s] = row;
      started_rows[s] = rows;
    }
    // Collect the last two runs in the order they were started.
    for (int j = k - 2; j < k; ++j) {
      if (j >= 0 && runs[j % 2]) {
        if (absl::Status st = collect(j % 2); !st.ok()) return st;
      }
    }
    return absl::OkStatus();
  }

  std::shared_ptr<Card> card_;
  DenseInt8Spec spec_;
  xrt::bo weights_, bias_, multipliers_, shifts_;
};

class XrtGramInt8Accumulator final : public GramInt8Accumulator {
 public:
  XrtGramInt8Accumulator(std::shared_ptr<Card> card, int dimension, int num_classes)
      : card_(std::move(card)),
        dimension_(dimension),
        num_classes_(num_classes),
        class_capacity_(num_classes) {}

  // Allocates zeroed G and Q on the card. Throws XRT's exceptions.
  void Allocate() {
    const size_t d = dimension_;
    const std::vector<int64_t> zeros_g(d * d, 0), zeros_q(d * class_capacity_, 0);
    gram_ = UploadBo(card_->device, card_->gram->kernel, kGramG, zeros_g.data(), d * d * 8);
    cross_ = UploadBo(card_->device, card_->gram->kernel, kGramQ, zeros_q.data(),
                      d * class_capacity_ * 8);
  }

  absl::StatusOr<OpCounts> Accumulate(std::span<const int8_t> h,
                                      std::span<const int32_t> classes) override {
    absl::StatusOr<int> labelled = CheckGramAccumulate(dimension_, num_classes_, h, classes);
    if (!labelled.ok()) return labelled.status();
    const int rows = static_cast<int>(classes.size());
    if (rows > 0) {
      ComputeUnit& cu = *card_->gram;
      absl::MutexLock lock(&cu.mutex);
      try {
        if (absl::Status s = RunChunks(cu, h, classes); !s.ok()) return s;
      } catch (const std::exception& e) {
        return XrtError("strata_gram_int8", e);
      }
    }
    rows_ += static_cast<uint64_t>(rows);
    return GramInt8KernelCounts(rows, *labelled, dimension_, class_capacity_);
  }

  absl::StatusOr<OpCounts> Read(std::vector<int64_t>* gram,
                                std::vector<int64_t>* cross) const override {
    const size_t d = dimension_;
    gram->resize(d * d);
    try {
      gram_.sync(XCL_BO_SYNC_BO_FROM_DEVICE, d * d * 8, 0);
      gram_.read(gram->data(), d * d * 8, 0);
      // Q's rows on the card are class_capacity_ wide: read them whole, drop the unused columns.
      std::vector<int64_t> allocated(d * class_capacity_);
      if (class_capacity_ > 0) {
        cross_.sync(XCL_BO_SYNC_BO_FROM_DEVICE, allocated.size() * 8, 0);
        cross_.read(allocated.data(), allocated.size() * 8, 0);
      }
      *cross = RestrideCross(allocated, dimension_, class_capacity_, num_classes_);
    } catch (const std::exception& e) {
      return XrtError("reading G and Q", e);
    }
    return GramInt8KernelReadCounts(dimension_, class_capacity_);
  }

  absl::Status GrowClasses(int num_classes) override {
    if (absl::Status s = CheckGrowClasses(num_classes_, num_classes); !s.ok()) return s;
    const int capacity = GrowClassCapacity(class_capacity_, num_classes);
    if (capacity > class_capacity_) {
      // Read Q back, re-lay it with the wider stride and upload it: O(d x capacity) over PCIe,
      // paid only when the capacity (at least) doubles.
      const size_t d = dimension_;
      try {
        std::vector<int64_t> old(d * class_capacity_);
        if (class_capacity_ > 0) {
          cross_.sync(XCL_BO_SYNC_BO_FROM_DEVICE, old.size() * 8, 0);
          cross_.read(old.data(), old.size() * 8, 0);
        }
        const std::vector<int64_t> grown =
            RestrideCross(old, dimension_, class_capacity_, capacity);
        cross_ =
            UploadBo(card_->device, card_->gram->kernel, kGramQ, grown.data(), grown.size() * 8);
      } catch (const std::exception& e) {
        return XrtError("growing Q", e);
      }
      class_capacity_ = capacity;
    }
    num_classes_ = num_classes;  // the card's columns up to the capacity are already zero
    return absl::OkStatus();
  }

  int dimension() const override { return dimension_; }
  int num_classes() const override { return num_classes_; }
  int class_capacity() const override { return class_capacity_; }
  uint64_t rows() const override { return rows_; }

 private:
  absl::Status RunChunks(ComputeUnit& cu, std::span<const int8_t> h,
                         std::span<const int32_t> classes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cu.mutex) {
    const int rows = static_cast<int>(classes.size());
    const int chunk = std::max(1, card_->chunk_rows);
    const int rows_in_slot = std::min(chunk, rows);
    for (int s = 0; s < 2; ++s) {
      EnsureBo(card_->device, cu.kernel, kGramH, static_cast<size_t>(rows_in_slot) * dimension_,
               &cu.input[s]);
      EnsureBo(card_->device, cu.kernel, kGramY, static_cast<size_t>(rows_in_slot) * 4,
               &cu.side_input[s]);
    }
    // Runs on one CU execute in order, so chunk k + 1 may be queued while chunk k updates G; a
    // slot is rewritten only after the run that used it finished.
    xrt::run runs[2];
    int k = 0;
    for (int row = 0; row < rows; row += chunk, ++k) {
      const int s = k % 2;
      if (runs[s]) {
        if (absl::Status st = CheckRun(runs[s], kGramKernel); !st.ok()) return st;
      }
      const int n = std::min(chunk, rows - row);
      const size_t h_bytes = static_cast<size_t>(n) * dimension_;
      cu.input[s].write(h.data() + static_cast<size_t>(row) * dimension_, h_bytes, 0);
      cu.input[s].sync(XCL_BO_SYNC_BO_TO_DEVICE, h_bytes, 0);
      cu.side_input[s].write(classes.data() + row, static_cast<size_t>(n) * 4, 0);
      cu.side_input[s].sync(XCL_BO_SYNC_BO_TO_DEVICE, static_cast<size_t>(n) * 4, 0);
      // The kernel's `classes` is Q's row stride on the card: the allocated columns.
      runs[s] =
          cu.kernel(cu.input[s], cu.side_input[s], gram_, cross_, n, dimension_, class_capacity_);
    }
    for (int j = k - 2; j < k; ++j) {
      if (j >= 0 && runs[j % 2]) {
        if (absl::Status st = CheckRun(runs[j % 2], kGramKernel); !st.ok()) return st;
      }
    }
    return absl::OkStatus();
  }

  std::shared_ptr<Card> card_;
  int dimension_;
  int num_classes_;
  int class_capacity_;     // Q's allocated columns: its row stride on the card
  mutable xrt::bo gram_;   // d x d int64, lower triangle (the kernel never writes the upper)
  mutable xrt::bo cross_;  // d x class_capacity_ int64, columns past num_classes_ zero
  uint64_t rows_ = 0;
};

class XrtBackend final : public Backend {
 public:
  explicit XrtBackend(std::shared_ptr<Card> card) : card_(std::move(card)) {
    info_.name = "xrt";
    info_.description = card_->name;
    info_.computes_on_host = false;
  }

  const BackendInfo& info() const override { return info_; }

  absl::StatusOr<std::unique_ptr<DenseInt8Layer>> LoadDenseInt8(DenseInt8Spec spec) override {
    if (absl::Status s = spec.Validate(); !s.ok()) return s;
    auto layer = std::make_unique<XrtDenseInt8Layer>(card_, std::move(spec));
    try {
      layer->Upload();
    } catch (const std::exception& e) {
      return XrtError("uploading a dense layer", e);
    }
    return layer;
  }

  absl::StatusOr<std::unique_ptr<GramInt8Accumulator>> CreateGramInt8(int dimension,
                                                                      int num_classes) override {
    if (absl::Status s = CheckGramShape(dimension, num_classes); !s.ok()) return s;
    auto accumulator = std::make_unique<XrtGramInt8Accumulator>(card_, dimension, num_classes);
    try {
      accumulator->Allocate();
    } catch (const std::exception& e) {
      return XrtError("allocating G and Q", e);
    }
    return accumulator;
  }

 private:
  std::shared_ptr<Card> card_;
  BackendInfo info_;
};

}  // namespace

absl::Status XrtCardAndXclbinPresent(const BackendOptions& options) {
  if (absl::Status s = CheckXclbinFile(options.xclbin_path); !s.ok()) return s;
  absl::StatusOr<unsigned int> cards = CountCards();
  if (!cards.ok()) return cards.status();
  if (options.xclbin_path.empty()) {
    return absl::FailedPreconditionError("xrt backend: a card is present but no xclbin was given");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateXrtBackend(const BackendOptions& options) {
  if (absl::Status s = CheckXclbinFile(options.xclbin_path); !s.ok()) return s;
  absl::StatusOr<unsigned int> cards = CountCards();
  if (!cards.ok()) return cards.status();
  if (options.xrt_device_index >= *cards) {
    return absl::InvalidArgumentError(absl::StrCat("xrt backend: device index ",
                                                   options.xrt_device_index, " but XRT sees ",
                                                   *cards, " card(s)"));
  }
  if (options.xclbin_path.empty()) {
    return absl::InvalidArgumentError(
        "xrt backend: no xclbin given; build strata.xclbin with Vitis (docs/fpga.md) and pass "
        "its path");
  }
  xrt::xclbin xclbin;
  try {
    xclbin = xrt::xclbin(options.xclbin_path);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("xrt backend: cannot read xclbin '", options.xclbin_path, "': ", e.what()));
  }
  for (const char* name : {kDenseKernel, kGramKernel}) {
    bool found = false;
    for (const xrt::xclbin::kernel& k : xclbin.get_kernels()) found = found || k.get_name() == name;
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat("xrt backend: xclbin '", options.xclbin_path, "' has no kernel ", name));
    }
  }
  auto card = std::make_shared<Card>();
  card->chunk_rows = options.xrt_chunk_rows;
  try {
    card->device = xrt::device(options.xrt_device_index);
    const xrt::uuid uuid = card->device.load_xclbin(xclbin);
    card->name = absl::StrCat(card->device.get_info<xrt::info::device::name>(), " (",
                              card->device.get_info<xrt::info::device::bdf>(), "), xclbin ",
                              options.xclbin_path);
    card->dense = std::make_unique<ComputeUnit>();
    card->dense->kernel = xrt::kernel(card->device, uuid, kDenseKernel);
    card->gram = std::make_unique<ComputeUnit>();
    card->gram->kernel = xrt::kernel(card->device, uuid, kGramKernel);
  } catch (const std::exception& e) {
    return XrtError(absl::StrCat("opening card ", options.xrt_device_index, " with '",
                                 options.xclbin_path, "'"),
                    e);
  }
  return std::make_unique<XrtBackend>(std::move(card));
}

}  // namespace strata::fpga
