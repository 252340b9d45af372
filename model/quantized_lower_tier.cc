#include "model/quantized_lower_tier.h"

#include <omp.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/int8_quantization.h"

namespace strata::model {
namespace {

// Images per work item when a batch is split across threads (as LowerTier does): a conv layer
// call then has kLowerTierRowsPerChunk * H * W rows.
constexpr Eigen::Index kImagesPerChunk = kLowerTierRowsPerChunk;
// Calibration images per chunk of the float pass.
constexpr Eigen::Index kCalibrationChunk = 128;
// Rows from which a dense layer's (de)quantisation loops open a parallel region of their own.
constexpr Eigen::Index kParallelRows = 8;
// Conv filters up to which split_relu and pool are fused into the conv's dequantisation (its
// per-cell sums live on the stack); a wider conv runs the three stages one after the other.
constexpr int kMaxFusedFilters = 256;

// Reads a CPU-time clock at each step boundary and adds the time since the last one to that step
// (CPU time, so that other processes sharing the cores do not inflate a step): this thread's
// inside a parallel region, the whole process's outside one (where a step's backend call may run
// on every core). Does nothing when `seconds` is null.
class StepClock {
 public:
  explicit StepClock(std::vector<double>* seconds)
      : seconds_(seconds),
        clock_(omp_in_parallel() ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID) {
    if (seconds_ != nullptr) last_ = Now();
  }
  void Lap(int step) {
    if (seconds_ == nullptr) return;
    const double now = Now();
    (*seconds_)[step] += now - last_;
    last_ = now;
  }

