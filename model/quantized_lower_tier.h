// The frozen lower tier with its matrix products in int8 on an FPGA backend (fpga/backend.h).
//
// Every stage with a matrix product becomes one int8 dense layer resident on the backend:
//   conv    the im2col patch GEMM: (images * H * W) rows of patch*patch*C taps -> F filters;
//   expand  relu(x P + b) (the concatenated copy of x stays float on the host);
//   elm_ae  x beta^T (ReLU if the stage has it).
// The other stages (split_relu, pool, sqrt, standardise) run in float on the host, exactly as in
// LowerTier, between the layers.
//
// Quantisation is symmetric (zero points 0), as the kernels require (model/int8_quantization.h):
//   weights      per output channel o: s_w[o] = max_i |w[o][i]| / 127, w_q = round(w / s_w[o]);
//   activations  per tensor (the stage's input): s_x = percentile(|x|) / 127 over the values the
//                calibration images produce there in the float lower tier (ActivationCalibration);
//                x_q = clamp(round(x / s_x), -127, 127) on the host;
//   bias         b_q[o] = round(b[o] / (s_x s_w[o])) in int32;
//   output       the layer runs in raw-output mode (int32 accumulators, ReLU applied on the card)
//                and the host dequantises: y[o] = acc[o] * s_x * s_w[o].
// The accumulation is exact integer arithmetic, so every backend (cpu, emu, xrt) gives the same
// features bit for bit; the only error against the float tier is the rounding of x and w.
// docs/fpga.md ("The quantised lower tier") gives the measured accuracy.
#ifndef STRATA_MODEL_QUANTIZED_LOWER_TIER_H_
#define STRATA_MODEL_QUANTIZED_LOWER_TIER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"
#include "model/feature_extractor.h"
#include "model/lower_tier.h"
#include "model/stages.h"
#include "model/tensor.h"

namespace strata::model {

// How the per-tensor activation scales are chosen from the calibration images.
struct ActivationCalibration {
  // s_x = (this percentile of |x| over every calibration value at the stage's input) / 127, in
  // (0, 100]; 100 takes the maximum (no clipping). Larger values clip fewer outliers but round the
  // bulk of the values more coarsely.
  double percentile = 99.99;
};

// What calibration chose for one quantised stage (for logs and tests).
struct QuantizedStageInfo {
  int stage = 0;        // index in LowerTier::stages()
  std::string kind;     // "conv", "expand" or "elm_ae"
  int in_features = 0;  // of the int8 layer (patch taps for conv)
  int out_features = 0;
  int rows_per_sample = 1;       // layer rows per image: H * W for conv, 1 otherwise
  float activation_scale = 0;    // s_x
  float max_abs_activation = 0;  // max |x| over the calibration values
  double clipped_fraction = 0;   // calibration values with |x| > 127.5 s_x (saturated)
  float min_weight_scale = 0;    // min and max of s_w over the output channels
  float max_weight_scale = 0;
};

// The activation scales calibration chose, one entry per quantised stage (conv / expand / elm_ae,
// in stage order): everything an int8 lower tier needs beyond the float stages' parameters (the
// int8 weights and biases are a deterministic function of the float weights and these scales).
// Stored in model bundles (docs/bundle-format.md, "lower.int8.*") so a server can run the int8
// lower tier without calibration images.
struct Int8Calibration {
  double percentile = 0;                   // ActivationCalibration::percentile used
  uint64_t calibration_images = 0;         // images the scales were measured on
  std::vector<float> activation_scales;    // s_x, > 0 and finite
  std::vector<float> max_abs_activations;  // max |x| over the calibration values (informational)
  std::vector<double> clipped_fractions;   // values saturated at s_x (informational), in [0, 1]

