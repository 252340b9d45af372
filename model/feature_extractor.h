// The feature extractor: what the upper tier reads. The frozen lower tier of a served model, built
// once at start-up (TensorFlow Serving's loader: construction is cheap, building the extractor does
// the work: quantising, loading layers onto a backend) and shared by everything that turns samples
// into features: model loading and every published version (update/model_store.h), recovery's
// replay of the update log (update/recovery.h) and strata-train (model/trainer.h). Replay equals the
// live absorbs bit for bit only because both run the same extractor.
//
// An extractor says what a sample is (its InputKind: an image of a given shape today; text, for a
// frozen transformer encoder with its tokenizer, later) and how wide its output is, and owns (or
// shares ownership of) everything it reads. The image implementations are FloatLowerTierExtractor
// (model/lower_tier_extractor.h, fp32 on the host) and model::QuantizedLowerTier (int8 matrix
// products on an fpga::Backend); MakeLowerTierExtractor chooses between them.
#ifndef STRATA_MODEL_FEATURE_EXTRACTOR_H_
#define STRATA_MODEL_FEATURE_EXTRACTOR_H_

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

  static InputKind Image(const Shape& shape) { return {Type::kImage, shape}; }
  bool is_image() const { return type == Type::kImage; }
};

// Immutable once built; every method is const and thread-safe (Features may run concurrently).
class FeatureExtractor {
 public:
  virtual ~FeatureExtractor() = default;

  virtual InputKind input_kind() const = 0;
  // Values per input row: for an image, input_kind().image.size().
  virtual int input_size() const = 0;
  // Features per sample: the width of the upper tier's statistics.
  virtual int feature_size() const = 0;
  // Where it computes: "float" (fp32 on the host) or the backend's name ("cpu", "emu", "xrt").
  virtual const std::string& device() const = 0;
  // The backend its matrix products run on (not owned: it outlives the extractor); null for float.
  // The upper tier's int8 Gram accumulator runs on the same one.
  virtual fpga::Backend* backend() const = 0;

  // Features of a batch (one sample per row, input_size() values): rows() x feature_size(). If
  // `counts` is not null it receives the work: the backend's reported OpCounts, or for float the
  // lower tier's own estimate from the shapes (LowerTier::Counts, fp32). INVALID_ARGUMENT if
  // inputs.cols() != input_size(); the backend's errors (xrt) otherwise.
  virtual absl::StatusOr<MatrixF> Features(const MatrixF& inputs,
                                           fpga::OpCounts* counts = nullptr) const = 0;

  // One line per stage, for ModelInfo and logs.
  virtual std::vector<std::string> Describe() const = 0;

  // The fitted image lower tier the features come from (its architecture and parameters, for
  // energy estimates); null for an extractor that has none.
  virtual const LowerTier* lower_tier() const = 0;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_FEATURE_EXTRACTOR_H_