 private:
  double Now() const {
    timespec now;
    clock_gettime(clock_, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
  }

  std::vector<double>* seconds_;
  clockid_t clock_;
  double last_ = 0;
};

// The float weights of a quantised stage as an n_in x n_out matrix (w[o][i] = matrix(i, o)).
const MatrixF* StageWeights(const Stage& stage) {
  if (auto* conv = dynamic_cast<const ConvStage*>(&stage)) return &conv->filters();
  if (auto* expand = dynamic_cast<const ExpandStage*>(&stage)) return &expand->projection();
  if (auto* elm = dynamic_cast<const ElmAutoencoderStage*>(&stage)) return &elm->encoder();
  return nullptr;
}

// OK if `calibration` holds one positive, finite activation scale per quantised stage.
absl::Status CheckActivationScales(const Int8Calibration& calibration, size_t quantized) {
  const size_t k = calibration.activation_scales.size();
  if (k != quantized) {
    return absl::InvalidArgumentError(absl::StrCat("quantised lower tier: ", k,
                                                   " activation scales for ", quantized,
                                                   " quantised stages (conv / expand / elm_ae)"));
  }
  for (size_t i = 0; i < k; ++i) {
    const float scale = calibration.activation_scales[i];
    if (!(scale > 0) || !std::isfinite(scale)) {
      return absl::InvalidArgumentError(absl::StrCat("quantised lower tier: activation scale ", i,
                                                     " is ", scale,
                                                     ", expected a positive finite value"));
    }
  }
  return absl::OkStatus();
}

// A conv's output image and the pool cell size of a fused conv -> split_relu -> pool.
struct CellGrid {
  int height = 0, width = 0, size = 0;
};

// The fused dequantise, split_relu and pool of one image, as the three stages compute it:
// v = acc * s_x s_w[f]; [max(v, 0), max(-v, 0)] per pixel; each pool cell the sum of its pixels
// in raster order, times 1 / size^2. Cell by cell, so that the cell's 2F sums stay in registers
// instead of two H x W x F float maps going through memory: the same float operations in the same
// order, so the same bits. kFilters > 0: the filter count, known at compile time (the filter
// loops unroll: 4.8-6.0 -> 3.3-3.4 CPU us per 28 x 28 x 24 image, strata-bench-lower); 0:
// `filters_at_run_time` (<= kMaxFusedFilters).
template <int kFilters>
void PoolCells(const CellGrid& grid, int filters_at_run_time, const int32_t* sums,
               const float* dequantize, float* out) {
  const int filters = kFilters > 0 ? kFilters : filters_at_run_time;
  const int grid_y = grid.height / grid.size, grid_x = grid.width / grid.size;
  const float scale = 1.0f / static_cast<float>(grid.size * grid.size);
  // Local arrays: the compiler can see that nothing else writes them (no per-pixel alias checks).
  alignas(64) float positive[kFilters > 0 ? kFilters : kMaxFusedFilters];
  alignas(64) float negative[kFilters > 0 ? kFilters : kMaxFusedFilters];
  for (int gy = 0; gy < grid_y; ++gy) {
    for (int gx = 0; gx < grid_x; ++gx) {
      std::fill(positive, positive + filters, 0.0f);
      std::fill(negative, negative + filters, 0.0f);
      for (int y = gy * grid.size; y < (gy + 1) * grid.size; ++y) {
        for (int x = gx * grid.size; x < (gx + 1) * grid.size; ++x) {
          const int32_t* pixel = sums + (static_cast<size_t>(y) * grid.width + x) * filters;
          for (int f = 0; f < filters; ++f) {
            const float v = static_cast<float>(pixel[f]) * dequantize[f];
            positive[f] += std::max(v, 0.0f);
            negative[f] += std::max(-v, 0.0f);
          }
        }
      }
      float* cell = out + (static_cast<size_t>(gy) * grid_x + gx) * 2 * filters;
      for (int f = 0; f < filters; ++f) {
        cell[f] = positive[f] * scale;
        cell[filters + f] = negative[f] * scale;
      }
    }
  }
}

}  // namespace

struct QuantizedLowerTier::Workspace {
  MatrixF image;                 // one image (the per-image stages' input)
  MatrixF per_image_out;         // the per-image stages' output, one row per image of the chunk
  MatrixF image_out;             // the per-image stages' output for one image
  std::vector<MatrixF> outputs;  // each stage's output; kept, so their sizes rarely change
  std::vector<int8_t> image_q, x_q;
  std::vector<int32_t> acc;
  std::vector<double>* step_seconds = nullptr;  // profiling, or null
};

QuantizedLowerTier::~QuantizedLowerTier() = default;

absl::StatusOr<QuantizedLowerTier> QuantizedLowerTier::Calibrate(
    std::shared_ptr<const LowerTier> tier, const MatrixF& calibration_images,
    fpga::Backend& backend, const ActivationCalibration& calibration) {
  absl::StatusOr<Int8Calibration> scales =
      CalibrateActivations(*tier, calibration_images, calibration);
  if (!scales.ok()) return scales.status();
  return FromCalibration(std::move(tier), *scales, backend);
}

absl::StatusOr<Int8Calibration> QuantizedLowerTier::CalibrateActivations(
    const LowerTier& tier, const MatrixF& calibration_images,
    const ActivationCalibration& calibration) {
  const Shape& input = tier.input_shape();
  if (calibration_images.cols() != tier.input_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantised lower tier: calibration images have ", calibration_images.cols(),
                     " values, the lower tier's input is ", input.height, "x", input.width, "x",
                     input.channels, " = ", tier.input_size()));
  }
  if (calibration_images.rows() < 1) {
    return absl::InvalidArgumentError("quantised lower tier: no calibration images");
  }
  if (!calibration_images.allFinite()) {
    return absl::InvalidArgumentError(
        "quantised lower tier: calibration images contain NaN or Inf");
  }
  if (!(calibration.percentile > 0 && calibration.percentile <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat("quantised lower tier: activation percentile ",
                                                   calibration.percentile,
                                                   ", expected a value in (0, 100]"));
  }

  const auto& stages = tier.stages();
  const size_t num_stages = stages.size();

