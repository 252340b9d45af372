#include "text/text_encoder.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <unsupported/Eigen/SpecialFunctions>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file.h"
#include "model/int8_quantization.h"
#include "nlohmann/json.hpp"
#include "text/safetensors.h"

namespace strata::text {
namespace {

using model::MatrixF;
using model::VectorF;
using nlohmann::json;

// Rows (tokens) below which the host's elementwise loops do not fork threads.
constexpr Eigen::Index kParallelRows = 64;

// Adds the wall time of its scope to a counter.
class ScopedTimer {
 public:
  explicit ScopedTimer(double& seconds)
      : seconds_(seconds), start_(std::chrono::steady_clock::now()) {}
  ~ScopedTimer() {
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double& seconds_;
  std::chrono::steady_clock::time_point start_;
};

// An integer field of config.json in [minimum, 2^20].
absl::StatusOr<int> ConfigInt(const json& config, const char* field, int minimum) {
  const auto it = config.find(field);
  if (it == config.end() || !it->is_number_integer() || it->get<int64_t>() < minimum ||
      it->get<int64_t>() > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: ", field, " missing or not an integer >= ", minimum));
  }
  return it->get<int>();
}

// LayerNorm of every row of x in place: (x - mean) / sqrt(var + eps) * gamma + beta, the biased
// variance, as torch.nn.LayerNorm.
void LayerNormRows(MatrixF& x, const VectorF& gamma, const VectorF& beta, float eps) {
  const Eigen::Index rows = x.rows();
#pragma omp parallel for if (rows > kParallelRows)
  for (Eigen::Index r = 0; r < rows; ++r) {
    auto row = x.row(r).array();
    const float mean = row.mean();
    row -= mean;
    const float variance = row.square().mean();
    row *= 1.0f / std::sqrt(variance + eps);
    row = row * gamma.transpose().array() + beta.transpose().array();
  }
}

// x = LayerNorm(x + residual).
void AddAndNorm(MatrixF& x, const MatrixF& residual, const VectorF& gamma, const VectorF& beta,
                float eps) {
  x += residual;
  LayerNormRows(x, gamma, beta, eps);
}

// GELU with the exact erf, 0.5 x (1 + erf(x / sqrt 2)) (BERT's "gelu"; Eigen's vectorised erf).
void GeluInPlace(MatrixF& x) {
  const Eigen::Index rows = x.rows();
  constexpr float kInverseSqrt2 = 0.70710678118654752f;
#pragma omp parallel for if (rows > kParallelRows)
  for (Eigen::Index r = 0; r < rows; ++r) {
    auto row = x.row(r).array();
    row = 0.5f * row * (1.0f + (row * kInverseSqrt2).erf());
  }
}

}  // namespace

// One dense layer y = x W^T + b: float weights (out x in) on the host, or an int8 layer on the
// backend with its per-output-channel weight scales.
struct TextEncoder::Dense {
  std::string name;
  int in = 0, out = 0;
  MatrixF weight;  // float path only
  VectorF bias;
  std::unique_ptr<fpga::DenseInt8Layer> int8;
  std::vector<float> weight_scale;  // s_w[o]
  // sum_i s_w[o] w_q[o][i]: the quantised weights' row sums, for the per-row centre (RunDense).
  Eigen::VectorXf weight_sum;
};

struct TextEncoder::Layer {
  Dense qkv, attention_output, intermediate, output;
  VectorF attention_norm_gamma, attention_norm_beta, output_norm_gamma, output_norm_beta;
};

// Scratch of one Embed call.
struct TextEncoder::Workspace {
  MatrixF x, qkv, context, projected, inner;
  std::vector<int8_t> x_q;
  std::vector<float> row_scale, row_centre;
  std::vector<float> centred;  // one row per OpenMP thread
  std::vector<int32_t> acc;
};

absl::StatusOr<EncoderConfig> EncoderConfig::FromJson(const std::string& path) {
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  if (!contents.ok()) return contents.status();
  const json config = json::parse(*contents, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  EncoderConfig c;
  for (auto [field, target, minimum] :
       {std::tuple{"vocab_size", &c.vocab_size, 1}, std::tuple{"hidden_size", &c.hidden_size, 1},
        std::tuple{"num_hidden_layers", &c.num_layers, 1},
        std::tuple{"num_attention_heads", &c.num_heads, 1},
        std::tuple{"intermediate_size", &c.intermediate_size, 1},
        std::tuple{"max_position_embeddings", &c.max_position_embeddings, 2},
        std::tuple{"type_vocab_size", &c.type_vocab_size, 1}}) {
    absl::StatusOr<int> value = ConfigInt(config, field, minimum);
    if (!value.ok()) return value.status();
    *target = *value;
  }
  if (c.hidden_size % c.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: hidden_size ", c.hidden_size,
                                                   " is not a multiple of num_attention_heads ",
                                                   c.num_heads));
  }
  const auto eps = config.find("layer_norm_eps");
  if (eps == config.end() || !eps->is_number() || !(eps->get<double>() > 0)) {
    return absl::InvalidArgumentError("config.json: layer_norm_eps missing or not positive");
  }
  c.layer_norm_eps = eps->get<double>();
  if (config.value("hidden_act", std::string()) != "gelu") {
    return absl::InvalidArgumentError(
        "config.json: hidden_act is not \"gelu\" (the exact erf GELU this encoder implements)");
  }
  return c;
}

TextEncoder::TextEncoder(EncoderConfig config, WordPieceTokenizer tokenizer)
    : config_(std::move(config)), tokenizer_(std::move(tokenizer)) {}

TextEncoder::~TextEncoder() = default;

absl::StatusOr<std::unique_ptr<TextEncoder>> TextEncoder::Load(const std::string& model_dir,
                                                               const TextEncoderOptions& options) {
  const std::filesystem::path dir(model_dir);
  absl::StatusOr<EncoderConfig> config = EncoderConfig::FromJson(dir / "config.json");
  if (!config.ok()) return config.status();
  TokenizerOptions tokenizer_options = options.tokenizer;
  if (tokenizer_options.max_length > config->max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("text encoder: max_length ", tokenizer_options.max_length,
                     " exceeds the model's ", config->max_position_embeddings, " positions"));
  }
  absl::StatusOr<WordPieceTokenizer> tokenizer =
      WordPieceTokenizer::FromTokenizerJson(dir / "tokenizer.json", tokenizer_options);
  if (!tokenizer.ok()) return tokenizer.status();
  if (tokenizer->vocab_size() > config->vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("text encoder: the tokenizer's ",
                                                   tokenizer->vocab_size(), " ids exceed the ",
                                                   config->vocab_size, " embeddings"));
  }
  if (options.max_chunk_tokens < tokenizer_options.max_length) {
    return absl::InvalidArgumentError("text encoder: max_chunk_tokens is below max_length");
  }
  std::unique_ptr<TextEncoder> encoder(new TextEncoder(*std::move(config), *std::move(tokenizer)));
  encoder->max_chunk_tokens_ = options.max_chunk_tokens;
  if (absl::Status s = encoder->LoadWeights(dir / "model.safetensors", options); !s.ok()) return s;
  return encoder;
}