  bool empty() const { return activation_scales.empty(); }
};

// The int8-on-a-backend FeatureExtractor of an image lower tier.
// Immutable after Calibrate / FromCalibration. Thread-safe: Features is const and may be called
// concurrently (the backend's DenseInt8Layer::Forward is thread-safe; xrt serialises calls on its
// compute unit).
// Ownership: owns its int8 layers (resident on the backend) and shares ownership of the float
// LowerTier whose host stages it runs between them, so it may outlive every other holder of that
// tier. The backend is not owned and must outlive this object.
class QuantizedLowerTier final : public FeatureExtractor {
 public:
  // Quantises `tier` for `backend`: loads one int8 layer per conv / expand / elm_ae stage and
  // calibrates their activation scales on `calibration_images` (one image per row,
  // tier.input_size() values; a couple of thousand training images suffice). Memory: 4 bytes per
  // calibration value, i.e. calibration rows x (sum of the quantised stages' input sizes) x 4 B.
  // Errors: INVALID_ARGUMENT if the images are empty, have the wrong width or hold NaN / Inf, or a
  // layer does not fit the kernel's limits (the message names the stage); FAILED_PRECONDITION if
  // the backend has no int8 dense layer; the backend's errors from loading a layer.
  static absl::StatusOr<QuantizedLowerTier> Calibrate(
      std::shared_ptr<const LowerTier> tier, const MatrixF& calibration_images,
      fpga::Backend& backend, const ActivationCalibration& calibration = {});

  // Only the calibration pass of Calibrate: the activation scales of `tier`'s quantised stages on
  // `calibration_images`, no backend needed. Same errors as Calibrate's for the images and the
  // percentile. Deterministic for the same inputs.
  static absl::StatusOr<Int8Calibration> CalibrateActivations(
      const LowerTier& tier, const MatrixF& calibration_images,
      const ActivationCalibration& calibration = {});

  // Quantises `tier` for `backend` with stored scales (e.g. from a bundle): the same layers
  // Calibrate loads when its calibration pass yields `calibration`, so the features are bit-exact
  // with those of the calibrating object. INVALID_ARGUMENT if the number of scales differs from
  // the number of quantised stages of `tier` or a scale is not positive and finite; otherwise the
  // errors of Calibrate after its calibration pass.
  static absl::StatusOr<QuantizedLowerTier> FromCalibration(std::shared_ptr<const LowerTier> tier,
                                                            const Int8Calibration& calibration,
                                                            fpga::Backend& backend);

  // The number of stages of `tier` that run as int8 layers (conv, expand, elm_ae): the length of
  // Int8Calibration::activation_scales for it.
  static int QuantizedStageCount(const LowerTier& tier);

  QuantizedLowerTier(QuantizedLowerTier&&) = default;
  QuantizedLowerTier& operator=(QuantizedLowerTier&&) = default;
  ~QuantizedLowerTier() override;

  // Features for a batch of images: images.rows() x feature_size(), the same layout as
  // LowerTier::Features. If `counts` is not null it receives the sum of the OpCounts of every
  // backend call made (the int8 work; the host's float stages and (de)quantisation are not
  // counted). Large batches are split into chunks of images run on the OpenMP threads.
  // INVALID_ARGUMENT if images.cols() != input_size(); the backend's errors (xrt) otherwise.
  absl::StatusOr<MatrixF> Features(const MatrixF& images,
                                   fpga::OpCounts* counts = nullptr) const override;

  // Where Features' time goes: one step per host stage and three per int8 layer (quantisation,
  // with the conv's im2col; the backend call; dequantisation), in CPU seconds summed over the
  // threads (outside a parallel region, the process's: a backend call's workers too). For
  // benchmarks (strata-bench-lower): timing costs a CPU-clock read (a system call) per step and
  // image.
  struct StepTimes {
    std::vector<std::string> names;
    std::vector<double> seconds;
  };
  // Features(images, counts), also adding each step's time to `times` (sized on first use).
  absl::StatusOr<MatrixF> ProfiledFeatures(const MatrixF& images, fpga::OpCounts* counts,
                                           StepTimes* times) const;

  InputKind input_kind() const override { return InputKind::Image(lower_->input_shape()); }
  int input_size() const override { return input_size_; }
  int feature_size() const override { return feature_size_; }
  const std::string& device() const override { return device_; }
  fpga::Backend* backend() const override { return backend_; }
  // The float tier's stages (what ModelInfo lists); DescribeQuantization() says what int8 changed.
  std::vector<std::string> Describe() const override { return lower_->Describe(); }
  const LowerTier* lower_tier() const override { return lower_.get(); }
  // int8 multiply-accumulates per image: the sum of the quantised stages' MacsPerSample().
  uint64_t Int8MacsPerSample() const;
  const std::vector<QuantizedStageInfo>& quantized_stages() const { return infos_; }
  // The scales this object runs with (to store them in a bundle).
  const Int8Calibration& calibration() const { return calibration_; }
  // One line per quantised stage (scales, clipping), for logs.
  std::vector<std::string> DescribeQuantization() const;