  // |x| at every quantised stage's input over the calibration images (float activations), each
  // chunk writing its own slice so the pass is deterministic.
  const Eigen::Index n = calibration_images.rows();
  std::vector<std::vector<float>> magnitudes(num_stages);
  for (size_t s = 0; s < num_stages; ++s) {
    if (StageWeights(*stages[s]) != nullptr) {
      magnitudes[s].resize(static_cast<size_t>(n) * stages[s]->input_shape().size());
    }
  }
  const Eigen::Index chunks = (n + kCalibrationChunk - 1) / kCalibrationChunk;
#pragma omp parallel if (chunks > 1)
  {
    MatrixF a, b;
#pragma omp for schedule(dynamic)
    for (Eigen::Index chunk = 0; chunk < chunks; ++chunk) {
      const Eigen::Index start = chunk * kCalibrationChunk;
      const Eigen::Index rows = std::min(kCalibrationChunk, n - start);
      a = calibration_images.middleRows(start, rows);
      for (size_t s = 0; s < num_stages; ++s) {
        if (!magnitudes[s].empty()) {
          float* dst = magnitudes[s].data() + static_cast<size_t>(start) * a.cols();
          for (Eigen::Index i = 0; i < a.size(); ++i) dst[i] = std::abs(a.data()[i]);
        }
        if (s + 1 < num_stages) {  // the last stage's output is not needed
          stages[s]->Apply(a, b);
          std::swap(a, b);
        }
      }
    }
  }

  Int8Calibration result;
  result.percentile = calibration.percentile;
  result.calibration_images = static_cast<uint64_t>(n);
  for (size_t s = 0; s < num_stages; ++s) {
    if (StageWeights(*stages[s]) == nullptr) continue;
    std::vector<float>& values = magnitudes[s];
    const float max_abs = values.empty() ? 0.0f : *std::max_element(values.begin(), values.end());
    float range = Percentile(values, calibration.percentile);
    if (!(range > 0)) range = max_abs > 0 ? max_abs : 1.0f;
    const float activation_scale = range / kInt8Max;
    const float saturation = (kInt8Max + 0.5f) * activation_scale;
    size_t clipped = 0;
    for (float v : values) clipped += v > saturation;
    result.activation_scales.push_back(activation_scale);
    result.max_abs_activations.push_back(max_abs);
    result.clipped_fractions.push_back(
        values.empty() ? 0.0 : static_cast<double>(clipped) / values.size());
    std::vector<float>().swap(values);
  }
  return result;
}

