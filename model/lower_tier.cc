#include "model/lower_tier.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace strata::model {
namespace {

// Rows per work item when a batch is split across threads (kLowerTierRowsPerChunk), and per chunk
// of a fit's pass over the training set: bound the memory of intermediate maps.
constexpr Eigen::Index kRowsPerChunk = kLowerTierRowsPerChunk;
constexpr Eigen::Index kRowsPerFitChunk = 2048;

}  // namespace

Architecture LowerTierSpec::ToArchitecture() const {
  Architecture a;
  a.height = image_height;
  a.width = image_width;
  a.channels = 1;
  a.stages.push_back({"conv",
                      {{"patch", absl::StrCat(patch)},
                       {"filters", absl::StrCat(filters)},
                       {"pca_images", absl::StrCat(pca_images)}}});
  a.stages.push_back({"split_relu", {}});
  a.stages.push_back({"pool", {{"size", absl::StrCat(pool)}}});
  if (sqrt) a.stages.push_back({"sqrt", {}});
  a.stages.push_back({"standardise", {}});
  if (expansion > 0) {
    a.stages.push_back(
        {"expand",
         {{"units", absl::StrCat(expansion)}, {"bias_scale", absl::StrCat(expansion_bias_scale)}}});
  }
  return a;
}

LowerTier::LowerTier(Architecture architecture, std::vector<std::unique_ptr<Stage>> stages,
                     uint64_t seed)
    : architecture_(std::move(architecture)),
      input_{architecture_.height, architecture_.width, architecture_.channels},
      stages_(std::move(stages)),
      seed_(seed) {}

MatrixF LowerTier::TextInputs(const MatrixF& embeddings, std::span<const std::string> texts) const {
  return AppendLexical(embeddings, lexical_.get(), texts);
}

absl::StatusOr<LowerTier> LowerTier::Build(const Architecture& architecture, uint64_t seed) {
  if (architecture.stages.empty() && !architecture.text.has_value()) {
    return absl::InvalidArgumentError("lower tier: no stages");
  }
  std::vector<std::unique_ptr<Stage>> stages;
  Shape shape{architecture.height, architecture.width, architecture.channels};
  for (const StageSpec& spec : architecture.stages) {
    absl::StatusOr<std::unique_ptr<Stage>> stage = MakeStage(spec, shape);
    if (!stage.ok()) return stage.status();
    shape = (*stage)->output_shape();
    if (shape.size() < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec line ", spec.line, ": ", spec.kind, " leaves no features"));
    }
    stages.push_back(*std::move(stage));
  }
  return LowerTier(architecture, std::move(stages), seed);
}

absl::StatusOr<LowerTier> LowerTier::Fit(const LowerTierSpec& spec, const MatrixF& images) {
  return Fit(spec.ToArchitecture(), images, spec.seed);
}

absl::StatusOr<LowerTier> LowerTier::Fit(const Architecture& architecture, const MatrixF& images,
                                         uint64_t seed,
                                         std::shared_ptr<const LexicalView> lexical) {
  if (architecture.lexical.has_value() != (lexical != nullptr)) {
    return absl::FailedPreconditionError(
        architecture.lexical.has_value()
            ? "lower tier fit: the spec has a `lexical` line but no fitted view was given"
            : "lower tier fit: a lexical view was given but the spec has no `lexical` line");
  }
  absl::StatusOr<LowerTier> tier = Build(architecture, seed);
  if (!tier.ok()) return tier.status();
  tier->lexical_ = std::move(lexical);
  if (images.cols() != tier->input_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("lower tier fit: images have ", images.cols(), " values, the input is ",
                     architecture.height, "x", architecture.width, "x", architecture.channels,
                     " = ", tier->input_size()));
  }
  if (images.rows() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("lower tier fit: need at least 2 images, got ", images.rows()));
  }
  if (!images.allFinite()) {
    return absl::InvalidArgumentError("lower tier fit: images contain NaN or Inf");
  }

  // The training rows as they reach stage `stage`, computed on demand from the images by the
  // stages already fitted.
  class StageInput final : public FitData {
   public:
    StageInput(const LowerTier& tier, const MatrixF& images, size_t stage)
        : tier_(tier), images_(images), stage_(stage) {}
    Eigen::Index rows() const override { return images_.rows(); }
    absl::Status ForEachChunk(
        const std::function<absl::Status(const MatrixF&)>& visit) const override {
      MatrixF chunk;
      for (Eigen::Index start = 0; start < images_.rows(); start += kRowsPerFitChunk) {
        const Eigen::Index n = std::min(kRowsPerFitChunk, images_.rows() - start);
        tier_.Run(images_.middleRows(start, n), stage_, chunk);
        if (absl::Status s = visit(chunk); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    MatrixF Rows(std::span<const Eigen::Index> indices) const override {
      MatrixF selected(static_cast<Eigen::Index>(indices.size()), images_.cols());
      for (size_t i = 0; i < indices.size(); ++i) {
        selected.row(static_cast<Eigen::Index>(i)) = images_.row(indices[i]);
      }
      MatrixF out;
      tier_.Run(selected, stage_, out);
      return out;
    }

   private:
    const LowerTier& tier_;
    const MatrixF& images_;
    size_t stage_;
  };

  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < tier->stages_.size(); ++i) {
    if (absl::Status s = tier->stages_[i]->Fit(StageInput(*tier, images, i), rng); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("lower tier stage ", i + 1, " (",
                                                 architecture.stages[i].kind, "): ", s.message()));
    }
  }
  return tier;
}