 private:
  enum class Kind { kHost, kConv, kExpand, kElm };
  // One stage of the pipeline: a host float stage, or an int8 layer with its scales.
  struct StagePlan {
    const Stage* stage = nullptr;
    Kind kind = Kind::kHost;
    std::unique_ptr<fpga::DenseInt8Layer> layer;  // null for kHost
    float inverse_activation_scale = 0;           // 1 / s_x
    std::vector<float> dequantize;                // s_x * s_w[o], per output channel
    int first_step = 0;                           // its first entry in StepTimes
    // A conv followed by split_relu and pool: its dequantisation computes the pool's output in
    // one pass over the int32 sums (pool cell size here, 0 otherwise), and those two stages are
    // `fused` (skipped). The same float operations in the same order, so the same bits.
    int fused_pool = 0;
    bool fused = false;
  };
  // Scratch buffers of one thread.
  struct Workspace;

  QuantizedLowerTier() = default;
  // Quantises stage `s` (a conv, expand or ELM stage with `weights`) with activation scale
  // `scale_index` of `calibration` and loads it on `backend`, filling `plan`; returns what
  // DescribeQuantization reports of it.
  static absl::StatusOr<QuantizedStageInfo> PlanStage(size_t s, const Stage& stage,
                                                      const MatrixF& weights,
                                                      const Int8Calibration& calibration,
                                                      size_t scale_index, fpga::Backend& backend,
                                                      StagePlan& plan);
  // Marks every conv -> split_relu -> pool run of plans for the fused dequantisation.
  void FuseSplitReluPool();
  // Names the profiling steps and sets each plan's first_step.
  void NameSteps();
  // Runs a chunk of images through every stage into `out`; adds the backend calls' counts to
  // `counts`. The first per_image_stages_ stages run image by image.
  absl::Status RunChunk(const MatrixF& images, MatrixF& out, Workspace& workspace,
                        fpga::OpCounts& counts) const;
  // The same on as many threads as `workspaces` (one each): the per-image stages spread over the
  // threads, the later layers' backend calls parallel inside.
  absl::Status RunChunkOnAllThreads(const MatrixF& images, MatrixF& out,
                                    std::span<Workspace> workspaces, fpga::OpCounts& counts) const;
  // The first per_image_stages_ stages, image by image, into `out` (one row per image).
  absl::Status RunPerImageStages(const MatrixF& images, MatrixF& out, Workspace& workspace,
                                 fpga::OpCounts& counts) const;
  // Runs stage plans_[s] on `in` into `out` (not `in`).
  absl::Status RunStage(size_t s, const MatrixF& in, MatrixF& out, Workspace& workspace,
                        fpga::OpCounts& counts) const;
  // The stages after the per-image ones on `in` (rows of their input), the last one writing `out`
  // (not `in`).
  absl::Status RunLaterStages(const MatrixF& in, MatrixF& out, Workspace& workspace,
                              fpga::OpCounts& counts) const;
  // A conv's int32 sums of one image (pixels x filters) dequantised, split into +/- ReLU and
  // average-pooled into `out` (the pool stage's output for that image).
  void DequantizeSplitReluPool(const StagePlan& conv, const int32_t* sums, float* out) const;
  // Runs one quantised stage on `in` (rows of the stage's input) into `out`.
  absl::Status RunLayer(const StagePlan& plan, const MatrixF& in, MatrixF& out,
                        Workspace& workspace, fpga::OpCounts& counts) const;

  std::shared_ptr<const LowerTier> lower_;
  fpga::Backend* backend_ = nullptr;
  std::string device_;
  std::vector<StagePlan> plans_;
  // Leading stages run image by image: on a host backend, every stage before the first dense
  // (expand / elm_ae) layer, so that one image's feature maps (the conv's 784 x 24 int32 sums, the
  // +/-ReLU's 784 x 48 floats) stay in cache between stages instead of a chunk's streaming
  // through memory; 0 on a card, where each call crosses PCIe.
  size_t per_image_stages_ = 0;
  std::vector<std::string> step_names_;
  std::vector<QuantizedStageInfo> infos_;
  Int8Calibration calibration_;
  int input_size_ = 0;
  int feature_size_ = 0;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_QUANTIZED_LOWER_TIER_H_