absl::StatusOr<QuantizedStageInfo> QuantizedLowerTier::PlanStage(
    size_t s, const Stage& stage, const MatrixF& weights, const Int8Calibration& calibration,
    size_t scale_index, fpga::Backend& backend, StagePlan& plan) {
  const int in_features = static_cast<int>(weights.rows());
  const int out_features = static_cast<int>(weights.cols());
  QuantizedStageInfo info;
  info.stage = static_cast<int>(s);
  info.in_features = in_features;
  info.out_features = out_features;
  fpga::DenseInt8Spec spec;
  spec.in_features = in_features;
  spec.out_features = out_features;
  spec.raw_output = true;
  const VectorF* bias = nullptr;
  if (dynamic_cast<const ConvStage*>(&stage) != nullptr) {
    plan.kind = Kind::kConv;
    info.kind = "conv";
    info.rows_per_sample = stage.input_shape().height * stage.input_shape().width;
  } else if (auto* expand = dynamic_cast<const ExpandStage*>(&stage)) {
    plan.kind = Kind::kExpand;
    info.kind = "expand";
    spec.relu = true;
    bias = &expand->bias();
  } else {
    plan.kind = Kind::kElm;
    info.kind = "elm_ae";
    spec.relu = static_cast<const ElmAutoencoderStage&>(stage).relu();
  }

  // Activation scale; the calibration's statistics are informational and may be absent.
  const size_t k = calibration.activation_scales.size();
  auto informational = [&](const auto& values) {
    return values.size() == k ? values[scale_index] : 0;
  };
  const float activation_scale = calibration.activation_scales[scale_index];
  info.activation_scale = activation_scale;
  info.max_abs_activation = informational(calibration.max_abs_activations);
  info.clipped_fraction = informational(calibration.clipped_fractions);
  plan.inverse_activation_scale = 1.0f / activation_scale;

  // Per-output-channel weight scales, int8 weights and the int32 bias.
  WeightQuantization quantized;
  if (absl::Status q = QuantizeDenseWeights(
          weights, bias, activation_scale,
          absl::StrFormat("quantised lower tier stage %d (%s)", s + 1, info.kind), spec, quantized);
      !q.ok()) {
    return q;
  }
  plan.dequantize = std::move(quantized.dequantize);
  info.min_weight_scale = quantized.min_weight_scale;
  info.max_weight_scale = quantized.max_weight_scale;

  absl::StatusOr<std::unique_ptr<fpga::DenseInt8Layer>> layer =
      backend.LoadDenseInt8(std::move(spec));
  if (!layer.ok()) {
    return absl::Status(layer.status().code(),
                        absl::StrCat("quantised lower tier stage ", s + 1, " (", info.kind,
                                     "): ", layer.status().message()));
  }
  plan.layer = *std::move(layer);
  return info;
}

absl::StatusOr<QuantizedLowerTier> QuantizedLowerTier::FromCalibration(
    std::shared_ptr<const LowerTier> lower, const Int8Calibration& calibration,
    fpga::Backend& backend) {
  const LowerTier& tier = *lower;
  const auto& stages = tier.stages();
  const size_t num_stages = stages.size();
  if (absl::Status scales =
          CheckActivationScales(calibration, static_cast<size_t>(QuantizedStageCount(tier)));
      !scales.ok()) {
    return scales;
  }

  QuantizedLowerTier q;
  q.lower_ = std::move(lower);
  q.backend_ = &backend;
  q.device_ = backend.info().name;
  q.input_size_ = tier.input_size();
  q.feature_size_ = tier.feature_size();
  q.calibration_ = calibration;
  q.plans_.resize(num_stages);
  size_t next_scale = 0;
  for (size_t s = 0; s < num_stages; ++s) {
    q.plans_[s].stage = stages[s].get();
    const MatrixF* weights = StageWeights(*stages[s]);
    if (weights == nullptr) continue;
    absl::StatusOr<QuantizedStageInfo> info =
        PlanStage(s, *stages[s], *weights, calibration, next_scale++, backend, q.plans_[s]);
    if (!info.ok()) return info.status();
    q.infos_.push_back(*std::move(info));
  }
  q.FuseSplitReluPool();
  if (backend.info().computes_on_host) {
    while (q.per_image_stages_ < num_stages &&
           q.plans_[q.per_image_stages_].kind != Kind::kExpand &&
           q.plans_[q.per_image_stages_].kind != Kind::kElm) {
      ++q.per_image_stages_;
    }
  }
  q.NameSteps();
  return q;
}

void QuantizedLowerTier::FuseSplitReluPool() {
  for (size_t s = 0; s + 2 < plans_.size(); ++s) {
    if (plans_[s].kind != Kind::kConv ||
        plans_[s].stage->output_shape().channels > kMaxFusedFilters ||
        dynamic_cast<const SplitReluStage*>(plans_[s + 1].stage) == nullptr) {
      continue;
    }
    const auto* pool = dynamic_cast<const PoolStage*>(plans_[s + 2].stage);
    if (pool == nullptr) continue;
    plans_[s].fused_pool = pool->size();
    plans_[s + 1].fused = plans_[s + 2].fused = true;
  }
}

