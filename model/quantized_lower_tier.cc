#include "model/quantized_lower_tier.h"

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
    return absl::InvalidArgumentError(absl::StrCat(
        "quantised lower tier: ", k, " activation scales for ", quantized,
        " quantised stages (conv / expand / elm_ae)"));
  }
  for (size_t i = 0; i < k; ++i) {
    const float scale = calibration.activation_scales[i];
    if (!(scale > 0) || !std::isfinite(scale)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "quantised lower tier: activation scale ", i, " is ", scale,
          ", expected a positive finite value"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct QuantizedLowerTier::Workspace {
  MatrixF a, b, patches;
  std::vector<int8_t> x_q;
  std::vector<int32_t> acc;
};

QuantizedLowerTier::~QuantizedLowerTier() = default;

absl::StatusOr<QuantizedLowerTier> QuantizedLowerTier::Calibrate(
    std::shared_ptr<const LowerTier> tier, const MatrixF& calibration_images, fpga::Backend& backend,
    const ActivationCalibration& calibration) {
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
    return absl::InvalidArgumentError(absl::StrCat(
        "quantised lower tier: calibration images have ", calibration_images.cols(),
        " values, the lower tier's input is ", input.height, "x", input.width, "x", input.channels,
        " = ", tier.input_size()));
  }
  if (calibration_images.rows() < 1) {
    return absl::InvalidArgumentError("quantised lower tier: no calibration images");
  }
  if (!calibration_images.allFinite()) {
    return absl::InvalidArgumentError(
        "quantised lower tier: calibration images contain NaN or Inf");
  }
  if (!(calibration.percentile > 0 && calibration.percentile <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantised lower tier: activation percentile ", calibration.percentile,
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

absl::StatusOr<QuantizedLowerTier> QuantizedLowerTier::FromCalibration(
    std::shared_ptr<const LowerTier> lower, const Int8Calibration& calibration,
    fpga::Backend& backend) {
  const LowerTier& tier = *lower;
  const auto& stages = tier.stages();
  const size_t num_stages = stages.size();
  const size_t k = calibration.activation_scales.size();
  if (absl::Status scales =
          CheckActivationScales(calibration, static_cast<size_t>(QuantizedStageCount(tier)));
      !scales.ok()) {
    return scales;
  }
  auto informational = [&](const auto& values, size_t i) {
    return values.size() == k ? values[i] : 0;
  };

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
    StagePlan& plan = q.plans_[s];
    const Stage& stage = *stages[s];
    const int in_features = static_cast<int>(weights->rows());
    const int out_features = static_cast<int>(weights->cols());
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

    // Activation scale.
    const size_t index = next_scale++;
    const float activation_scale = calibration.activation_scales[index];
    info.activation_scale = activation_scale;
    info.max_abs_activation = informational(calibration.max_abs_activations, index);
    info.clipped_fraction = informational(calibration.clipped_fractions, index);
    plan.inverse_activation_scale = 1.0f / activation_scale;

    // Per-output-channel weight scales, int8 weights and the int32 bias.
    WeightQuantization quantized;
    if (absl::Status q = QuantizeDenseWeights(
            *weights, bias, activation_scale,
            absl::StrFormat("quantised lower tier stage %d (%s)", s + 1, info.kind), spec,
            quantized);
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
    q.infos_.push_back(std::move(info));
  }
  return q;
}

absl::Status QuantizedLowerTier::RunLayer(const StagePlan& plan, const MatrixF& in, MatrixF& out,
                                          Workspace& ws, fpga::OpCounts& counts) const {
  const fpga::DenseInt8Spec& spec = plan.layer->spec();
  const int out_features = spec.out_features;
  const Eigen::Index images = in.rows();
  int layer_rows = static_cast<int>(images);
  if (plan.kind == Kind::kConv) {
    const auto& conv = static_cast<const ConvStage&>(*plan.stage);
    const Eigen::Index pixels =
        static_cast<Eigen::Index>(conv.input_shape().height) * conv.input_shape().width;
    layer_rows = static_cast<int>(images * pixels);
    ws.x_q.resize(static_cast<size_t>(layer_rows) * spec.in_features);
    const size_t per_image = static_cast<size_t>(pixels) * spec.in_features;
    for (Eigen::Index i = 0; i < images; ++i) {
      // Patches then quantise: rounding is elementwise and the zero padding stays 0, so this
      // equals patches of the quantised image.
      conv.Patches(in.row(i).data(), ws.patches);
      QuantizeActivations(ws.patches.data(), per_image, plan.inverse_activation_scale,
                          ws.x_q.data() + i * per_image);
    }
  } else {
    ws.x_q.resize(static_cast<size_t>(in.size()));
    QuantizeActivations(in.data(), ws.x_q.size(), plan.inverse_activation_scale, ws.x_q.data());
  }
  ws.acc.resize(static_cast<size_t>(layer_rows) * out_features);
  absl::StatusOr<fpga::OpCounts> called = plan.layer->Forward(ws.x_q, layer_rows, {}, ws.acc);
  if (!called.ok()) return called.status();
  counts += *called;

  // Dequantise into the stage's output layout.
  const bool concat = plan.kind == Kind::kExpand &&
                      static_cast<const ExpandStage&>(*plan.stage).concat();
  out.resize(images, plan.stage->output_shape().size());
  const Eigen::Index offset = concat ? in.cols() : 0;
  if (concat) out.leftCols(in.cols()) = in;
  // Per image: layer_rows / images rows of out_features accumulators, contiguous in `out`'s row
  // (conv: pixels x filters = HWC).
  const Eigen::Index rows_per_image = layer_rows / images;
  const float* dequantize = plan.dequantize.data();
  for (Eigen::Index i = 0; i < images; ++i) {
    const int32_t* acc = ws.acc.data() + i * rows_per_image * out_features;
    float* dst = out.row(i).data() + offset;
    for (Eigen::Index r = 0; r < rows_per_image; ++r, acc += out_features, dst += out_features) {
      for (int o = 0; o < out_features; ++o) dst[o] = static_cast<float>(acc[o]) * dequantize[o];
    }
  }
  return absl::OkStatus();
}

absl::Status QuantizedLowerTier::RunChunk(const MatrixF& images, MatrixF& out, Workspace& ws,
                                          fpga::OpCounts& counts) const {
  ws.a = images;
  for (const StagePlan& plan : plans_) {
    if (plan.kind == Kind::kHost) {
      plan.stage->Apply(ws.a, ws.b);
    } else if (absl::Status s = RunLayer(plan, ws.a, ws.b, ws, counts); !s.ok()) {
      return s;
    }
    std::swap(ws.a, ws.b);
  }
  out = std::move(ws.a);
  return absl::OkStatus();
}

absl::StatusOr<MatrixF> QuantizedLowerTier::Features(const MatrixF& images,
                                                     fpga::OpCounts* counts) const {
  if (images.cols() != input_size_) {
    return absl::InvalidArgumentError(absl::StrCat("quantised lower tier: images have ",
                                                   images.cols(), " values, the input has ",
                                                   input_size_));
  }
  const Eigen::Index n = images.rows();
  MatrixF features(n, feature_size_);
  fpga::OpCounts total;
  absl::Status status;
  const Eigen::Index chunks = (n + kImagesPerChunk - 1) / kImagesPerChunk;
#pragma omp parallel if (chunks > 1)
  {
    Workspace ws;
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
        info.stage + 1, info.kind, info.in_features, info.out_features,
        info.rows_per_sample, info.activation_scale, info.max_abs_activation,
        100 * info.clipped_fraction, info.min_weight_scale, info.max_weight_scale));
  }
  return lines;
}

}  // namespace strata::model
