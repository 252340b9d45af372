#include "model/stages.h"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata::model {
namespace {

// Regularisers of the PCA fit: added to the patch covariance, and to the eigenvalues before
// whitening, so near-zero directions are not blown up.
constexpr double kCovarianceRidge = 1e-3;
constexpr double kWhiteningEpsilon = 1e-2;

// Reads a stage line's parameters with range checks; Finish() rejects parameters nobody asked for.
class StageParams {
 public:
  explicit StageParams(const StageSpec& spec) : spec_(spec) {}

  int Int(const std::string& key, int fallback, int min, int max) {
    asked_.insert(key);
    auto it = spec_.params.find(key);
    if (it == spec_.params.end()) return fallback;
    int value;
    if (!absl::SimpleAtoi(it->second, &value) || value < min || value > max) {
      Fail(absl::StrCat(key, "=", it->second, ", expected an integer in ", min, "..", max));
      return fallback;
    }
    return value;
  }
  double Double(const std::string& key, double fallback, double min, double max) {
    asked_.insert(key);
    auto it = spec_.params.find(key);
    if (it == spec_.params.end()) return fallback;
    double value;
    if (!absl::SimpleAtod(it->second, &value) || !(value >= min && value <= max)) {
      Fail(absl::StrCat(key, "=", it->second, ", expected a number in ", min, "..", max));
      return fallback;
    }
    return value;
  }
  bool Bool(const std::string& key, bool fallback) { return Int(key, fallback, 0, 1) != 0; }

  // Also reports a shape problem found by the caller.
  void Fail(const std::string& what) {
    if (error_.ok()) {
      error_ = absl::InvalidArgumentError(
          absl::StrCat(spec_.line > 0 ? absl::StrCat("spec line ", spec_.line, ": ") : "",
                       spec_.kind, ": ", what));
    }
  }
  absl::Status Finish() {
    for (const auto& [key, value] : spec_.params) {
      if (!asked_.contains(key)) {
        Fail(
            absl::StrCat("unknown parameter ", key, " (known: ", absl::StrJoin(asked_, ", "), ")"));
      }
    }
    return error_;
  }

 private:
  const StageSpec& spec_;
  std::set<std::string> asked_;
  absl::Status error_;
};

std::string ShapeString(const Shape& s) {
  return absl::StrCat(s.height, "x", s.width, "x", s.channels);
}

// Fills `m` with N(0, scale^2) draws.
template <typename Dense>
void FillNormal(Dense& m, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng) * scale;
}

template <typename Dense>
absl::Status LoadTensor(const base::RecordFileReader& reader, const std::string& name,
                        uint64_t rows, uint64_t cols, Dense& out) {
  if constexpr (Dense::IsVectorAtCompileTime) {
    return reader.Tensor<float>(name, {rows}, out);
  } else {
    return reader.Tensor<float>(name, {rows, cols}, out);
  }
}

// The int8 patches of a zero-padded sample (ConvStage::PatchesInt8): for each pixel, `patch` rows
// of `row_bytes` bytes, `padded_row` bytes apart in `padded`, copied one after another to `out`.
// kRowBytes > 0 fixes row_bytes at compile time, so that each row is a couple of inlined moves
// instead of a memcpy call (a 28x28 image has 3,920 rows of 5 bytes).
template <int kRowBytes>
void CopyPatchRows(const int8_t* padded, int height, int width, int channels, int patch,
                   size_t padded_row, size_t row_bytes, int8_t* out) {
  const size_t bytes = kRowBytes > 0 ? kRowBytes : row_bytes;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const int8_t* src = padded + y * padded_row + static_cast<size_t>(x) * channels;
      for (int dy = 0; dy < patch; ++dy, out += bytes, src += padded_row) {
        std::memcpy(out, src, bytes);
      }
    }
  }
}

}  // namespace

// ---- conv ----------------------------------------------------------------------------------------

