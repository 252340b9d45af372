// The feature extractor: what the upper tier reads. The frozen lower tier of a served model, built
// once at start-up (TensorFlow Serving's loader: construction is cheap, building the extractor does
// the work: quantising, loading layers onto a backend) and shared by everything that turns samples
// into features: model loading and every published version (update/model_store.h), recovery's
// replay of the update log (update/recovery.h) and strata-train (model/trainer.h). Replay equals the
// live absorbs bit for bit only because both run the same extractor.
//
// An extractor says what a sample is (its InputKind: an image of a given shape, or a UTF-8 text for
// a frozen transformer encoder with its tokenizer) and how wide its output is, and owns (or shares
// ownership of) everything it reads. The image implementations are FloatLowerTierExtractor
// (model/lower_tier_extractor.h, fp32 on the host) and model::QuantizedLowerTier (int8 matrix
// products on an fpga::Backend); MakeLowerTierExtractor chooses between them. The text one is
// text::TextFeatureExtractor (text/text_extractor.h: the encoder, then an optional fitted LowerTier
// over its embedding).
#ifndef STRATA_MODEL_FEATURE_EXTRACTOR_H_
#define STRATA_MODEL_FEATURE_EXTRACTOR_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"
#include "model/stages.h"
#include "model/tensor.h"

namespace strata::model {

class LowerTier;

// What one sample is, for the extractor that reads it.
struct InputKind {
  enum class Type { kImage, kText };
  Type type = Type::kImage;
  // kImage: height x width x channels; a sample is image.size() values in [0, 1] (PixelValue() of
  // its bytes), row-major HWC.
  Shape image;
  // kText: a sample is 1..max_text_bytes bytes of UTF-8 (longer texts are refused, not cut: the
  // limit bounds a request's work); the tokenizer keeps its first max_tokens tokens ([CLS] and
  // [SEP] included) and drops the rest.
  int max_text_bytes = 0;
  int max_tokens = 0;

  static InputKind Image(const Shape& shape) { return {Type::kImage, shape}; }
  static InputKind Text(int max_text_bytes, int max_tokens) {
    return {Type::kText, Shape{}, max_text_bytes, max_tokens};
  }
  bool is_image() const { return type == Type::kImage; }
  bool is_text() const { return type == Type::kText; }
  // "image" or "text", as ModelInfo.input_kind and error messages say it.
  const char* name() const { return is_text() ? "text" : "image"; }
};

// A batch of samples of one kind, one per row: image values (kImage) or texts (kText). The other
// member stays empty.
struct SampleBatch {
  MatrixF values;                  // kImage: size() x input_size(), PixelValue() scale
  std::vector<std::string> texts;  // kText: UTF-8

  Eigen::Index size() const {
    return texts.empty() ? values.rows() : static_cast<Eigen::Index>(texts.size());
  }
  // Samples [begin, begin + count), copied.
  SampleBatch Slice(Eigen::Index begin, Eigen::Index count) const {
    if (!texts.empty()) {
      return {MatrixF(),
              std::vector<std::string>(texts.begin() + begin, texts.begin() + begin + count)};
    }
    return {values.middleRows(begin, count), {}};
  }
};

// Immutable once built; every method is const and thread-safe (Features may run concurrently).
class FeatureExtractor {
 public:
  virtual ~FeatureExtractor() = default;

  virtual InputKind input_kind() const = 0;
  // Values per input row: for an image, input_kind().image.size(); 0 for text.
  virtual int input_size() const = 0;
  // Features per sample: the width of the upper tier's statistics.
  virtual int feature_size() const = 0;
  // Where it computes: "float" (fp32 on the host) or the backend's name ("cpu", "emu", "xrt").
  virtual const std::string& device() const = 0;
  // The backend its matrix products run on (not owned: it outlives the extractor); null for float.
  // The upper tier's int8 Gram accumulator runs on the same one.
  virtual fpga::Backend* backend() const = 0;

  // Features of a batch of images (one sample per row, input_size() values): rows() x
  // feature_size(). If `counts` is not null it receives the work: the backend's reported
  // OpCounts, or for float the lower tier's own estimate from the shapes (LowerTier::Counts, fp32).
  // INVALID_ARGUMENT if inputs.cols() != input_size() or the extractor takes text; the backend's
  // errors (xrt) otherwise.
  virtual absl::StatusOr<MatrixF> Features(const MatrixF& inputs,
                                           fpga::OpCounts* counts = nullptr) const = 0;

  // Features of a batch of texts: texts.size() x feature_size(); `counts` as for Features.
  // INVALID_ARGUMENT for an extractor that takes images (this default) and for a text that is not
  // valid UTF-8 (naming its index); the backend's errors otherwise. Callers validate texts first
  // (update/sample.h: non-empty, UTF-8, within max_text_bytes).
  virtual absl::StatusOr<MatrixF> TextFeatures(std::span<const std::string> texts,
                                               fpga::OpCounts* counts = nullptr) const {
    return absl::InvalidArgumentError("this model takes images, not text");
  }

  // Features of a batch of either kind: TextFeatures(batch.texts) for a text extractor, else
  // Features(batch.values). The one entry point the server, recovery and replicas use.
  absl::StatusOr<MatrixF> BatchFeatures(const SampleBatch& batch,
                                        fpga::OpCounts* counts = nullptr) const {
    if (input_kind().is_text()) return TextFeatures(batch.texts, counts);
    return Features(batch.values, counts);
  }

  // One line per stage, for ModelInfo and logs.
  virtual std::vector<std::string> Describe() const = 0;

  // The fitted image lower tier the features come from (its architecture and parameters, for
  // energy estimates); null for an extractor that has none.
  virtual const LowerTier* lower_tier() const = 0;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_FEATURE_EXTRACTOR_H_