namespace {

// The tensors of one BertModel checkpoint, with its optional "bert." prefix.
class WeightReader {
 public:
  explicit WeightReader(const SafetensorsFile& file)
      : file_(file),
        prefix_(file.Find("embeddings.word_embeddings.weight") == nullptr &&
                        file.Find("bert.embeddings.word_embeddings.weight") != nullptr
                    ? "bert."
                    : "") {}

  absl::StatusOr<MatrixF> Matrix(const std::string& name, int rows, int cols) const {
    absl::StatusOr<std::vector<float>> values = file_.ReadFloat32(prefix_ + name, {rows, cols});
    if (!values.ok()) return values.status();
    return MatrixF(Eigen::Map<const MatrixF>(values->data(), rows, cols));
  }
  absl::StatusOr<VectorF> Vector(const std::string& name, int size) const {
    absl::StatusOr<std::vector<float>> values = file_.ReadFloat32(prefix_ + name, {size});
    if (!values.ok()) return values.status();
    return VectorF(Eigen::Map<const VectorF>(values->data(), size));
  }

 private:
  const SafetensorsFile& file_;
  std::string prefix_;
};

// Reads `count` matrices and vectors, stopping at the first error.
absl::Status ReadAll(const WeightReader& reader, const std::string& prefix,
                     std::initializer_list<std::tuple<const char*, VectorF*, int>> vectors) {
  for (auto [name, target, size] : vectors) {
    absl::StatusOr<VectorF> v = reader.Vector(prefix + name, size);
    if (!v.ok()) return v.status();
    *target = *std::move(v);
  }
  return absl::OkStatus();
}

// A dense layer's float weights and bias; for Q/K/V the three stacked (out = 3 x hidden).
absl::Status ReadDense(const WeightReader& reader, const std::vector<std::string>& names, int in,
                       int out_each, MatrixF& weight, VectorF& bias) {
  const int parts = static_cast<int>(names.size());
  weight.resize(static_cast<Eigen::Index>(out_each) * parts, in);
  bias.resize(static_cast<Eigen::Index>(out_each) * parts);
  for (int p = 0; p < parts; ++p) {
    absl::StatusOr<MatrixF> w = reader.Matrix(names[p] + ".weight", out_each, in);
    if (!w.ok()) return w.status();
    absl::StatusOr<VectorF> b = reader.Vector(names[p] + ".bias", out_each);
    if (!b.ok()) return b.status();
    weight.middleRows(static_cast<Eigen::Index>(p) * out_each, out_each) = *w;
    bias.segment(static_cast<Eigen::Index>(p) * out_each, out_each) = *b;
  }
  return absl::OkStatus();
}

// Quantises `dense`'s float weights per output channel and loads them on `backend` as a raw-output
// int8 layer (no bias on the card: with per-row activation scales the host adds it in float).
absl::Status LoadInt8(fpga::Backend& backend, MatrixF& weight, std::string name, int in, int out,
                      std::unique_ptr<fpga::DenseInt8Layer>& layer,
                      std::vector<float>& weight_scale, Eigen::VectorXf& weight_sum) {
  fpga::DenseInt8Spec spec;
  spec.in_features = in;
  spec.out_features = out;
  spec.raw_output = true;
  model::WeightQuantization quantized;
  // QuantizeDenseWeights takes in x out; with s_x = 1 its dequantisation factors are s_w.
  const MatrixF transposed = weight.transpose();
  if (absl::Status s =
          model::QuantizeDenseWeights(transposed, nullptr, 1.0f, name, spec, quantized);
      !s.ok()) {
    return s;
  }
  weight_sum.resize(out);
  for (int o = 0; o < out; ++o) {
    int32_t sum = 0;
    for (int i = 0; i < in; ++i) sum += spec.weights[static_cast<size_t>(o) * in + i];
    weight_sum[o] = static_cast<float>(sum) * quantized.dequantize[o];
  }
  absl::StatusOr<std::unique_ptr<fpga::DenseInt8Layer>> loaded =
      backend.LoadDenseInt8(std::move(spec));
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        absl::StrCat("text encoder ", name, ": ", loaded.status().message()));
  }
  layer = *std::move(loaded);
  weight_scale = std::move(quantized.dequantize);
  weight = MatrixF();  // the float copy is no longer needed
  return absl::OkStatus();
}

}  // namespace