ConvStage::ConvStage(Shape input, int patch, int filters, int pca_images, bool center)
    : Stage(input, {input.height, input.width, filters}),
      patch_(patch),
      pca_images_(pca_images),
      center_(center) {}

std::string ConvStage::Describe() const {
  return absl::StrCat("conv ", patch_, "x", patch_, "x", input_shape().channels, " -> ",
                      output_shape().channels,
                      " PCA filters (one eigen-solve of the patch covariance), whitened");
}

void ConvStage::Patches(const float* sample, MatrixF& out) const {
  const int height = input_shape().height, width = input_shape().width;
  const int channels = input_shape().channels, half = patch_ / 2;
  out.resize(static_cast<Eigen::Index>(height) * width, patch_ * patch_ * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      float* row = out.row(static_cast<Eigen::Index>(y) * width + x).data();
      for (int dy = 0; dy < patch_; ++dy) {
        const int sy = y + dy - half;
        for (int dx = 0; dx < patch_; ++dx) {
          const int sx = x + dx - half;
          float* dst = row + (dy * patch_ + dx) * channels;
          if (sy < 0 || sy >= height || sx < 0 || sx >= width) {
            std::fill(dst, dst + channels, 0.0f);
          } else {
            const float* src = sample + (static_cast<size_t>(sy) * width + sx) * channels;
            std::copy(src, src + channels, dst);
          }
        }
      }
    }
  }
}

void ConvStage::PatchesInt8(const int8_t* sample, int8_t* out) const {
  const int height = input_shape().height, width = input_shape().width;
  const int channels = input_shape().channels, half = patch_ / 2;
  // The sample inside a zero border of `half` pixels (and 8 bytes of slack), so that every patch
  // row is one contiguous run of patch * channels bytes.
  const int padded_width = width + 2 * half;
  const size_t row_bytes = static_cast<size_t>(patch_) * channels;
  thread_local std::vector<int8_t> padded;
  padded.assign(static_cast<size_t>(height + 2 * half) * padded_width * channels + 8, 0);
  for (int y = 0; y < height; ++y) {
    std::memcpy(padded.data() + (static_cast<size_t>(y + half) * padded_width + half) * channels,
                sample + static_cast<size_t>(y) * width * channels,
                static_cast<size_t>(width) * channels);
  }
  const size_t padded_row = static_cast<size_t>(padded_width) * channels;
  switch (row_bytes) {  // the common single-channel sizes, as inlined fixed-size moves
    case 3:
      return CopyPatchRows<3>(padded.data(), height, width, channels, patch_, padded_row, 3, out);
    case 5:
      return CopyPatchRows<5>(padded.data(), height, width, channels, patch_, padded_row, 5, out);
    case 7:
      return CopyPatchRows<7>(padded.data(), height, width, channels, patch_, padded_row, 7, out);
    default:
      return CopyPatchRows<0>(padded.data(), height, width, channels, patch_, padded_row, row_bytes,
                              out);
  }
}

absl::Status ConvStage::Fit(const FitData& data, std::mt19937_64& rng) {
  std::vector<Eigen::Index> order(data.rows());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(std::min<size_t>(order.size(), static_cast<size_t>(pca_images_)));
  std::sort(order.begin(), order.end());
  const MatrixF sample = data.Rows(order);

  const int taps = patch_ * patch_ * input_shape().channels;
  Eigen::MatrixXd covariance = Eigen::MatrixXd::Zero(taps, taps);
#pragma omp parallel
  {
    Eigen::MatrixXd local = Eigen::MatrixXd::Zero(taps, taps);
    MatrixF patches;
#pragma omp for schedule(dynamic, 16)
    for (Eigen::Index j = 0; j < sample.rows(); ++j) {
      Patches(sample.row(j).data(), patches);
      if (center_) patches.colwise() -= patches.rowwise().mean();
      const Eigen::MatrixXf gram = patches.transpose() * patches;
      local += gram.cast<double>();
    }
#pragma omp critical
    covariance += local;
  }
  covariance /= static_cast<double>(sample.rows()) * input_shape().height * input_shape().width;
  covariance += kCovarianceRidge * Eigen::MatrixXd::Identity(taps, taps);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(covariance);
  if (eigen.info() != Eigen::Success) {
    return absl::InternalError("conv: the patch covariance eigen-solve failed");
  }
  const int filters = output_shape().channels;
  filters_.resize(taps, filters);
  for (int f = 0; f < filters; ++f) {
    const int column = taps - 1 - f;  // eigenvalues come in increasing order
    Eigen::VectorXd filter = eigen.eigenvectors().col(column) /
                             std::sqrt(eigen.eigenvalues()(column) + kWhiteningEpsilon);
    // With centring, a plain convolution by a zero-mean filter equals filtering mean-removed
    // patches (the top eigenvectors are already orthogonal to the constant patch).
    if (center_) filter.array() -= filter.mean();
    filters_.col(f) = filter.cast<float>();
  }
  return absl::OkStatus();
}

