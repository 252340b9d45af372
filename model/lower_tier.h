// The frozen lower tier: a feature extractor made of stages (model/stages.h), each fit in one step
// by a closed-form solve, in the order its architecture (model/architecture.h) lists them. Frozen
// after the fit; the model bundle holds its architecture and parameters.
//
// The default architecture (LowerTierSpec's defaults; specs/default.spec):
//   conv 5x5 PCA filters -> +/-ReLU -> 4x4 average pool -> signed sqrt -> standardise
//   -> random ReLU expansion concatenated with its input.
#ifndef STRATA_MODEL_LOWER_TIER_H_
#define STRATA_MODEL_LOWER_TIER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/record_file.h"
#include "fpga/backend.h"
#include "model/architecture.h"
#include "model/lexical_view.h"
#include "model/stages.h"
#include "model/tensor.h"

namespace strata::model {

// Rows per chunk in which both lower tiers (LowerTier and QuantizedLowerTier) stream a batch
// through their matrix products, one chunk per work item on the OpenMP threads. Each chunk reads
// every weight once, which is what their work models count (LowerTier::Counts; the int8 tier's
// backend calls, one per layer and chunk). It also bounds the intermediate maps' memory (a
// 28x28x48 map is 150 KB a row).
inline constexpr int kLowerTierRowsPerChunk = 64;

// The work of an fp32 lower tier for `images` images: macs_per_image fp32 MACs each (the stages'
// matrix products). DRAM: images in (4 B/value), features out (4 B/feature), plus
// `parameter_bytes` of weights streamed. A pure function of the shapes.
fpga::OpCounts LowerTierInferenceCounts(uint64_t macs_per_image, int input_size, int feature_size,
                                        int images, uint64_t parameter_bytes = 0);

// The parameters of the default, single-conv architecture, for code that builds one without a spec
// file. Defaults give specs/default.spec.
struct LowerTierSpec {
  int image_height = 28;
  int image_width = 28;
  int patch = 5;          // convolution window, odd
  int filters = 24;       // PCA filters kept; the conv stage has 2 * filters channels after +/-ReLU
  int pool = 4;           // average-pooling window and stride
  bool sqrt = true;       // signed square root of the pooled activations
  int expansion = 6144;   // random ReLU units (0: none)
  int pca_images = 5000;  // training images sampled for the patch covariance
  float expansion_bias_scale = 0.3f;
  uint64_t seed = 0;  // drives the PCA sample and the random stages

  Architecture ToArchitecture() const;
};

class LowerTier {
 public:
  // Fits every stage in order on `images` (one image per row, height * width * channels values in
  // [0, 1]): each stage is fit on the training rows as the stages before it output them. `seed`
  // drives the PCA sample and the random stages. INVALID_ARGUMENT (naming the spec line) if a stage
  // is invalid, or if the images do not match the input shape or hold NaN / Inf.
  // A text architecture with a `lexical` line takes its fitted view (LexicalView::Fit on the
  // training texts), and `images` are then [embedding, lexical features] rows (TextInputs);
  // FAILED_PRECONDITION if the view is given without the line or missing with it.
  static absl::StatusOr<LowerTier> Fit(const Architecture& architecture, const MatrixF& images,
                                       uint64_t seed = 0,
                                       std::shared_ptr<const LexicalView> lexical = nullptr);
  static absl::StatusOr<LowerTier> Fit(const LowerTierSpec& spec, const MatrixF& images);

  // Features for a batch of images (one per row, input_size() columns): rows() x feature_size().
  // Thread-safe (const). Large batches are split into chunks run on the OpenMP threads.
  MatrixF Features(const MatrixF& images) const;

  const Architecture& architecture() const { return architecture_; }
  const Shape& input_shape() const { return input_; }
  int input_size() const { return input_.size(); }
  // The last stage's output; the input itself for a text tier without stages.
  int feature_size() const {
    return stages_.empty() ? input_.size() : stages_.back()->output_shape().size();
  }
  uint64_t seed() const { return seed_; }
  // The lexical view of a text tier with a `lexical` line, else null.
  const LexicalView* lexical() const { return lexical_.get(); }
  // A text tier's stage input for `texts` with their `embeddings` (one row each): the embeddings,
  // with the lexical view's features appended when the tier has one.
  MatrixF TextInputs(const MatrixF& embeddings, std::span<const std::string> texts) const;
  const std::vector<std::unique_ptr<Stage>>& stages() const { return stages_; }
  // Matrix-product multiply-accumulates per image (for energy accounting).
  uint64_t MacsPerSample() const;
  // Bytes of the fp32 parameters the stages' matrix products stream (the stages' ParameterBytes).
  uint64_t ParameterBytes() const;
  // The work model of Features(images) for `images` images (the energy meter prices it):
  // LowerTierInferenceCounts with the weights read once per chunk of kLowerTierRowsPerChunk
  // images, the same dataflow the int8 tier's backend calls count (docs/fpga.md, "Energy").
  fpga::OpCounts Counts(int images) const;
  // One line per stage, for ModelInfo and logs.
  std::vector<std::string> Describe() const;

  // Stores the architecture text and every stage's parameters ("lower.*" records).
  void Save(base::RecordFileWriter& writer) const;
  // Rebuilds a lower tier saved by Save(); DATA_LOSS (naming the record) if anything is missing or
  // of the wrong shape.
  static absl::StatusOr<LowerTier> Load(const base::RecordFileReader& reader);

 private:
  // The lexical view (if any) is set by Fit / Load.
  LowerTier(Architecture architecture, std::vector<std::unique_ptr<Stage>> stages, uint64_t seed);
  // Builds the unfitted stages of an architecture.
  static absl::StatusOr<LowerTier> Build(const Architecture& architecture, uint64_t seed);
  // Runs images through stages [0, end).
  void Run(const MatrixF& images, size_t end, MatrixF& out) const;

  Architecture architecture_;
  Shape input_;
  std::vector<std::unique_ptr<Stage>> stages_;
  uint64_t seed_ = 0;
  std::shared_ptr<const LexicalView> lexical_;  // null unless the spec has a `lexical` line
};

}  // namespace strata::model

#endif  // STRATA_MODEL_LOWER_TIER_H_