absl::Status TextEncoder::LoadWeights(const std::string& path, const TextEncoderOptions& options) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  const WeightReader reader(*file);
  const int h = config_.hidden_size, f = config_.intermediate_size;
  for (auto [name, target, rows] :
       {std::tuple{"embeddings.word_embeddings.weight", &word_embeddings_, config_.vocab_size},
        std::tuple{"embeddings.position_embeddings.weight", &position_embeddings_,
                   config_.max_position_embeddings},
        std::tuple{"embeddings.token_type_embeddings.weight", &type_embeddings_,
                   config_.type_vocab_size}}) {
    absl::StatusOr<MatrixF> m = reader.Matrix(name, rows, h);
    if (!m.ok()) return m.status();
    *target = *std::move(m);
  }
  if (absl::Status s =
          ReadAll(reader, "embeddings.LayerNorm.",
                  {{"weight", &embedding_norm_gamma_, h}, {"bias", &embedding_norm_beta_, h}});
      !s.ok()) {
    return s;
  }
  backend_ = options.backend;
  if (backend_ != nullptr) device_ = backend_->info().name;
  for (int l = 0; l < config_.num_layers; ++l) {
    auto layer = std::make_unique<Layer>();
    const std::string p = absl::StrCat("encoder.layer.", l, ".");
    struct Part {
      Dense* dense;
      std::vector<std::string> names;
      int in, out_each;
    };
    const std::vector<Part> parts = {
        {&layer->qkv,
         {p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"},
         h,
         h},
        {&layer->attention_output, {p + "attention.output.dense"}, h, h},
        {&layer->intermediate, {p + "intermediate.dense"}, h, f},
        {&layer->output, {p + "output.dense"}, f, h}};
    for (const Part& part : parts) {
      Dense& d = *part.dense;
      d.name = part.names.size() == 1 ? part.names[0] : p + "attention.self.qkv";
      d.in = part.in;
      d.out = part.out_each * static_cast<int>(part.names.size());
      if (absl::Status s = ReadDense(reader, part.names, part.in, part.out_each, d.weight, d.bias);
          !s.ok()) {
        return s;
      }
      if (backend_ != nullptr) {
        if (absl::Status s = LoadInt8(*backend_, d.weight, d.name, d.in, d.out, d.int8,
                                      d.weight_scale, d.weight_sum);
            !s.ok()) {
          return s;
        }
      }
    }
    if (absl::Status s =
            ReadAll(reader, p,
                    {{"attention.output.LayerNorm.weight", &layer->attention_norm_gamma, h},
                     {"attention.output.LayerNorm.bias", &layer->attention_norm_beta, h},
                     {"output.LayerNorm.weight", &layer->output_norm_gamma, h},
                     {"output.LayerNorm.bias", &layer->output_norm_beta, h}});
        !s.ok()) {
      return s;
    }
    layers_.push_back(std::move(layer));
  }
  return absl::OkStatus();
}