void ConvStage::Apply(const MatrixF& in, MatrixF& out) const {
  const Eigen::Index pixels = static_cast<Eigen::Index>(input_shape().height) * input_shape().width;
  out.resize(in.rows(), output_shape().size());
  MatrixF patches, responses;
  for (Eigen::Index i = 0; i < in.rows(); ++i) {
    Patches(in.row(i).data(), patches);
    responses.noalias() = patches * filters_;  // pixels x filters, row-major = HWC
    std::copy(responses.data(), responses.data() + pixels * filters_.cols(), out.row(i).data());
  }
}

uint64_t ConvStage::MacsPerSample() const {
  return static_cast<uint64_t>(input_shape().height) * input_shape().width * filters_.rows() *
         filters_.cols();
}

uint64_t ConvStage::ParameterBytes() const { return 4 * static_cast<uint64_t>(filters_.size()); }

void ConvStage::Save(base::RecordFileWriter& writer, const std::string& prefix) const {
  writer.Tensor(prefix + "filters", filters_.data(),
                {static_cast<uint64_t>(filters_.rows()), static_cast<uint64_t>(filters_.cols())});
}

absl::Status ConvStage::Load(const base::RecordFileReader& reader, const std::string& prefix) {
  return LoadTensor(reader, prefix + "filters",
                    static_cast<uint64_t>(patch_) * patch_ * input_shape().channels,
                    output_shape().channels, filters_);
}

// ---- split_relu, pool, sqrt ------------------------------------------------------------------------

SplitReluStage::SplitReluStage(Shape input)
    : Stage(input, {input.height, input.width, 2 * input.channels}) {}

std::string SplitReluStage::Describe() const {
  return absl::StrCat("+/-ReLU -> ", output_shape().channels, " channels");
}

void SplitReluStage::Apply(const MatrixF& in, MatrixF& out) const {
  const int c = input_shape().channels;
  const Eigen::Index pixels = static_cast<Eigen::Index>(input_shape().height) * input_shape().width;
  out.resize(in.rows(), output_shape().size());
  for (Eigen::Index i = 0; i < in.rows(); ++i) {
    const float* src = in.row(i).data();
    float* dst = out.row(i).data();
    for (Eigen::Index p = 0; p < pixels; ++p, src += c, dst += 2 * c) {
      for (int k = 0; k < c; ++k) {
        dst[k] = std::max(src[k], 0.0f);
        dst[c + k] = std::max(-src[k], 0.0f);
      }
    }
  }
}

PoolStage::PoolStage(Shape input, int size)
    : Stage(input, {input.height / size, input.width / size, input.channels}), size_(size) {}

std::string PoolStage::Describe() const {
  return absl::StrCat("average pool ", size_, "x", size_, " -> ", ShapeString(output_shape()),
                      " = ", output_shape().size());
}