void QuantizedLowerTier::NameSteps() {
  step_names_.clear();
  for (StagePlan& plan : plans_) {
    plan.first_step = static_cast<int>(step_names_.size());
    const std::string name = plan.stage->Describe();
    if (plan.kind == Kind::kHost) {
      step_names_.push_back(plan.fused ? absl::StrCat("(fused into the conv) ", name) : name);
      continue;
    }
    const std::string kind = plan.kind == Kind::kConv     ? "conv"
                             : plan.kind == Kind::kExpand ? "expand"
                                                          : "elm_ae";
    step_names_.push_back(
        absl::StrCat(kind, ": quantise", plan.kind == Kind::kConv ? " + im2col" : ""));
    step_names_.push_back(absl::StrCat(kind, ": int8 GEMM (", device_, " backend)"));
    step_names_.push_back(absl::StrCat(kind, ": dequantise",
                                       plan.kind == Kind::kExpand ? " + concat"
                                       : plan.fused_pool > 0      ? " + +/-ReLU + pool"
                                                                  : ""));
  }
}

absl::Status QuantizedLowerTier::RunLayer(const StagePlan& plan, const MatrixF& in, MatrixF& out,
                                          Workspace& ws, fpga::OpCounts& counts) const {
  StepClock clock(ws.step_seconds);
  const fpga::DenseInt8Spec& spec = plan.layer->spec();
  const int out_features = spec.out_features;
  const Eigen::Index images = in.rows();
  int layer_rows = static_cast<int>(images);
  if (plan.kind == Kind::kConv) {
    // Quantise the image, then take int8 patches: rounding is elementwise and the zero padding
    // stays 0, so this equals quantising the float patches, at 1/25 of the rounding work.
    const auto& conv = static_cast<const ConvStage&>(*plan.stage);
    const Eigen::Index pixels =
        static_cast<Eigen::Index>(conv.input_shape().height) * conv.input_shape().width;
    layer_rows = static_cast<int>(images * pixels);
    ws.x_q.resize(static_cast<size_t>(layer_rows) * spec.in_features);
    ws.image_q.resize(static_cast<size_t>(in.cols()));
    const size_t per_image = static_cast<size_t>(pixels) * spec.in_features;
    for (Eigen::Index i = 0; i < images; ++i) {
      QuantizeActivations(in.row(i).data(), ws.image_q.size(), plan.inverse_activation_scale,
                          ws.image_q.data());
      conv.PatchesInt8(ws.image_q.data(), ws.x_q.data() + i * per_image);
    }
  } else {
    ws.x_q.resize(static_cast<size_t>(in.size()));
    const size_t width = static_cast<size_t>(in.cols());
    // Row by row on every thread when called outside a parallel region (a serving batch).
#pragma omp parallel for schedule(static) if (images >= kParallelRows)
    for (Eigen::Index i = 0; i < images; ++i) {
      QuantizeActivations(in.row(i).data(), width, plan.inverse_activation_scale,
                          ws.x_q.data() + i * width);
    }
  }
  clock.Lap(plan.first_step);
  ws.acc.resize(static_cast<size_t>(layer_rows) * out_features);
  absl::StatusOr<fpga::OpCounts> called = plan.layer->Forward(ws.x_q, layer_rows, {}, ws.acc);
  if (!called.ok()) return called.status();
  counts += *called;
  clock.Lap(plan.first_step + 1);

  if (plan.fused_pool > 0) {
    const Eigen::Index rows_per_image = layer_rows / images;
    out.resize(images, plans_[&plan - plans_.data() + 2].stage->output_shape().size());
    for (Eigen::Index i = 0; i < images; ++i) {
      DequantizeSplitReluPool(plan, ws.acc.data() + i * rows_per_image * out_features,
                              out.row(i).data());
    }
    clock.Lap(plan.first_step + 2);
    return absl::OkStatus();
  }
  // Dequantise into the stage's output layout.
  const bool concat =
      plan.kind == Kind::kExpand && static_cast<const ExpandStage&>(*plan.stage).concat();
  out.resize(images, plan.stage->output_shape().size());
  const Eigen::Index offset = concat ? in.cols() : 0;
  // Per image: layer_rows / images rows of out_features accumulators, contiguous in `out`'s row
  // (conv: pixels x filters = HWC).
  const Eigen::Index rows_per_image = layer_rows / images;
  const float* dequantize = plan.dequantize.data();
#pragma omp parallel for schedule(static) if (images >= kParallelRows)
  for (Eigen::Index i = 0; i < images; ++i) {
    if (concat) out.row(i).head(in.cols()) = in.row(i);
    const int32_t* acc = ws.acc.data() + i * rows_per_image * out_features;
    float* dst = out.row(i).data() + offset;
    for (Eigen::Index r = 0; r < rows_per_image; ++r, acc += out_features, dst += out_features) {
      for (int o = 0; o < out_features; ++o) dst[o] = static_cast<float>(acc[o]) * dequantize[o];
    }
  }
  clock.Lap(plan.first_step + 2);
  return absl::OkStatus();
}