absl::Status TextEncoder::RunDense(const Dense& dense, const MatrixF& in, MatrixF& out,
                                   Workspace& ws, fpga::OpCounts& counts,
                                   EncoderTimes& times) const {
  const Eigen::Index rows = in.rows();
  out.resize(rows, dense.out);
  if (dense.int8 == nullptr) {
    ScopedTimer timer(times.dense_s);
    out.noalias() = in * dense.weight.transpose();
    out.rowwise() += dense.bias.transpose();
    return absl::OkStatus();
  }
  {
    // Per row (token): the kernel's quantisation is symmetric, so each row is centred first,
    // x = c[r] + d, c[r] = (max + min) / 2, and d quantised with s_x[r] = (max - min) / 254: the
    // full int8 range covers the row's own range (GELU's outputs, >= -0.17, would otherwise use
    // half of it). x W^T = d W^T + c[r] * rowsum(W), the second term added on the host.
    ScopedTimer timer(times.quantize_s);
    ws.x_q.resize(static_cast<size_t>(rows) * dense.in);
    ws.row_scale.resize(rows);
    ws.row_centre.resize(rows);
    ws.centred.resize(omp_get_max_threads() * static_cast<size_t>(dense.in));
#pragma omp parallel for if (rows > kParallelRows)
    for (Eigen::Index r = 0; r < rows; ++r) {
      const auto row = in.row(r);
      const float high = row.maxCoeff(), low = row.minCoeff();
      const float centre = 0.5f * (high + low);
      const float half_range = 0.5f * (high - low);
      const float scale = half_range > 0 ? half_range / model::kInt8Max : 1.0f;
      ws.row_scale[r] = scale;
      ws.row_centre[r] = centre;
      float* centred = ws.centred.data() + omp_get_thread_num() * static_cast<size_t>(dense.in);
      Eigen::Map<Eigen::RowVectorXf>(centred, dense.in) = row.array() - centre;
      model::QuantizeActivations(centred, dense.in, 1.0f / scale, ws.x_q.data() + r * dense.in);
    }
  }
  ws.acc.resize(static_cast<size_t>(rows) * dense.out);
  {
    ScopedTimer timer(times.dense_s);
    absl::StatusOr<fpga::OpCounts> called =
        dense.int8->Forward(ws.x_q, static_cast<int>(rows), {}, ws.acc);
    if (!called.ok()) return called.status();
    counts += *called;
  }
  ScopedTimer timer(times.quantize_s);
  const Eigen::Map<const Eigen::VectorXf> weight_scale(dense.weight_scale.data(), dense.out);
#pragma omp parallel for if (rows > kParallelRows)
  for (Eigen::Index r = 0; r < rows; ++r) {
    const Eigen::Map<const Eigen::VectorXi> acc(ws.acc.data() + r * dense.out, dense.out);
    out.row(r) = (acc.cast<float>().array() * (weight_scale.array() * ws.row_scale[r]) +
                  dense.weight_sum.array() * ws.row_centre[r] + dense.bias.array())
                     .transpose();
  }
  return absl::OkStatus();
}