void PoolStage::Apply(const MatrixF& in, MatrixF& out) const {
  const int width = input_shape().width, c = input_shape().channels;
  const int grid_y = output_shape().height, grid_x = output_shape().width;
  const float scale = 1.0f / static_cast<float>(size_ * size_);
  out.setZero(in.rows(), output_shape().size());
  for (Eigen::Index i = 0; i < in.rows(); ++i) {
    const float* src = in.row(i).data();
    float* dst = out.row(i).data();
    for (int y = 0; y < grid_y * size_; ++y) {
      for (int x = 0; x < grid_x * size_; ++x) {
        const float* pixel = src + (static_cast<size_t>(y) * width + x) * c;
        float* cell = dst + ((y / size_) * grid_x + x / size_) * c;
        for (int k = 0; k < c; ++k) cell[k] += pixel[k];
      }
    }
  }
  out *= scale;
}

SqrtStage::SqrtStage(Shape input) : Stage(input, input) {}

std::string SqrtStage::Describe() const { return "signed square root (power normalisation)"; }

void SqrtStage::Apply(const MatrixF& in, MatrixF& out) const {
  // sign(x) sqrt(|x|), 0 for +-0 and NaN. Written so that it vectorises into vsqrtps, which is
  // correctly rounded like std::sqrt (Eigen's packet sqrt is not: it differs in the last bit):
  // this file is compiled with -fno-math-errno (CMakeLists.txt), without which gcc keeps
  // std::sqrt scalar for errno's sake (measured 4.7 -> 1.1 CPU us per 2,352-value image).
  out.resize(in.rows(), in.cols());
  const float* src = in.data();
  float* dst = out.data();
  for (Eigen::Index i = 0; i < in.size(); ++i) {
    const float x = src[i], root = std::sqrt(std::fabs(x));
    dst[i] = x > 0 ? root : (x < 0 ? -root : 0.0f);
  }
}

// ---- standardise ---------------------------------------------------------------------------------

StandardiseStage::StandardiseStage(Shape input) : Stage(input, input) {}

std::string StandardiseStage::Describe() const {
  return "standardise (training mean and standard deviation)";
}