void QuantizedLowerTier::DequantizeSplitReluPool(const StagePlan& conv, const int32_t* sums,
                                                 float* out) const {
  const Shape& input = conv.stage->input_shape();
  const int filters = conv.stage->output_shape().channels;
  const CellGrid grid{.height = input.height, .width = input.width, .size = conv.fused_pool};
  const float* dequantize = conv.dequantize.data();
  // The filter counts of the shipped specs (24) and their neighbours get unrolled loops.
  switch (filters) {
    case 16:
      return PoolCells<16>(grid, filters, sums, dequantize, out);
    case 24:
      return PoolCells<24>(grid, filters, sums, dequantize, out);
    case 32:
      return PoolCells<32>(grid, filters, sums, dequantize, out);
    case 48:
      return PoolCells<48>(grid, filters, sums, dequantize, out);
    default:
      return PoolCells<0>(grid, filters, sums, dequantize, out);
  }
}

absl::Status QuantizedLowerTier::RunStage(size_t s, const MatrixF& in, MatrixF& out, Workspace& ws,
                                          fpga::OpCounts& counts) const {
  const StagePlan& plan = plans_[s];
  if (plan.kind != Kind::kHost) return RunLayer(plan, in, out, ws, counts);
  StepClock clock(ws.step_seconds);
  plan.stage->Apply(in, out);
  clock.Lap(plan.first_step);
  return absl::OkStatus();
}

absl::Status QuantizedLowerTier::RunPerImageStages(const MatrixF& images, MatrixF& out,
                                                   Workspace& ws, fpga::OpCounts& counts) const {
  const Eigen::Index width = plans_[per_image_stages_ - 1].stage->output_shape().size();
  out.resize(images.rows(), width);
  ws.outputs.resize(plans_.size());
  for (Eigen::Index i = 0; i < images.rows(); ++i) {
    ws.image = images.row(i);
    const MatrixF* y = &ws.image;
    for (size_t s = 0; s < per_image_stages_; ++s) {
      if (plans_[s].fused) continue;
      if (absl::Status status = RunStage(s, *y, ws.outputs[s], ws, counts); !status.ok()) {
        return status;
      }
      y = &ws.outputs[s];
    }
    out.row(i) = y->row(0);
  }
  return absl::OkStatus();
}

absl::Status QuantizedLowerTier::RunChunk(const MatrixF& images, MatrixF& out, Workspace& ws,
                                          fpga::OpCounts& counts) const {
  ws.outputs.resize(plans_.size());
  const MatrixF* x = &images;
  if (per_image_stages_ > 0) {
    if (absl::Status s = RunPerImageStages(images, ws.per_image_out, ws, counts); !s.ok()) return s;
    x = &ws.per_image_out;
  }
  return RunLaterStages(*x, out, ws, counts);
}