void LowerTier::Run(const MatrixF& images, size_t end, MatrixF& out) const {
  if (end == 0) {
    out = images;
    return;
  }
  const Eigen::Index n = images.rows();
  out.resize(n, stages_[end - 1]->output_shape().size());
  const Eigen::Index chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
  // Always inside a parallel region, even for one chunk: Eigen then runs the stages' small matrix
  // products single-threaded instead of opening a parallel region per product (which made small
  // batches ten times slower on a busy machine).
#pragma omp parallel
  {
    MatrixF a, b;
#pragma omp for schedule(dynamic)
    for (Eigen::Index chunk = 0; chunk < chunks; ++chunk) {
      const Eigen::Index start = chunk * kRowsPerChunk;
      const Eigen::Index rows = std::min(kRowsPerChunk, n - start);
      a = images.middleRows(start, rows);
      for (size_t s = 0; s < end; ++s) {
        stages_[s]->Apply(a, b);
        std::swap(a, b);
      }
      out.middleRows(start, rows) = a;
    }
  }
}

MatrixF LowerTier::Features(const MatrixF& images) const {
  MatrixF out;
  Run(images, stages_.size(), out);
  return out;
}

uint64_t LowerTier::MacsPerSample() const {
  uint64_t macs = 0;
  for (const auto& stage : stages_) macs += stage->MacsPerSample();
  return macs;
}

uint64_t LowerTier::ParameterBytes() const {
  uint64_t bytes = 0;
  for (const auto& stage : stages_) bytes += stage->ParameterBytes();
  return bytes;
}

fpga::OpCounts LowerTier::Counts(int images) const {
  const uint64_t chunks =
      (static_cast<uint64_t>(std::max(images, 0)) + kLowerTierRowsPerChunk - 1) /
      kLowerTierRowsPerChunk;
  return LowerTierInferenceCounts(MacsPerSample(), input_size(), feature_size(), images,
                                  chunks * ParameterBytes());
}

fpga::OpCounts LowerTierInferenceCounts(uint64_t macs_per_image, int input_size, int feature_size,
                                        int images, uint64_t parameter_bytes) {
  fpga::OpCounts counts;
  counts.fp32_macs = macs_per_image * static_cast<uint64_t>(std::max(images, 0));
  const double bytes = 4.0 * images * (static_cast<double>(input_size) + feature_size);
  counts.dram_bytes = (bytes <= 0 ? 0 : static_cast<uint64_t>(bytes)) + parameter_bytes;
  return counts;
}

std::vector<std::string> LowerTier::Describe() const {
  std::vector<std::string> lines = {
      absl::StrCat("input ", input_.height, "x", input_.width, "x", input_.channels)};
  if (lexical_ != nullptr) {
    const LexicalSpec& spec = lexical_->spec();
    lines.push_back(absl::StrCat("lexical ", spec.ngrams == 2 ? "word 1-2-grams" : "words",
                                 ", CRC-32C into 2^", spec.hash_bits, " buckets, ",
                                 lexical_->buckets().size(), " of ", spec.features,
                                 " kept by document frequency, tf-idf, L2 norm ", spec.weight));
  }
  for (const auto& stage : stages_) lines.push_back(stage->Describe());
  return lines;
}

void LowerTier::Save(base::RecordFileWriter& writer) const {
  writer.Strings("lower.architecture", {architecture_.ToText()});
  writer.Scalar<uint64_t>("lower.seed", seed_);
  if (lexical_ != nullptr) lexical_->Save(writer);
  for (size_t i = 0; i < stages_.size(); ++i) {
    stages_[i]->Save(writer, absl::StrCat("lower.", i, "."));
  }
}

absl::StatusOr<LowerTier> LowerTier::Load(const base::RecordFileReader& reader) {
  absl::StatusOr<std::vector<std::string>> text = reader.Strings("lower.architecture");
  if (!text.ok()) return text.status();
  if (text->size() != 1) return reader.Loss("record lower.architecture must hold one string");
  absl::StatusOr<Architecture> architecture = ParseArchitecture(text->front());
  if (!architecture.ok()) {
    return reader.Loss(
        absl::StrCat("record lower.architecture: ", architecture.status().message()));
  }
  absl::StatusOr<uint64_t> seed = reader.Scalar<uint64_t>("lower.seed");
  if (!seed.ok()) return seed.status();
  absl::StatusOr<LowerTier> tier = Build(*architecture, *seed);
  if (!tier.ok()) return reader.Loss(tier.status().message());
  if (architecture->lexical.has_value()) {
    absl::StatusOr<LexicalView> lexical = LexicalView::Load(*architecture->lexical, reader);
    if (!lexical.ok()) return lexical.status();
    tier->lexical_ = std::make_shared<const LexicalView>(*std::move(lexical));
  }
  for (size_t i = 0; i < tier->stages_.size(); ++i) {
    if (absl::Status s = tier->stages_[i]->Load(reader, absl::StrCat("lower.", i, ".")); !s.ok()) {
      return s;
    }
  }
  return tier;
}

}  // namespace strata::model