absl::Status StandardiseStage::Fit(const FitData& data, std::mt19937_64& rng) {
  const int n = input_shape().size();
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(n), sum_squares = Eigen::VectorXd::Zero(n);
  absl::Status status = data.ForEachChunk([&](const MatrixF& chunk) {
    const Eigen::MatrixXd d = chunk.cast<double>();
    sum += d.colwise().sum().transpose();
    sum_squares += d.array().square().colwise().sum().matrix().transpose();
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  const double rows = static_cast<double>(data.rows());
  const Eigen::VectorXd mean = sum / rows;
  const Eigen::VectorXd variance = (sum_squares / rows - mean.cwiseAbs2()).cwiseMax(0.0);
  mean_ = mean.cast<float>();
  inv_std_ = (variance.cwiseSqrt().array() + 1e-6).inverse().matrix().cast<float>();
  return absl::OkStatus();
}

void StandardiseStage::Apply(const MatrixF& in, MatrixF& out) const {
  out = (in.rowwise() - mean_.transpose()).array().rowwise() * inv_std_.transpose().array();
}

void StandardiseStage::Save(base::RecordFileWriter& writer, const std::string& prefix) const {
  writer.Tensor(prefix + "mean", mean_.data(), {static_cast<uint64_t>(mean_.size())});
  writer.Tensor(prefix + "inv_std", inv_std_.data(), {static_cast<uint64_t>(inv_std_.size())});
}

absl::Status StandardiseStage::Load(const base::RecordFileReader& reader,
                                    const std::string& prefix) {
  const uint64_t n = input_shape().size();
  if (absl::Status s = LoadTensor(reader, prefix + "mean", n, 1, mean_); !s.ok()) return s;
  return LoadTensor(reader, prefix + "inv_std", n, 1, inv_std_);
}

// ---- expand --------------------------------------------------------------------------------------

ExpandStage::ExpandStage(Shape input, int units, float bias_scale, bool concat)
    : Stage(input, {1, 1, (concat ? input.size() : 0) + units}),
      units_(units),
      bias_scale_(bias_scale),
      concat_(concat) {}

std::string ExpandStage::Describe() const {
  return absl::StrCat("random ReLU expansion to ", units_, " units",
                      concat_ ? ", concatenated" : "", " -> ", output_shape().size(), " features");
}

absl::Status ExpandStage::Fit(const FitData& data, std::mt19937_64& rng) {
  projection_.resize(input_shape().size(), units_);
  FillNormal(projection_, 1.0f / std::sqrt(static_cast<float>(input_shape().size())), rng);
  bias_.resize(units_);
  FillNormal(bias_, bias_scale_, rng);
  return absl::OkStatus();
}

void ExpandStage::Apply(const MatrixF& in, MatrixF& out) const {
  out.resize(in.rows(), output_shape().size());
  const Eigen::Index offset = concat_ ? in.cols() : 0;
  if (concat_) out.leftCols(in.cols()) = in;
  auto expanded = out.middleCols(offset, units_);
  expanded.noalias() = in * projection_;
  expanded = (expanded.rowwise() + bias_.transpose()).cwiseMax(0.0f);
}

uint64_t ExpandStage::MacsPerSample() const {
  return static_cast<uint64_t>(input_shape().size()) * units_;
}

uint64_t ExpandStage::ParameterBytes() const {
  return 4 * static_cast<uint64_t>(projection_.size() + bias_.size());
}

void ExpandStage::Save(base::RecordFileWriter& writer, const std::string& prefix) const {
  writer.Tensor(prefix + "projection", projection_.data(),
                {static_cast<uint64_t>(projection_.rows()), static_cast<uint64_t>(units_)});
  writer.Tensor(prefix + "bias", bias_.data(), {static_cast<uint64_t>(units_)});
}

absl::Status ExpandStage::Load(const base::RecordFileReader& reader, const std::string& prefix) {
  if (absl::Status s =
          LoadTensor(reader, prefix + "projection", input_shape().size(), units_, projection_);
      !s.ok()) {
    return s;
  }
  return LoadTensor(reader, prefix + "bias", units_, 1, bias_);
}

// ---- elm_ae --------------------------------------------------------------------------------------

ElmAutoencoderStage::ElmAutoencoderStage(Shape input, int units, double lambda, bool relu)
    : Stage(input, {1, 1, units}), units_(units), lambda_(lambda), relu_(relu) {}

std::string ElmAutoencoderStage::Describe() const {
  return absl::StrCat("ELM autoencoder ", input_shape().size(), " -> ", units_,
                      " (decoder fit by one ridge solve, lambda ", lambda_, ")",
                      relu_ ? ", ReLU" : "");
}

absl::Status ElmAutoencoderStage::Fit(const FitData& data, std::mt19937_64& rng) {
  const int n_in = input_shape().size();
  MatrixF hidden_weights(n_in, units_);
  FillNormal(hidden_weights, 1.0f / std::sqrt(static_cast<float>(n_in)), rng);
  VectorF hidden_bias(units_);
  FillNormal(hidden_bias, 1.0f, rng);
  // Sufficient statistics of the decoder's ridge problem H beta = X.
  Eigen::MatrixXd hth = Eigen::MatrixXd::Zero(units_, units_);
  Eigen::MatrixXd htx = Eigen::MatrixXd::Zero(units_, n_in);
  absl::Status status = data.ForEachChunk([&](const MatrixF& chunk) {
    MatrixF hidden = chunk * hidden_weights;
    hidden = (hidden.rowwise() + hidden_bias.transpose()).array().tanh();
    const Eigen::MatrixXd h = hidden.cast<double>();
    hth.selfadjointView<Eigen::Lower>().rankUpdate(h.transpose());
    htx.noalias() += h.transpose() * chunk.cast<double>();
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  hth.diagonal().array() += lambda_;
  Eigen::LLT<Eigen::MatrixXd> cholesky(hth);
  if (cholesky.info() != Eigen::Success) {
    return absl::InternalError("elm_ae: H^T H + lambda I is not positive definite");
  }
  const Eigen::MatrixXd beta = cholesky.solve(htx);  // units x n_in
  encoder_ = beta.transpose().cast<float>();
  return absl::OkStatus();
}

void ElmAutoencoderStage::Apply(const MatrixF& in, MatrixF& out) const {
  out.noalias() = in * encoder_;
  if (relu_) out = out.cwiseMax(0.0f);
}

uint64_t ElmAutoencoderStage::MacsPerSample() const {
  return static_cast<uint64_t>(input_shape().size()) * units_;
}

uint64_t ElmAutoencoderStage::ParameterBytes() const {
  return 4 * static_cast<uint64_t>(encoder_.size());
}

void ElmAutoencoderStage::Save(base::RecordFileWriter& writer, const std::string& prefix) const {
  writer.Tensor(prefix + "encoder", encoder_.data(),
                {static_cast<uint64_t>(encoder_.rows()), static_cast<uint64_t>(units_)});
}

absl::Status ElmAutoencoderStage::Load(const base::RecordFileReader& reader,
                                       const std::string& prefix) {
  return LoadTensor(reader, prefix + "encoder", input_shape().size(), units_, encoder_);
}

// ---- the factory ---------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Stage>> MakeStage(const StageSpec& spec, const Shape& input) {
  StageParams p(spec);
  std::unique_ptr<Stage> stage;
  const bool spatial = input.height > 1 || input.width > 1;
  if (spec.kind == "conv") {
    const int patch = p.Int("patch", 5, 1, 15);
    const int taps = patch * patch * input.channels;
    const int filters = p.Int("filters", 24, 1, 4096);
    const int pca_images = p.Int("pca_images", 5000, 1, 1 << 30);
    const bool center = p.Bool("center", true);
    if (patch % 2 == 0) p.Fail(absl::StrCat("patch=", patch, ", expected an odd size"));
    if (filters > taps) {
      p.Fail(absl::StrCat("filters=", filters, ", at most patch*patch*channels = ", taps));
    }
    if (!spatial) p.Fail(absl::StrCat("needs a spatial input, got ", ShapeString(input)));
    stage = std::make_unique<ConvStage>(input, patch, filters, pca_images, center);
  } else if (spec.kind == "split_relu") {
    stage = std::make_unique<SplitReluStage>(input);
  } else if (spec.kind == "pool") {
    const int size = p.Int("size", 2, 1, 64);
    if (size > std::min(input.height, input.width)) {
      p.Fail(absl::StrCat("size=", size, " is larger than the input ", ShapeString(input)));
    }
    stage = std::make_unique<PoolStage>(input, size);
  } else if (spec.kind == "sqrt") {
    stage = std::make_unique<SqrtStage>(input);
  } else if (spec.kind == "standardise") {
    stage = std::make_unique<StandardiseStage>(input);
  } else if (spec.kind == "expand") {
    const int units = p.Int("units", 4096, 1, 65536);
    const double bias_scale = p.Double("bias_scale", 0.3, 0.0, 100.0);
    const bool concat = p.Bool("concat", true);
    stage = std::make_unique<ExpandStage>(input, units, static_cast<float>(bias_scale), concat);
  } else if (spec.kind == "elm_ae") {
    const int units = p.Int("units", 512, 1, 16384);
    const double lambda = p.Double("lambda", 1.0, 1e-12, 1e12);
    const bool relu = p.Bool("relu", true);
    stage = std::make_unique<ElmAutoencoderStage>(input, units, lambda, relu);
  } else {
    p.Fail(absl::StrCat("unknown stage kind (stages: ", absl::StrJoin(StageKinds(), ", "), ")"));
  }
  if (absl::Status s = p.Finish(); !s.ok()) return s;
  return stage;
}

}  // namespace strata::model
