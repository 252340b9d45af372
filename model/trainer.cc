#include "model/trainer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/lower_tier_extractor.h"
#include "model/quantized_lower_tier.h"

namespace strata::model {
namespace {

constexpr Eigen::Index kBlock = 5000;  // images per feature block: bounds peak memory

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

// Correct predictions among feature rows whose labels start at labels[offset].
size_t Correct(const Readout& readout, const MatrixF& features,
               const std::vector<std::string>& labels, size_t offset) {
  const MatrixF scores = readout.Scores(features);
  size_t correct = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    correct += readout.labels[best] == labels[offset + i];
  }
  return correct;
}

absl::Status CheckData(const TrainOptions& options, const TrainingData& data) {
  if (!(options.lambda > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lambda is ", options.lambda, ", expected a value > 0"));
  }
  const Architecture& a = options.architecture;
  if (data.train.images.cols() != static_cast<Eigen::Index>(a.height) * a.width * a.channels) {
    return absl::InvalidArgumentError(absl::StrCat("the spec's input is ", a.height, "x", a.width,
                                                   "x", a.channels, ", the training images have ",
                                                   data.train.images.cols(), " values"));
  }
  for (const LabelledImages* set : {&data.train, data.test ? &*data.test : nullptr}) {
    if (set != nullptr && static_cast<size_t>(set->images.rows()) != set->labels.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(set->images.rows(), " images but ", set->labels.size(), " labels"));
    }
  }
  return absl::OkStatus();
}

// The int8 activation scales stored in the bundle: a float pass over the first
// int8_calibration_images training images (none if that is 0).
absl::StatusOr<Int8Calibration> CalibrateInt8(const TrainOptions& options, const LowerTier& lower,
                                              const MatrixF& images, TrainReport& report) {
  if (options.int8_calibration_images == 0) return Int8Calibration{};
  const absl::Time start = absl::Now();
  const Eigen::Index rows = std::min<Eigen::Index>(
      images.rows(), static_cast<Eigen::Index>(options.int8_calibration_images));
  absl::StatusOr<Int8Calibration> calibrated = QuantizedLowerTier::CalibrateActivations(
      lower, images.topRows(rows), {.percentile = options.int8_percentile});
  if (!calibrated.ok()) {
    return absl::Status(calibrated.status().code(),
                        absl::StrCat("int8 calibration: ", calibrated.status().message()));
  }
  report.calibration_images = rows;
  report.calibration_seconds = Seconds(start);
  return calibrated;
}

// The readout's lower tier (int8 on the readout device's backend when there are scales, else
// float) and the backend it and the Gram kernel run on (cpu for a float lower tier).
absl::Status BuildReadoutExtractor(const TrainOptions& options, TrainedModel& model) {
  const Bundle& bundle = model.bundle;
  // Without scales the int8 lower tier cannot exist: do not open (or fail on) its device.
  model.report.readout_float_without_scales =
      options.readout_device != "float" && bundle.int8.empty();
  const bool int8_lower = options.readout_device != "float" && !bundle.int8.empty();
  if (int8_lower || options.readout_int8) {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend =
        fpga::CreateBackend(int8_lower ? options.readout_device : "cpu");
    if (!backend.ok()) {
      return absl::Status(backend.status().code(),
                          absl::StrCat("--readout_device: ", backend.status().message()));
    }
    model.backend = *std::move(backend);
  }
  absl::StatusOr<std::shared_ptr<const FeatureExtractor>> extractor =
      MakeLowerTierExtractor(bundle.lower, bundle.int8, int8_lower ? model.backend.get() : nullptr);
  if (!extractor.ok()) {
    return absl::Status(extractor.status().code(),
                        absl::StrCat("--readout_device: ", extractor.status().message()));
  }
  model.readout_extractor = *std::move(extractor);
  return absl::OkStatus();
}

// `images` (rows of height x width x channels) each moved by (dx, dy) pixels, zeros shifted in.
MatrixF Shifted(const MatrixF& images, const Architecture& a, int dx, int dy) {
  MatrixF out = MatrixF::Zero(images.rows(), images.cols());
  for (Eigen::Index n = 0; n < images.rows(); ++n) {
    for (int y = std::max(0, dy); y < std::min(a.height, a.height + dy); ++y) {
      for (int x = std::max(0, dx); x < std::min(a.width, a.width + dx); ++x) {
        for (int c = 0; c < a.channels; ++c) {
          out(n, (y * a.width + x) * a.channels + c) =
              images(n, ((y - dy) * a.width + (x - dx)) * a.channels + c);
        }
      }
    }
  }
  return out;
}

// `images` mirrored left to right.
MatrixF Mirrored(const MatrixF& images, const Architecture& a) {
  MatrixF out(images.rows(), images.cols());
  for (Eigen::Index n = 0; n < images.rows(); ++n) {
    for (int y = 0; y < a.height; ++y) {
      for (int x = 0; x < a.width; ++x) {
        for (int c = 0; c < a.channels; ++c) {
          out(n, (y * a.width + x) * a.channels + c) =
              images(n, (y * a.width + (a.width - 1 - x)) * a.channels + c);
        }
      }
    }
  }
  return out;
}

// The label-preserving copies of `images` the architecture's augmentation asks for.
std::vector<MatrixF> AugmentedCopies(const MatrixF& images, const Architecture& a) {
  std::vector<MatrixF> copies;
  if (a.augment.hflip) copies.push_back(Mirrored(images, a));
  if (const int s = a.augment.shift; s > 0) {
    for (const auto& [dx, dy] :
         {std::pair{-s, 0}, std::pair{s, 0}, std::pair{0, -s}, std::pair{0, s}}) {
      copies.push_back(Shifted(images, a, dx, dy));
    }
  }
  return copies;
}

// Absorbs the readout features of `images`' augmented copies (TrainOptions::architecture.augment)
// with `labels`; adds the feature time to report.feature_seconds.
absl::Status AbsorbAugmented(const TrainOptions& options, const MatrixF& images,
                             std::span<const std::string> labels, TrainedModel& model) {
  for (const MatrixF& copy : AugmentedCopies(images, options.architecture)) {
    const absl::Time features_start = absl::Now();
    absl::StatusOr<MatrixF> features = model.readout_extractor->Features(copy);
    if (!features.ok()) return features.status();
    model.report.feature_seconds += Seconds(features_start);
    fpga::OpCounts counts;
    if (absl::Status s = model.bundle.upper.AbsorbLabeled(*features, labels, &counts).status();
        !s.ok()) {
      return s;
    }
    model.report.gram_counts += counts;
    model.report.augmented_rows += copy.rows();
  }
  return absl::OkStatus();
}

// Absorbs every training sample's readout features into model.bundle.upper (keeping the features
// in `kept`, for the train accuracy), then folds the Gram kernel's sums.
absl::Status AbsorbTraining(const TrainOptions& options, const LabelledImages& train,
                            TrainedModel& model, std::vector<MatrixF>& kept) {
  UpperTier& upper = model.bundle.upper;
  TrainReport& report = model.report;
  const absl::Time start = absl::Now();
  for (Eigen::Index begin = 0; begin < train.images.rows(); begin += kBlock) {
    const Eigen::Index rows = std::min(kBlock, train.images.rows() - begin);
    const absl::Time features_start = absl::Now();
    absl::StatusOr<MatrixF> features =
        model.readout_extractor->Features(train.images.middleRows(begin, rows));
    if (!features.ok()) return features.status();
    if (options.readout_int8 && begin == 0) {
      // Scales from the first block: a few thousand rows pin every feature's range.
      absl::StatusOr<std::vector<float>> scales =
          CalibrateReadoutScales(*features, options.readout_percentile);
      absl::Status set =
          scales.ok() ? upper.set_readout_scales(*std::move(scales)) : scales.status();
      if (set.ok()) set = upper.AttachGramBackend(model.backend.get());
      if (!set.ok()) {
        return absl::Status(set.code(), absl::StrCat("readout scales: ", set.message()));
      }
    }
    report.feature_seconds += Seconds(features_start);
    if (options.empty_upper) break;  // the first block set the scales; nothing is absorbed
    const std::span<const std::string> labels(train.labels.data() + begin, rows);
    fpga::OpCounts counts;
    if (absl::Status s = upper.AbsorbLabeled(*features, labels, &counts).status(); !s.ok()) {
      return s;
    }
    report.gram_counts += counts;
    kept.push_back(*std::move(features));
    if (absl::Status s =
            AbsorbAugmented(options, train.images.middleRows(begin, rows), labels, model);
        !s.ok()) {
      return s;
    }
  }
  fpga::OpCounts staged_counts;
  if (absl::Status s = upper.FoldGram(&report.fold_counts, &staged_counts); !s.ok()) return s;
  report.gram_counts += staged_counts;  // the last, partial block of rows
  report.absorb_seconds = Seconds(start) - report.feature_seconds;
  return absl::OkStatus();
}

// Solves the readout, then measures the train accuracy (on the kept features, which it then frees)
// and the test one.
absl::Status SolveAndEvaluate(const TrainingData& data, std::vector<MatrixF>& kept,
                              TrainedModel& model) {
  absl::Time phase = absl::Now();
  absl::StatusOr<Readout> readout = model.bundle.upper.Solve();
  if (!readout.ok()) return readout.status();
  model.readout = *std::move(readout);
  model.report.solve_seconds = Seconds(phase);

  phase = absl::Now();
  size_t train_correct = 0, offset = 0;
  for (const MatrixF& features : kept) {
    train_correct += Correct(model.readout, features, data.train.labels, offset);
    offset += features.rows();
  }
  kept.clear();
  model.report.train_accuracy =
      static_cast<double>(train_correct) / static_cast<double>(data.train.labels.size());
  if (data.test) {
    absl::StatusOr<double> test = Accuracy(*model.readout_extractor, model.readout, *data.test);
    if (!test.ok()) return test.status();
    model.report.test_accuracy = *test;
  }
  model.report.evaluate_seconds = Seconds(phase);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<double> Accuracy(const FeatureExtractor& extractor, const Readout& readout,
                                const LabelledImages& data, fpga::OpCounts* counts) {
  size_t correct = 0;
  fpga::OpCounts total;
  for (Eigen::Index start = 0; start < data.images.rows(); start += kBlock) {
    const Eigen::Index rows = std::min(kBlock, data.images.rows() - start);
    fpga::OpCounts block_counts;
    absl::StatusOr<MatrixF> features =
        extractor.Features(data.images.middleRows(start, rows), &block_counts);
    if (!features.ok()) return features.status();
    total += block_counts;
    correct += Correct(readout, *features, data.labels, start);
  }
  if (counts != nullptr) *counts = total;
  return data.images.rows() == 0 ? 0.0 : static_cast<double>(correct) / data.images.rows();
}

absl::Status AbsorbAll(const FeatureExtractor& extractor, const LabelledImages& data,
                       UpperTier& upper) {
  for (Eigen::Index begin = 0; begin < data.images.rows(); begin += kBlock) {
    const Eigen::Index rows = std::min(kBlock, data.images.rows() - begin);
    absl::StatusOr<MatrixF> features = extractor.Features(data.images.middleRows(begin, rows));
    if (!features.ok()) return features.status();
    const std::span<const std::string> labels(data.labels.data() + begin, rows);
    if (absl::Status s = upper.AbsorbLabeled(*features, labels).status(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainedModel> Train(const TrainOptions& options, const TrainingData& data) {
  if (absl::Status s = CheckData(options, data); !s.ok()) return s;
  TrainReport report;
  // Lower tier: one eigen-solve, standardisation statistics, random expansion.
  const absl::Time start = absl::Now();
  absl::StatusOr<LowerTier> fitted =
      LowerTier::Fit(options.architecture, data.train.images, options.seed, data.lexical);
  if (!fitted.ok()) return fitted.status();
  report.lower_seconds = Seconds(start);
  auto lower = std::make_shared<const LowerTier>(*std::move(fitted));
  absl::StatusOr<Int8Calibration> int8 = CalibrateInt8(options, *lower, data.train.images, report);
  if (!int8.ok()) return int8.status();

  // Upper tier: absorb every training sample into G and Q, then one Cholesky solve.
  const int feature_size = lower->feature_size();
  TrainedModel model{
      .backend = nullptr,
      .bundle = {std::move(lower), UpperTier(feature_size, options.lambda), 1, *std::move(int8)},
      .readout_extractor = nullptr,
      .readout = {},
      .report = report};
  if (absl::Status s = BuildReadoutExtractor(options, model); !s.ok()) return s;
  std::vector<MatrixF> kept;  // the training features, for the train accuracy
  if (absl::Status s = AbsorbTraining(options, data.train, model, kept); !s.ok()) return s;
  if (!options.empty_upper) {
    if (absl::Status s = SolveAndEvaluate(data, kept, model); !s.ok()) return s;
  }
  model.bundle.readout_features = model.readout_extractor->backend() != nullptr ? "int8" : "float";
  model.bundle.readout_percentile = options.readout_int8 ? options.readout_percentile : 0;
  return model;
}

}  // namespace strata::model