void TextEncoder::Attention(const MatrixF& qkv, std::span<const int> offsets,
                            MatrixF& context) const {
  const int h = config_.hidden_size, heads = config_.num_heads, d = h / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int sequences = static_cast<int>(offsets.size()) - 1;
  context.resize(qkv.rows(), h);
  const int tasks = sequences * heads;
#pragma omp parallel if (qkv.rows() > kParallelRows)
  {
    MatrixF scores;
#pragma omp for schedule(dynamic)
    for (int task = 0; task < tasks; ++task) {
      const int s = task / heads, head = task % heads;
      const int first = offsets[s], length = offsets[s + 1] - offsets[s];
      const auto q = qkv.block(first, head * d, length, d);
      const auto k = qkv.block(first, h + head * d, length, d);
      const auto v = qkv.block(first, 2 * h + head * d, length, d);
      scores.noalias() = (q * k.transpose()) * scale;
      // Row softmax, max-subtracted as torch's.
      scores = (scores.colwise() - scores.rowwise().maxCoeff()).array().exp().matrix();
      scores.array().colwise() /= scores.rowwise().sum().array();
      context.block(first, head * d, length, d).noalias() = scores * v;
    }
  }
}

void TextEncoder::EmbedTokensOfChunk(std::span<const std::vector<int32_t>> ids, MatrixF& x) const {
  int t = 0;
  for (const std::vector<int32_t>& sequence : ids) {
    for (size_t p = 0; p < sequence.size(); ++p, ++t) {
      // Token type 0: single sentences.
      x.row(t) =
          word_embeddings_.row(sequence[p]) + position_embeddings_.row(p) + type_embeddings_.row(0);
    }
  }
  LayerNormRows(x, embedding_norm_gamma_, embedding_norm_beta_,
                static_cast<float>(config_.layer_norm_eps));
}

absl::Status TextEncoder::ForwardChunk(std::span<const std::vector<int32_t>> ids, MatrixF& out,
                                       Eigen::Index first, Workspace& ws, fpga::OpCounts& counts,
                                       EncoderTimes& times) const {
  std::vector<int> offsets = {0};
  for (const auto& sequence : ids)
    offsets.push_back(offsets.back() + static_cast<int>(sequence.size()));
  const float eps = static_cast<float>(config_.layer_norm_eps);
  {
    ScopedTimer timer(times.embed_s);
    ws.x.resize(offsets.back(), config_.hidden_size);
    EmbedTokensOfChunk(ids, ws.x);
  }
  for (const auto& layer : layers_) {
    if (absl::Status s = RunDense(layer->qkv, ws.x, ws.qkv, ws, counts, times); !s.ok()) return s;
    {
      ScopedTimer timer(times.attention_s);
      Attention(ws.qkv, offsets, ws.context);
    }
    if (absl::Status s =
            RunDense(layer->attention_output, ws.context, ws.projected, ws, counts, times);
        !s.ok()) {
      return s;
    }
    {
      ScopedTimer timer(times.norm_s);
      AddAndNorm(ws.x, ws.projected, layer->attention_norm_gamma, layer->attention_norm_beta, eps);
    }
    if (absl::Status s = RunDense(layer->intermediate, ws.x, ws.inner, ws, counts, times);
        !s.ok()) {
      return s;
    }
    {
      ScopedTimer timer(times.norm_s);
      GeluInPlace(ws.inner);
    }
    if (absl::Status s = RunDense(layer->output, ws.inner, ws.projected, ws, counts, times);
        !s.ok()) {
      return s;
    }
    ScopedTimer timer(times.norm_s);
    AddAndNorm(ws.x, ws.projected, layer->output_norm_gamma, layer->output_norm_beta, eps);
  }
  // Mean over each sequence's tokens (all real: no padding rows), then unit L2 norm (torch's
  // F.normalize: divided by max(norm, 1e-12)).
  ScopedTimer timer(times.pool_s);
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int length = offsets[s + 1] - offsets[s];
    auto row = out.row(first + static_cast<Eigen::Index>(s));
    row = ws.x.middleRows(offsets[s], length).colwise().sum() / static_cast<float>(length);
    row /= std::max(row.norm(), 1e-12f);
  }
  return absl::OkStatus();
}

uint64_t TextEncoder::DenseMacs(int tokens) const {
  const uint64_t h = config_.hidden_size, f = config_.intermediate_size;
  return static_cast<uint64_t>(tokens) * config_.num_layers * (4 * h * h + 2 * h * f);
}

