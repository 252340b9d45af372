// The frozen text encoder of the Compound LLM: all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384, 12
// heads, FFN 1536) run in C++ from its safetensors weights, its sentence embedding the mean of the
// last layer's token states, L2-normalised (sentence-transformers' Pooling + Normalize).
//
//   float  every product in fp32 on the host (Eigen).
//   int8   the encoder's dense layers (Q/K/V fused, attention output, FFN in and out: 4 per
//          layer: 99.5 % of the multiply-accumulates at 12 tokens, 90 % at 256) as
//          fpga::DenseInt8Layer on a backend (cpu, emu or xrt), so a card runs the same kernels.
//          Weights are quantised per output channel; activations per row (token), dynamically, so
//          no calibration set is needed and an outlier token does not coarsen its neighbours: the
//          row is centred on the middle of its range, c = (max + min) / 2, and x - c quantised with
//          s_x = (max - min) / 254 (the kernel is symmetric; centring gives it the precision of an
//          asymmetric scheme). The layers run in raw-output mode and the host computes acc *
//          s_x[row] * s_w[o]
//          + c[row] * rowsum(W_q)[o] + bias[o] in float. What stays float, and why:
//            embeddings, LayerNorm, GELU, softmax, pooling: elementwise or per-row reductions,
//              little arithmetic, and the places where int8 rounding costs the most accuracy;
//            attention products QK^T and PV: both operands are activations of this very call
//              (nothing to keep resident on the card), per sequence and head, 0.5 % of the MACs
//              at 12 tokens, 10 % at 256.
// docs/text-encoder.md gives the numerics and the measured equality and speed.
//
// Batches: the dense layers run on the batch's real tokens, packed one sequence after another (no
// padding rows); attention runs per sequence over its own tokens. This equals padding every
// sequence to the batch's longest with an attention mask (the padded keys' softmax weights are
// exactly 0 in float) without computing the padding.
#ifndef STRATA_TEXT_TEXT_ENCODER_H_
#define STRATA_TEXT_TEXT_ENCODER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fpga/backend.h"
#include "model/tensor.h"
#include "text/wordpiece_tokenizer.h"

namespace strata::text {

// The model's config.json (BertModel) fields the forward pass needs.
struct EncoderConfig {
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 0;
  int type_vocab_size = 0;
  double layer_norm_eps = 0;

  // Reads config.json. INVALID_ARGUMENT naming the field if one is missing or out of range, the
  // hidden size is not a multiple of the heads, or hidden_act is not "gelu" (exact erf GELU).
  static absl::StatusOr<EncoderConfig> FromJson(const std::string& path);
};

struct TextEncoderOptions {
  TokenizerOptions tokenizer;
  // Where the dense layers run: null for fp32 on the host; else int8 layers loaded on this backend
  // (not owned; it must outlive the encoder).
  fpga::Backend* backend = nullptr;
  // Tokens per forward chunk: a batch with more real tokens is split (whole sequences per chunk).
  // Bounds memory (about 12 KB per token in the FFN) without changing any result.
  int max_chunk_tokens = 8192;
};

// Wall time by stage, summed over calls (for the bench's breakdown).
struct EncoderTimes {
  double tokenize_s = 0;
  double embed_s = 0;      // embedding gather + LayerNorm
  double dense_s = 0;      // dense layers: the float GEMMs, or the backend's Forward calls
  double quantize_s = 0;   // int8 only: per-row activation quantisation and dequantisation + bias
  double attention_s = 0;  // QK^T, softmax, PV
  double norm_s = 0;       // residual + LayerNorm, GELU
  double pool_s = 0;       // mean pooling + L2 normalisation
  double total() const {
    return tokenize_s + embed_s + dense_s + quantize_s + attention_s + norm_s + pool_s;
  }
};

// Immutable after Load; Embed is const and thread-safe (each call has its own scratch).
// Ownership: owns its weights (float on the host, int8 layers on the backend) and tokenizer.
class TextEncoder {
 public:
  // Loads a sentence-transformers model folder: config.json, tokenizer.json, model.safetensors
  // (BertModel tensor names, with or without a "bert." prefix). NOT_FOUND naming a missing file;
  // INVALID_ARGUMENT from the config, the tokenizer or the weights (naming the tensor); the
  // backend's errors when loading the int8 layers.
  static absl::StatusOr<std::unique_ptr<TextEncoder>> Load(const std::string& model_dir,
                                                           const TextEncoderOptions& options = {});
  ~TextEncoder();

