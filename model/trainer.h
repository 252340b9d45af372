// The trainer: fits both tiers in one step on labelled images and returns the model bundle, the way
// strata-train, tests and benchmarks all do it. No gradient iterations: the lower tier's stages are
// fit once each, in order (model/lower_tier.h); the readout is one pass that absorbs every training
// sample into G and Q, then one Cholesky solve (model/upper_tier.h).
//
// The readout's features come from the lower tier the server will serve with
// (TrainOptions::readout_device): its G and Q then hold exactly the features later absorbs add.
#ifndef STRATA_MODEL_TRAINER_H_
#define STRATA_MODEL_TRAINER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fpga/backend.h"
#include "model/architecture.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "model/lower_tier.h"
#include "model/tensor.h"
#include "model/upper_tier.h"

namespace strata::model {

struct TrainOptions {
  // The lower tier's stages. Default: specs/default.spec.
  Architecture architecture = LowerTierSpec{}.ToArchitecture();
  // Seed of the PCA sample and the random stages.
  uint64_t seed = 0;
  // Ridge regularisation of the upper tier, > 0. Default 30.
  double lambda = 30.0;
  // Training images (the first ones) that calibrate the int8 activation scales stored in the bundle
  // (so strata-server can run the lower tier in int8); 0 stores none (a float-only bundle).
  // Default 2000: about a second of float passes.
  size_t int8_calibration_images = 2000;
  // Percentile of |activation| that sets the int8 activation scales, in (0, 100]. Default 99.99.
  double int8_percentile = 99.99;
  // The lower tier the readout is fit on: "float", or the int8 lower tier on the "cpu", "emu",
  // "xrt" or "auto" backend. Default "cpu": the features strata-server computes under --device=cpu
  // or auto without a card (bit-identical to emu and xrt). Without int8 scales: float.
  std::string readout_device = "cpu";
  // Quantise the readout features to int8 (per-feature scales at readout_percentile over the first
  // block of training images) and accumulate G and Q exactly on the backend's Gram kernel (the
  // readout device's backend; the cpu backend for float). false: the float64 host Gram.
  bool readout_int8 = true;
  double readout_percentile = 100;
  // Fit the lower tier (and the int8 and readout scales) only: the upper tier stays empty, with no
  // sample and no class, so a server started from the bundle learns every class from its Update
  // streams (its Predict fails until the first class arrives). The train and test accuracy are
  // then not measured.
  bool empty_upper = false;
};

// Images (one per row, PixelValue() scale) and their labels.
struct LabelledImages {
  MatrixF images;
  std::vector<std::string> labels;
};

struct TrainingData {
  LabelledImages train;
  std::optional<LabelledImages> test;  // if set, the test accuracy is measured
  // A text spec's lexical view, fitted on the training texts (whose rows in `train` and `test` are
  // then [embedding, lexical features]); null otherwise.
  std::shared_ptr<const LexicalView> lexical;
};

// What training did and how long each phase took, for strata-train's report.
struct TrainReport {
  double lower_seconds = 0;        // the lower tier's fit
  double calibration_seconds = 0;  // the int8 activation scales
  Eigen::Index calibration_images = 0;
  // readout_device asked for int8 but there are no scales: the readout was fit on float features.
  bool readout_float_without_scales = false;
  double feature_seconds = 0;  // the readout's training features (augmented copies included)
  // Rows absorbed besides the training images: their augmented copies (Architecture::augment).
  Eigen::Index augmented_rows = 0;
  double absorb_seconds = 0;  // absorbing them into G and Q
  double solve_seconds = 0;   // the Cholesky solve
  double evaluate_seconds = 0;
  // With readout_int8: the Gram kernel's work, and folding its sums into float64.
  fpga::OpCounts gram_counts;
  fpga::OpCounts fold_counts;
  double train_accuracy = 0;
  std::optional<double> test_accuracy;  // with TrainingData::test

  double fit_seconds() const {
    return lower_seconds + feature_seconds + absorb_seconds + solve_seconds;
  }
};

// A trained model. Members are destroyed bottom-up, so the backend outlives what runs on it.
struct TrainedModel {
  // The backend of the readout's int8 lower tier and Gram kernel; null for a float readout with
  // a float64 Gram.
  std::unique_ptr<fpga::Backend> backend;
  Bundle bundle;  // what strata-train writes
  // The lower tier the readout was fit on (shares bundle.lower).
  std::shared_ptr<const FeatureExtractor> readout_extractor;
  Readout readout;  // solved from bundle.upper
  TrainReport report;
};

// Fits the lower tier, calibrates the int8 scales, fits and solves the readout and measures the
// accuracy. INVALID_ARGUMENT if lambda <= 0, the training images do not match the architecture's
// input or a label count differs from its image count; a backend's errors (FAILED_PRECONDITION for
// xrt without a card); a stage's or the solver's errors otherwise.
absl::StatusOr<TrainedModel> Train(const TrainOptions& options, const TrainingData& data);

// Fraction of `images` whose predicted label (from `extractor`'s features and `readout`) equals
// its label, computed in blocks that bound memory; `counts` (if not null) receives the extractor's
// reported work. The extractor's errors.
absl::StatusOr<double> Accuracy(const FeatureExtractor& extractor, const Readout& readout,
                                const LabelledImages& data, fpga::OpCounts* counts = nullptr);

// Absorbs every image's features from `extractor` into `upper` with its label, in blocks.
absl::Status AbsorbAll(const FeatureExtractor& extractor, const LabelledImages& data,
                       UpperTier& upper);

}  // namespace strata::model

#endif  // STRATA_MODEL_TRAINER_H_