uint64_t TextEncoder::AttentionMacs(int tokens) const {
  const uint64_t t = tokens;
  return 2 * t * t * static_cast<uint64_t>(config_.hidden_size) * config_.num_layers;
}

absl::StatusOr<MatrixF> TextEncoder::Embed(std::span<const std::string> texts,
                                           fpga::OpCounts* counts, EncoderTimes* times) const {
  EncoderTimes local_times;
  std::vector<std::vector<int32_t>> ids(texts.size());
  {
    ScopedTimer timer(local_times.tokenize_s);
    for (size_t i = 0; i < texts.size(); ++i) {
      absl::StatusOr<std::vector<int32_t>> encoded = tokenizer_.Encode(texts[i]);
      if (!encoded.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("text ", i, ": ", encoded.status().message()));
      }
      ids[i] = *std::move(encoded);
    }
  }
  absl::StatusOr<MatrixF> embeddings = EmbedTokens(ids, counts, &local_times);
  if (times != nullptr && embeddings.ok()) {
    for (auto [total, add] : {std::pair{&times->tokenize_s, local_times.tokenize_s},
                              std::pair{&times->embed_s, local_times.embed_s},
                              std::pair{&times->dense_s, local_times.dense_s},
                              std::pair{&times->quantize_s, local_times.quantize_s},
                              std::pair{&times->attention_s, local_times.attention_s},
                              std::pair{&times->norm_s, local_times.norm_s},
                              std::pair{&times->pool_s, local_times.pool_s}}) {
      *total += add;
    }
  }
  return embeddings;
}

absl::StatusOr<MatrixF> TextEncoder::EmbedTokens(std::span<const std::vector<int32_t>> ids,
                                                 fpga::OpCounts* counts,
                                                 EncoderTimes* times) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& sequence = ids[i];
    if (sequence.empty() || static_cast<int>(sequence.size()) > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("text ", i, ": ", sequence.size(),
                                                     " tokens, expected 1 to ",
                                                     config_.max_position_embeddings));
    }
    for (int32_t id : sequence) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("text ", i, ": token id ", id, " outside the vocabulary"));
      }
    }
  }
  EncoderTimes local_times;
  EncoderTimes& t = times != nullptr ? *times : local_times;
  MatrixF out(static_cast<Eigen::Index>(ids.size()), config_.hidden_size);
  fpga::OpCounts total;
  Workspace ws;
  for (size_t begin = 0; begin < ids.size();) {
    // Whole sequences up to max_chunk_tokens_ (one sequence is at most max_length tokens).
    size_t end = begin;
    int tokens = 0;
    while (end < ids.size() && tokens + static_cast<int>(ids[end].size()) <= max_chunk_tokens_) {
      tokens += static_cast<int>(ids[end++].size());
    }
    if (end == begin) tokens += static_cast<int>(ids[end++].size());
    if (absl::Status s = ForwardChunk(ids.subspan(begin, end - begin), out,
                                      static_cast<Eigen::Index>(begin), ws, total, t);
        !s.ok()) {
      return s;
    }
    for (size_t i = begin; i < end; ++i) {
      const int length = static_cast<int>(ids[i].size());
      total.fp32_macs += AttentionMacs(length);
      if (backend_ == nullptr) total.fp32_macs += DenseMacs(length);
    }
    if (backend_ == nullptr) {
      // Each dense weight read once per chunk, in fp32.
      total.dram_bytes += DenseMacs(1) * sizeof(float);
    }
    begin = end;
  }
  if (counts != nullptr) *counts = total;
  return out;
}

std::vector<std::string> TextEncoder::Describe() const {
  return {
      absl::StrFormat("tokenizer: BERT uncased WordPiece, %d ids, max_length %d",
                      tokenizer_.vocab_size(), tokenizer_.max_length()),
      absl::StrFormat("encoder: %d layers, hidden %d, %d heads, FFN %d, GELU (erf), "
                      "LayerNorm eps %g",
                      config_.num_layers, config_.hidden_size, config_.num_heads,
                      config_.intermediate_size, config_.layer_norm_eps),
      backend_ == nullptr
          ? std::string("dense layers: fp32 on the host")
          : absl::StrFormat("dense layers: int8 on %s (per-channel weight scales, per-token "
                            "activation scales); attention, softmax, LayerNorm, GELU in fp32",
                            device_),
      absl::StrFormat("pooling: mean over tokens, L2-normalised, %d values", embedding_size()),
  };
}

}  // namespace strata::text
