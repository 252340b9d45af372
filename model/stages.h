// The lower tier's stages. Each maps a batch of rows (one sample per row, laid out height x width x
// channels, channels fastest) to a batch of rows, and each fitted parameter comes from a single
// closed-form solve: an eigen-decomposition (conv), a ridge solve (elm_ae), moments (standardise)
// or nothing at all (random or parameter-free stages). No stage iterates.
#ifndef STRATA_MODEL_STAGES_H_
#define STRATA_MODEL_STAGES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "base/record_file.h"
#include "model/architecture.h"
#include "model/tensor.h"

namespace strata::model {

struct Shape {
  int height = 1;
  int width = 1;
  int channels = 1;
  int size() const { return height * width * channels; }
};

// A stage's training data: all training rows as they arrive at the stage's input, produced on
// demand by the (already fitted) stages before it.
class FitData {
 public:
  virtual ~FitData() = default;
  virtual Eigen::Index rows() const = 0;
  // Calls `visit` on consecutive chunks that together hold every training row, in order; stops at
  // the first error.
  virtual absl::Status ForEachChunk(
      const std::function<absl::Status(const MatrixF&)>& visit) const = 0;
  // The rows with the given indices, in that order.
  virtual MatrixF Rows(std::span<const Eigen::Index> indices) const = 0;
};

class Stage {
 public:
  virtual ~Stage() = default;

  const Shape& input_shape() const { return input_; }
  const Shape& output_shape() const { return output_; }
  // One line for ModelInfo and logs.
  virtual std::string Describe() const = 0;

  // Fits the parameters in one step from `data`. Stages without learned parameters do nothing.
  virtual absl::Status Fit(const FitData& data, std::mt19937_64& rng) { return absl::OkStatus(); }

  // out = stage(in); in has input_shape().size() columns. Single-threaded (the lower tier runs
  // chunks in parallel). `out` is resized.
  virtual void Apply(const MatrixF& in, MatrixF& out) const = 0;

  // Multiply-accumulates per sample of Apply's matrix products (for the energy meter).
  virtual uint64_t MacsPerSample() const { return 0; }
  // Bytes of the parameters Apply's matrix products stream, at 4 B per fp32 value (for the energy
  // meter: each chunk of rows reads them once, LowerTier::Counts). 0 for stages without them.
  virtual uint64_t ParameterBytes() const { return 0; }

  // Parameters, stored under `prefix` in a record file.
  virtual void Save(base::RecordFileWriter& writer, const std::string& prefix) const {}
  virtual absl::Status Load(const base::RecordFileReader& reader, const std::string& prefix) {
    return absl::OkStatus();
  }

 protected:
  Stage(Shape input, Shape output) : input_(input), output_(output) {}

 private:
  Shape input_, output_;
};

// Builds an unfitted stage of `spec.kind` on input of shape `input`. INVALID_ARGUMENT naming the
// spec line and parameter for an unknown parameter, a malformed or out-of-range value, or an input
// shape the stage cannot take.
absl::StatusOr<std::unique_ptr<Stage>> MakeStage(const StageSpec& spec, const Shape& input);

// ---- the stages ----------------------------------------------------------------------------------

// conv patch=K filters=F [pca_images=5000] [center=1]: K x K x C patches around every pixel (zero
// padding, stride 1), each optionally made zero-mean; the filters are the top F eigenvectors of the
// patch covariance, whitened by 1/sqrt(eigenvalue + 0.01). One symmetric eigen-solve. Output
// H x W x F.
class ConvStage final : public Stage {
 public:
  ConvStage(Shape input, int patch, int filters, int pca_images, bool center);
  std::string Describe() const override;
  absl::Status Fit(const FitData& data, std::mt19937_64& rng) override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
  uint64_t MacsPerSample() const override;
  uint64_t ParameterBytes() const override;
  void Save(base::RecordFileWriter& writer, const std::string& prefix) const override;
  absl::Status Load(const base::RecordFileReader& reader, const std::string& prefix) override;