  // Sentence embeddings: texts.size() x embedding_size(), each row of unit L2 norm.
  // INVALID_ARGUMENT naming the text's index if one is not valid UTF-8. If `counts` is not null
  // it receives the work: the backend's OpCounts for the int8 dense layers plus the host's fp32
  // attention MACs (float: every MAC as fp32, weights read once per chunk). `times`, if not null,
  // has each stage's wall time added.
  absl::StatusOr<model::MatrixF> Embed(std::span<const std::string> texts,
                                       fpga::OpCounts* counts = nullptr,
                                       EncoderTimes* times = nullptr) const;
  // The same for token ids already encoded (each [CLS] ... [SEP], at most max_position_embeddings
  // long, ids below the vocabulary size; INVALID_ARGUMENT otherwise).
  absl::StatusOr<model::MatrixF> EmbedTokens(std::span<const std::vector<int32_t>> ids,
                                             fpga::OpCounts* counts = nullptr,
                                             EncoderTimes* times = nullptr) const;

  const WordPieceTokenizer& tokenizer() const { return tokenizer_; }
  const EncoderConfig& config() const { return config_; }
  int embedding_size() const { return config_.hidden_size; }
  // "float", or the backend's name ("cpu", "emu", "xrt").
  const std::string& device() const { return device_; }
  fpga::Backend* backend() const { return backend_; }
  // Multiply-accumulates of one sequence of `tokens` tokens: in the dense layers (int8 on a
  // backend) and in attention (always fp32).
  uint64_t DenseMacs(int tokens) const;
  uint64_t AttentionMacs(int tokens) const;
  // One line per part (for logs and ModelInfo).
  std::vector<std::string> Describe() const;

 private:
  struct Dense;
  struct Layer;
  struct Workspace;
  TextEncoder(EncoderConfig config, WordPieceTokenizer tokenizer);

  absl::Status LoadWeights(const std::string& path, const TextEncoderOptions& options);
  // One chunk of whole sequences (tokens packed) into `out` rows [first, first + sequences).
  absl::Status ForwardChunk(std::span<const std::vector<int32_t>> ids, model::MatrixF& out,
                            Eigen::Index first, Workspace& ws, fpga::OpCounts& counts,
                            EncoderTimes& times) const;
  absl::Status RunDense(const Dense& dense, const model::MatrixF& in, model::MatrixF& out,
                        Workspace& ws, fpga::OpCounts& counts, EncoderTimes& times) const;
  void Attention(const model::MatrixF& qkv, std::span<const int> offsets,
                 model::MatrixF& context) const;
  void EmbedTokensOfChunk(std::span<const std::vector<int32_t>> ids, model::MatrixF& x) const;

  EncoderConfig config_;
  WordPieceTokenizer tokenizer_;
  fpga::Backend* backend_ = nullptr;
  std::string device_ = "float";
  int max_chunk_tokens_ = 8192;
  // Embeddings (row-major: one row per id / position / type) and their LayerNorm.
  model::MatrixF word_embeddings_, position_embeddings_, type_embeddings_;
  model::VectorF embedding_norm_gamma_, embedding_norm_beta_;
  std::vector<std::unique_ptr<Layer>> layers_;
};

}  // namespace strata::text

#endif  // STRATA_TEXT_TEXT_ENCODER_H_