absl::Status QuantizedLowerTier::RunLaterStages(const MatrixF& in, MatrixF& out, Workspace& ws,
                                                fpga::OpCounts& counts) const {
  size_t last = plans_.size();
  while (last > per_image_stages_ && plans_[last - 1].fused) --last;
  if (last == per_image_stages_) {
    out = in;
    return absl::OkStatus();
  }
  const MatrixF* x = &in;
  for (size_t s = per_image_stages_; s < last; ++s) {
    if (plans_[s].fused) continue;
    // The last stage writes the caller's matrix itself: a batch's features (64 x 8,496 floats at
    // the default spec) are not copied on their way out.
    MatrixF& into = s + 1 == last ? out : ws.outputs[s];
    if (absl::Status status = RunStage(s, *x, into, ws, counts); !status.ok()) return status;
    x = &into;
  }
  return absl::OkStatus();
}

absl::Status QuantizedLowerTier::RunChunkOnAllThreads(const MatrixF& images, MatrixF& out,
                                                      std::span<Workspace> workspaces,
                                                      fpga::OpCounts& counts) const {
  Workspace& ws = workspaces[0];
  ws.outputs.resize(plans_.size());
  const MatrixF* x = &images;
  if (per_image_stages_ > 0) {
    // Images spread over the threads, a few at a time, dynamically: each image's stages are
    // independent and cheap, and a thread slowed by other processes takes fewer.
    const Eigen::Index n = images.rows();
    const int threads = static_cast<int>(workspaces.size());
    ws.per_image_out.resize(n, plans_[per_image_stages_ - 1].stage->output_shape().size());
    std::vector<fpga::OpCounts> thread_counts(threads);
    std::vector<absl::Status> statuses(threads);
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (n > 1)
    for (Eigen::Index i = 0; i < n; ++i) {
      const int t = omp_get_thread_num();
      if (!statuses[t].ok()) continue;
      statuses[t] = RunPerImageStages(images.middleRows(i, 1), workspaces[t].image_out,
                                      workspaces[t], thread_counts[t]);
      if (statuses[t].ok()) ws.per_image_out.row(i) = workspaces[t].image_out.row(0);
    }
    for (int t = 0; t < threads; ++t) {
      if (!statuses[t].ok()) return statuses[t];
      counts += thread_counts[t];
    }
    x = &ws.per_image_out;
  }
  // The dense layers: the backend parallelises its own call (fpga::BackendOptions::cpu_threads).
  return RunLaterStages(*x, out, ws, counts);
}

absl::StatusOr<MatrixF> QuantizedLowerTier::Features(const MatrixF& images,
                                                     fpga::OpCounts* counts) const {
  return ProfiledFeatures(images, counts, nullptr);
}