  int patch() const { return patch_; }
  // (patch*patch*C) x F; row (dy*patch + dx)*C + c.
  const MatrixF& filters() const { return filters_; }
  // The patches of one sample, one row per pixel: (H*W) x (patch*patch*C).
  void Patches(const float* sample, MatrixF& out) const;
  // The same patches of a sample already quantised to int8 (symmetric quantisation maps the zero
  // padding to 0, so these equal the quantised float patches): (H*W) rows of patch*patch*C bytes,
  // contiguous at `out`.
  void PatchesInt8(const int8_t* sample, int8_t* out) const;

 private:
  int patch_, pca_images_;
  bool center_;
  MatrixF filters_;
};

// split_relu: [max(x, 0), max(-x, 0)] per pixel: C -> 2C channels.
class SplitReluStage final : public Stage {
 public:
  explicit SplitReluStage(Shape input);
  std::string Describe() const override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
};

// pool size=S: S x S average pooling with stride S (the remainder rows/columns are dropped).
class PoolStage final : public Stage {
 public:
  PoolStage(Shape input, int size);
  std::string Describe() const override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
  int size() const { return size_; }

 private:
  int size_;
};

// sqrt: sign(x) sqrt(|x|) elementwise (power normalisation of pooled activations).
class SqrtStage final : public Stage {
 public:
  explicit SqrtStage(Shape input);
  std::string Describe() const override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
};

// standardise: (x - mean) / (std + 1e-6) per feature, with the training set's moments.
class StandardiseStage final : public Stage {
 public:
  explicit StandardiseStage(Shape input);
  std::string Describe() const override;
  absl::Status Fit(const FitData& data, std::mt19937_64& rng) override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
  void Save(base::RecordFileWriter& writer, const std::string& prefix) const override;
  absl::Status Load(const base::RecordFileReader& reader, const std::string& prefix) override;

  const VectorF& mean() const { return mean_; }
  const VectorF& inv_std() const { return inv_std_; }

 private:
  VectorF mean_, inv_std_;
};

// expand units=U [bias_scale=0.3] [concat=1]: a fixed random ReLU layer max(x P + b, 0),
// P ~ N(0, 1/n_in), b ~ N(0, bias_scale^2); with concat=1 the output is [x, relu(x P + b)].
class ExpandStage final : public Stage {
 public:
  ExpandStage(Shape input, int units, float bias_scale, bool concat);
  std::string Describe() const override;
  absl::Status Fit(const FitData& data, std::mt19937_64& rng) override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
  uint64_t MacsPerSample() const override;
  uint64_t ParameterBytes() const override;
  void Save(base::RecordFileWriter& writer, const std::string& prefix) const override;
  absl::Status Load(const base::RecordFileReader& reader, const std::string& prefix) override;

  bool concat() const { return concat_; }
  const MatrixF& projection() const { return projection_; }  // n_in x U
  const VectorF& bias() const { return bias_; }

 private:
  int units_;
  float bias_scale_;
  bool concat_;
  MatrixF projection_;
  VectorF bias_;
};

// elm_ae units=U [lambda=1] [relu=1]: an extreme-learning-machine autoencoder layer. A random
// hidden layer H = tanh(x A + b) (A ~ N(0, 1/n_in), b ~ N(0, 1)); the decoder
// beta = (H^T H + lambda I)^-1 H^T X is one ridge solve over all training rows; the stage outputs
// x beta^T (through a ReLU with relu=1): the input projected on the learned U-dimensional basis.
class ElmAutoencoderStage final : public Stage {
 public:
  ElmAutoencoderStage(Shape input, int units, double lambda, bool relu);
  std::string Describe() const override;
  absl::Status Fit(const FitData& data, std::mt19937_64& rng) override;
  void Apply(const MatrixF& in, MatrixF& out) const override;
  uint64_t MacsPerSample() const override;
  uint64_t ParameterBytes() const override;
  void Save(base::RecordFileWriter& writer, const std::string& prefix) const override;
  absl::Status Load(const base::RecordFileReader& reader, const std::string& prefix) override;

  const MatrixF& encoder() const { return encoder_; }  // n_in x U: beta^T
  bool relu() const { return relu_; }                  // outputs max(x beta^T, 0)

 private:
  int units_;
  double lambda_;
  bool relu_;
  MatrixF encoder_;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_STAGES_H_