absl::StatusOr<MatrixF> QuantizedLowerTier::ProfiledFeatures(const MatrixF& images,
                                                             fpga::OpCounts* counts,
                                                             StepTimes* times) const {
  if (images.cols() != input_size_) {
    return absl::InvalidArgumentError(absl::StrCat("quantised lower tier: images have ",
                                                   images.cols(), " values, the input has ",
                                                   input_size_));
  }
  if (times != nullptr && times->names.empty()) {
    times->names = step_names_;
    times->seconds.assign(step_names_.size(), 0.0);
  }
  const Eigen::Index n = images.rows();
  const int threads = omp_get_max_threads();
  const Eigen::Index chunks = (n + kImagesPerChunk - 1) / kImagesPerChunk;
  MatrixF features(n, feature_size_);
  fpga::OpCounts total;
  // Per thread: its step times, added to `times` at the end.
  std::vector<std::vector<double>> seconds(threads, std::vector<double>(step_names_.size(), 0.0));
  auto add_times = [&] {
    if (times == nullptr) return;
    for (const std::vector<double>& thread : seconds) {
      for (size_t i = 0; i < thread.size(); ++i) times->seconds[i] += thread[i];
    }
  };
  if (chunks < threads) {
    // Fewer chunks than threads (a serving batch): each chunk on every thread, image by image
    // through the convolutions, then the dense layers' backend calls on every core. (A chunk per
    // thread would leave cores idle, and two half-batches each stream the whole dense weights.)
    // The calling thread's workspaces, kept between calls: a serving worker calls with batch
    // after batch, and fresh buffers cost an allocation (and page faults) per stage per call.
    thread_local std::vector<Workspace> workspaces;
    workspaces.resize(std::max<size_t>(workspaces.size(), threads));
    for (int t = 0; t < threads; ++t) {
      workspaces[t].step_seconds = times != nullptr ? &seconds[t] : nullptr;
    }
    MatrixF chunk_out;
    for (Eigen::Index chunk = 0; chunk < chunks; ++chunk) {
      const Eigen::Index start = chunk * kImagesPerChunk;
      const Eigen::Index rows = std::min(kImagesPerChunk, n - start);
      // A batch of one chunk (always, on 2 cores) is written straight into `features`.
      const std::span<Workspace> mine(workspaces.data(), threads);
      absl::Status s = chunks == 1 ? RunChunkOnAllThreads(images, features, mine, total)
                                   : RunChunkOnAllThreads(images.middleRows(start, rows), chunk_out,
                                                          mine, total);
      if (!s.ok()) return s;
      if (chunks > 1) features.middleRows(start, rows) = chunk_out;
    }
    add_times();
    if (counts != nullptr) *counts = total;
    return features;
  }
  // Many chunks (training, large requests): a chunk per thread at a time, each run serially.
  absl::Status status;
#pragma omp parallel num_threads(threads)
  {
    Workspace ws;
    if (times != nullptr) ws.step_seconds = &seconds[omp_get_thread_num()];
    MatrixF chunk_out;
    fpga::OpCounts local;
    absl::Status local_status;
#pragma omp for schedule(dynamic)
    for (Eigen::Index chunk = 0; chunk < chunks; ++chunk) {
      if (!local_status.ok()) continue;
      const Eigen::Index start = chunk * kImagesPerChunk;
      const Eigen::Index rows = std::min(kImagesPerChunk, n - start);
      local_status = RunChunk(images.middleRows(start, rows), chunk_out, ws, local);
      if (local_status.ok()) features.middleRows(start, rows) = chunk_out;
    }
#pragma omp critical
    {
      total += local;
      if (status.ok()) status = local_status;
    }
  }
  if (!status.ok()) return status;
  add_times();
  if (counts != nullptr) *counts = total;
  return features;
}

int QuantizedLowerTier::QuantizedStageCount(const LowerTier& tier) {
  int count = 0;
  for (const auto& stage : tier.stages()) count += StageWeights(*stage) != nullptr;
  return count;
}

uint64_t QuantizedLowerTier::Int8MacsPerSample() const {
  uint64_t macs = 0;
  for (const StagePlan& plan : plans_) {
    if (plan.kind != Kind::kHost) macs += plan.stage->MacsPerSample();
  }
  return macs;
}

std::vector<std::string> QuantizedLowerTier::DescribeQuantization() const {
  std::vector<std::string> lines;
  for (const QuantizedStageInfo& info : infos_) {
    lines.push_back(absl::StrFormat(
        "stage %d %s: int8 %d -> %d (%d rows/image), s_x %.4g (max |x| %.4g, %.4f%% "
        "clipped), s_w %.3g..%.3g",
        info.stage + 1, info.kind, info.in_features, info.out_features, info.rows_per_sample,
        info.activation_scale, info.max_abs_activation, 100 * info.clipped_fraction,
        info.min_weight_scale, info.max_weight_scale));
  }
  return lines;
}

}  // namespace strata::model
