// strata-train: fits both tiers in one step on a labelled image data set and writes a model bundle.
//
//   strata-train --train=fashion-mnist:train --test=fashion-mnist:test --out=model.bundle
//
// Prints the fit time of each phase, train and test accuracy, and the bundle written.
#include <sys/resource.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "data/dataset.h"
#include "fpga/backend.h"
#include "fpga/energy.h"
#include "model/architecture.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/quantized_lower_tier.h"
#include "model/tensor.h"
#include "model/upper_tier.h"

ABSL_FLAG(std::string, train, "fashion-mnist:train",
          "Training data: fashion-mnist:train, idx:IMAGES,LABELS or csv:PATH");
ABSL_FLAG(size_t, train_offset, 0, "Training samples to skip at the start of --train");
ABSL_FLAG(size_t, train_limit, 0, "Training samples to use after the offset (0: all)");
ABSL_FLAG(std::string, test, "fashion-mnist:test", "Test data (same forms as --train); empty: none");
ABSL_FLAG(size_t, test_limit, 0, "Test samples to use (0: all)");
ABSL_FLAG(std::string, out, "strata.bundle", "Where to write the model bundle");
ABSL_FLAG(std::string, spec, "",
          "Lower-tier architecture file (docs/lower-tier-spec.md; e.g. specs/default.spec). "
          "Empty: the built-in default, the same as specs/default.spec");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the PCA sample and the random stages");
ABSL_FLAG(double, lambda, 30.0, "Ridge regularisation of the upper tier (> 0)");
ABSL_FLAG(std::string, int8_backend, "none",
          "After the float fit, also evaluate the lower tier quantised to int8 on this backend "
          "(cpu, emu, xrt, auto; none: skip). Reports test accuracy with float and int8 features");
ABSL_FLAG(size_t, int8_calibration_images, 2000,
          "Training images (the first ones) that calibrate the int8 activation scales. The scales "
          "(at the first --int8_percentiles value) are always stored in the bundle, so that "
          "strata-server can run the lower tier in int8 (--device); 0 stores none (float only)");
ABSL_FLAG(std::vector<std::string>, int8_percentiles, {"99.99"},
          "Percentiles of |activation| that set the int8 activation scales (100: the maximum); "
          "with several (e.g. 99.99,100) each is calibrated and evaluated, the first re-solved");
ABSL_FLAG(std::string, readout_device, "cpu",
          "The lower tier whose features the readout is fit on: float (the float lower tier), or "
          "the int8 lower tier on the cpu, emu, xrt or auto backend. Default cpu: the features "
          "strata-server computes under --device=cpu or auto without a card (and bit-identical "
          "to emu and xrt), so the bundle's G and Q hold the features its absorbs will add. "
          "With --int8_calibration_images=0 (no int8 scales) the float features are used");
ABSL_FLAG(bool, readout_int8, true,
          "Quantise the readout features to int8 (per-feature scales, --readout_percentile) and "
          "accumulate G = H^T H, Q = H^T Y exactly with the backend's Gram kernel (the "
          "--readout_device backend; the cpu backend for float). false: float64 host Gram");
ABSL_FLAG(double, readout_percentile, 100,
          "Percentile of |h_j| over the first feature block (5,000 training images) that sets "
          "each readout feature's int8 scale (100: the maximum)");
ABSL_FLAG(bool, int8_resolve, true,
          "With --int8_backend: also re-solve the readout on int8 training features and report "
          "its test accuracy (costs another pass over the training set and a solve)");

namespace strata {
namespace {

constexpr Eigen::Index kBlock = 5000;  // images per feature block: bounds peak memory

model::MatrixF ToMatrix(const data::LabeledImages& images) {
  return model::PixelsToMatrix(images.pixels, static_cast<Eigen::Index>(images.image_size()));
}

// Correct predictions among feature rows whose labels start at labels[offset].
size_t Correct(const model::Readout& readout, const model::MatrixF& features,
               const std::vector<std::string>& labels, size_t offset) {
  const model::MatrixF scores = readout.Scores(features);
  size_t correct = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    correct += readout.labels[best] == labels[offset + i];
  }
  return correct;
}

// Fraction of `images` whose predicted label equals their label.
double Accuracy(const model::LowerTier& lower, const model::Readout& readout,
                const model::MatrixF& images, const std::vector<std::string>& labels) {
  size_t correct = 0;
  for (Eigen::Index start = 0; start < images.rows(); start += kBlock) {
    const Eigen::Index rows = std::min(kBlock, images.rows() - start);
    correct += Correct(readout, lower.Features(images.middleRows(start, rows)), labels, start);
  }
  return images.rows() == 0 ? 0.0 : static_cast<double>(correct) / images.rows();
}

// Peak resident memory of this process so far, in MiB.
double PeakMemoryMiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

// Fraction of `images` predicted right from the int8 lower tier's features; adds the backend's
// work to `counts`.
absl::StatusOr<double> Int8Accuracy(const model::QuantizedLowerTier& lower,
                                    const model::Readout& readout, const model::MatrixF& images,
                                    const std::vector<std::string>& labels,
                                    fpga::OpCounts& counts) {
  size_t correct = 0;
  for (Eigen::Index start = 0; start < images.rows(); start += kBlock) {
    const Eigen::Index rows = std::min(kBlock, images.rows() - start);
    fpga::OpCounts block_counts;
    absl::StatusOr<model::MatrixF> features =
        lower.Features(images.middleRows(start, rows), &block_counts);
    if (!features.ok()) return features.status();
    counts += block_counts;
    correct += Correct(readout, *features, labels, start);
  }
  return images.rows() == 0 ? 0.0 : static_cast<double>(correct) / images.rows();
}

// --int8_backend: quantises the fitted lower tier, then reports the test accuracy of the float
// readout on int8 features (and of a readout re-solved on int8 features) next to the float one.
absl::Status EvaluateInt8(const model::LowerTier& lower, fpga::Backend& backend,
                          const model::MatrixF& train_images, const data::LabeledImages& train,
                          const data::LabeledImages& test, const model::Readout& readout,
                          double lambda, double float_accuracy, double percentile, bool resolve) {
  absl::Time phase = absl::Now();
  const Eigen::Index calibration_rows =
      std::min<Eigen::Index>(train_images.rows(),
                             static_cast<Eigen::Index>(absl::GetFlag(FLAGS_int8_calibration_images)));
  absl::StatusOr<model::QuantizedLowerTier> quantized = model::QuantizedLowerTier::Calibrate(
      lower, train_images.topRows(calibration_rows), backend,
      {.percentile = percentile});
  if (!quantized.ok()) return quantized.status();
  std::printf("int8     backend %s (%s); calibrated on %td training images, activation "
              "percentile %g, in %.2f s\n",
              backend.info().name.c_str(), backend.info().description.c_str(), calibration_rows,
              percentile, Seconds(phase));
  for (const std::string& line : quantized->Describe()) std::printf("int8     %s\n", line.c_str());

  phase = absl::Now();
  const model::MatrixF test_images = ToMatrix(test);
  fpga::OpCounts counts;
  absl::StatusOr<double> int8_accuracy =
      Int8Accuracy(*quantized, readout, test_images, test.labels, counts);
  if (!int8_accuracy.ok()) return int8_accuracy.status();
  const double per_image = test_images.rows() > 0 ? 1.0 / test_images.rows() : 0.0;
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(backend.info().name);
  std::printf("int8     test features in %.2f s: %.0f int8 MACs/image%s\n", Seconds(phase),
              static_cast<double>(counts.int8_macs) * per_image,
              table.ok() ? absl::StrCat(", ", fpga::Joules(counts, *table) * per_image * 1e6,
                                        " uJ/image by the ", backend.info().name,
                                        " energy table").c_str()
                         : "");
  std::printf("int8     test accuracy: float features %.2f%%, int8 features (same readout) %.2f%% "
              "(%+.2f points)\n",
              100 * float_accuracy, 100 * *int8_accuracy,
              100 * (*int8_accuracy - float_accuracy));

  if (!resolve) return absl::OkStatus();
  phase = absl::Now();
  model::UpperTier upper(quantized->feature_size(), lambda);
  for (Eigen::Index begin = 0; begin < train_images.rows(); begin += kBlock) {
    const Eigen::Index rows = std::min(kBlock, train_images.rows() - begin);
    absl::StatusOr<model::MatrixF> features =
        quantized->Features(train_images.middleRows(begin, rows));
    if (!features.ok()) return features.status();
    const std::span<const std::string> labels(train.labels.data() + begin, rows);
    if (absl::Status s = upper.AbsorbLabeled(*features, labels).status(); !s.ok()) return s;
  }
  absl::StatusOr<model::Readout> resolved = upper.Solve();
  if (!resolved.ok()) return resolved.status();
  fpga::OpCounts unused;
  absl::StatusOr<double> resolved_accuracy =
      Int8Accuracy(*quantized, *resolved, test_images, test.labels, unused);
  if (!resolved_accuracy.ok()) return resolved_accuracy.status();
  std::printf("int8     test accuracy, readout re-solved on int8 training features: %.2f%% "
              "(%+.2f points vs float), in %.2f s\n",
              100 * *resolved_accuracy, 100 * (*resolved_accuracy - float_accuracy),
              Seconds(phase));
  return absl::OkStatus();
}

int Run() {
  const absl::Time start = absl::Now();
  absl::StatusOr<data::LabeledImages> train = data::Load(
      absl::GetFlag(FLAGS_train), {absl::GetFlag(FLAGS_train_offset), absl::GetFlag(FLAGS_train_limit)});
  if (!train.ok()) {
    std::fprintf(stderr, "strata-train: reading --train: %s\n", train.status().ToString().c_str());
    return 1;
  }
  std::optional<data::LabeledImages> test;
  if (!absl::GetFlag(FLAGS_test).empty()) {
    absl::StatusOr<data::LabeledImages> t =
        data::Load(absl::GetFlag(FLAGS_test), {0, absl::GetFlag(FLAGS_test_limit)});
    if (!t.ok()) {
      std::fprintf(stderr, "strata-train: reading --test: %s\n", t.status().ToString().c_str());
      return 1;
    }
    test = *std::move(t);
  }
  model::Architecture architecture = model::LowerTierSpec{}.ToArchitecture();
  if (!absl::GetFlag(FLAGS_spec).empty()) {
    absl::StatusOr<model::Architecture> read = model::ReadArchitecture(absl::GetFlag(FLAGS_spec));
    if (!read.ok()) {
      std::fprintf(stderr, "strata-train: --spec: %s\n", read.status().ToString().c_str());
      return 1;
    }
    architecture = *std::move(read);
  }
  if (architecture.height != train->height || architecture.width != train->width ||
      architecture.channels != 1) {
    std::fprintf(stderr, "strata-train: the spec's input is %dx%dx%d, the data's images are %dx%dx1\n",
                 architecture.height, architecture.width, architecture.channels, train->height,
                 train->width);
    return 1;
  }
  const double lambda = absl::GetFlag(FLAGS_lambda);
  if (!(lambda > 0)) {
    std::fprintf(stderr, "strata-train: --lambda=%g, expected a value > 0\n", lambda);
    return 1;
  }
  // --int8_backend: create the backend now, so that a missing card fails before the fit.
  std::unique_ptr<fpga::Backend> int8_backend;
  if (const std::string name = absl::GetFlag(FLAGS_int8_backend); name != "none") {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(name);
    if (!backend.ok()) {
      std::fprintf(stderr, "strata-train: --int8_backend: %s\n",
                   backend.status().ToString().c_str());
      return 1;
    }
    if (!test) {
      std::fprintf(stderr, "strata-train: --int8_backend needs --test data\n");
      return 1;
    }
    int8_backend = *std::move(backend);
  }
  std::vector<double> int8_percentiles;
  for (const std::string& text : absl::GetFlag(FLAGS_int8_percentiles)) {
    double value;
    if (!absl::SimpleAtod(text, &value) || !(value > 0 && value <= 100)) {
      std::fprintf(stderr, "strata-train: --int8_percentiles: %s, expected numbers in (0, 100]\n",
                   text.c_str());
      return 1;
    }
    int8_percentiles.push_back(value);
  }
  if (int8_percentiles.empty()) int8_percentiles.push_back(99.99);
  const model::MatrixF train_images = ToMatrix(*train);
  std::printf("data     %zu training images %dx%d from %s (offset %zu), %zu test images\n",
              train->size(), train->height, train->width, absl::GetFlag(FLAGS_train).c_str(),
              absl::GetFlag(FLAGS_train_offset), test ? test->size() : size_t{0});
  const double load_seconds = Seconds(start);

  // Lower tier: one eigen-solve, standardisation statistics, random expansion.
  absl::Time phase = absl::Now();
  absl::StatusOr<model::LowerTier> lower =
      model::LowerTier::Fit(architecture, train_images, absl::GetFlag(FLAGS_seed));
  if (!lower.ok()) {
    std::fprintf(stderr, "strata-train: %s\n", lower.status().ToString().c_str());
    return 1;
  }
  const double lower_seconds = Seconds(phase);
  for (const std::string& stage : lower->Describe()) std::printf("lower    %s\n", stage.c_str());

  // The int8 activation scales, stored in the bundle: a float pass over a couple of thousand
  // images (about a second), so every bundle can be served in int8 (strata-server --device).
  model::Int8Calibration int8;
  if (const size_t n = absl::GetFlag(FLAGS_int8_calibration_images); n > 0) {
    phase = absl::Now();
    const Eigen::Index rows =
        std::min<Eigen::Index>(train_images.rows(), static_cast<Eigen::Index>(n));
    absl::StatusOr<model::Int8Calibration> calibrated =
        model::QuantizedLowerTier::CalibrateActivations(*lower, train_images.topRows(rows),
                                                        {.percentile = int8_percentiles[0]});
    if (!calibrated.ok()) {
      std::fprintf(stderr, "strata-train: int8 calibration: %s\n",
                   calibrated.status().ToString().c_str());
      return 1;
    }
    int8 = *std::move(calibrated);
    std::printf("int8     scales for %zu stages calibrated on %td training images "
                "(percentile %g) in %.2f s, stored in the bundle\n",
                int8.activation_scales.size(), rows, int8.percentile, Seconds(phase));
  }

  // The readout's features: the float lower tier, or the int8 lower tier on the backend the
  // server will serve with (--readout_device), so that G and Q hold the features later absorbs
  // add. With --readout_int8 the features are quantised once more for the Gram kernel.
  std::unique_ptr<fpga::Backend> readout_backend;
  std::optional<model::QuantizedLowerTier> readout_lower;
  std::string readout_device = absl::GetFlag(FLAGS_readout_device);
  const bool readout_int8 = absl::GetFlag(FLAGS_readout_int8);
  if (readout_device != "float" && int8.empty()) {
    // A float-only bundle (--int8_calibration_images=0) is served in float: fit on float features.
    std::printf("readout  no int8 activation scales (--int8_calibration_images=0): the readout is "
                "fit on the float lower tier's features\n");
    readout_device = "float";
  }
  if (readout_device != "float" || readout_int8) {
    const std::string name = readout_device == "float" ? "cpu" : readout_device;
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(name);
    if (!backend.ok()) {
      std::fprintf(stderr, "strata-train: --readout_device: %s\n",
                   backend.status().ToString().c_str());
      return 1;
    }
    readout_backend = *std::move(backend);
  }
  if (readout_device != "float") {
    absl::StatusOr<model::QuantizedLowerTier> quantized =
        model::QuantizedLowerTier::FromCalibration(*lower, int8, *readout_backend);
    if (!quantized.ok()) {
      std::fprintf(stderr, "strata-train: --readout_device: %s\n",
                   quantized.status().ToString().c_str());
      return 1;
    }
    readout_lower = *std::move(quantized);
  }
  auto readout_features = [&](const model::MatrixF& images) -> absl::StatusOr<model::MatrixF> {
    if (readout_lower) return readout_lower->Features(images);
    return lower->Features(images);
  };

  // Upper tier: absorb every training sample into G and Q, then one Cholesky solve.
  phase = absl::Now();
  model::UpperTier upper(lower->feature_size(), lambda);
  std::vector<model::MatrixF> train_features;  // kept for the train accuracy
  double feature_seconds = 0;
  fpga::OpCounts gram_counts;
  for (Eigen::Index begin = 0; begin < train_images.rows(); begin += kBlock) {
    const Eigen::Index rows = std::min(kBlock, train_images.rows() - begin);
    const absl::Time features_start = absl::Now();
    absl::StatusOr<model::MatrixF> features =
        readout_features(train_images.middleRows(begin, rows));
    if (!features.ok()) {
      std::fprintf(stderr, "strata-train: %s\n", features.status().ToString().c_str());
      return 1;
    }
    if (readout_int8 && begin == 0) {
      // Scales from the first block: a few thousand rows pin every feature's range.
      absl::StatusOr<std::vector<float>> scales =
          model::CalibrateReadoutScales(*features, absl::GetFlag(FLAGS_readout_percentile));
      absl::Status set = scales.ok() ? upper.set_readout_scales(*std::move(scales))
                                     : scales.status();
      if (set.ok()) set = upper.AttachGramBackend(readout_backend.get());
      if (!set.ok()) {
        std::fprintf(stderr, "strata-train: readout scales: %s\n", set.ToString().c_str());
        return 1;
      }
    }
    feature_seconds += Seconds(features_start);
    const std::span<const std::string> labels(train->labels.data() + begin, rows);
    fpga::OpCounts counts;
    if (absl::Status s = upper.AbsorbLabeled(*features, labels, &counts).status(); !s.ok()) {
      std::fprintf(stderr, "strata-train: %s\n", s.ToString().c_str());
      return 1;
    }
    gram_counts += counts;
    train_features.push_back(*std::move(features));
  }
  fpga::OpCounts fold_counts, staged_counts;
  if (absl::Status s = upper.FoldGram(&fold_counts, &staged_counts); !s.ok()) {
    std::fprintf(stderr, "strata-train: %s\n", s.ToString().c_str());
    return 1;
  }
  gram_counts += staged_counts;  // the last, partial block of rows
  const double absorb_seconds = Seconds(phase) - feature_seconds;
  std::printf("readout  features from the %s lower tier%s; G, Q by %s\n",
              readout_lower ? "int8" : "float",
              readout_lower ? absl::StrCat(" on the ", readout_backend->info().name,
                                           " backend").c_str() : "",
              readout_int8 ? absl::StrCat("the int8 Gram kernel on the ",
                                          readout_backend->info().name, " backend (",
                                          readout_backend->info().description,
                                          "), features quantised per feature at percentile ",
                                          absl::GetFlag(FLAGS_readout_percentile)).c_str()
                           : "the float64 host rank-k update");
  if (readout_int8) {
    absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(readout_backend->info().name);
    std::printf("gram     %s; fold %s; %.3f J by the %s table\n", ToString(gram_counts).c_str(),
                ToString(fold_counts).c_str(),
                table.ok() ? fpga::Joules(gram_counts + fold_counts, *table) : 0.0,
                readout_backend->info().name.c_str());
  }
  phase = absl::Now();
  absl::StatusOr<model::Readout> readout = upper.Solve();
  if (!readout.ok()) {
    std::fprintf(stderr, "strata-train: %s\n", readout.status().ToString().c_str());
    return 1;
  }
  const double solve_seconds = Seconds(phase);
  const double fit_seconds = lower_seconds + feature_seconds + absorb_seconds + solve_seconds;
  std::printf("upper    ridge readout, lambda %g, %d features x %d classes\n", lambda,
              upper.feature_size(), upper.num_classes());
  std::printf(
      "fit      %.2f s  (lower tier fit %.2f s, features %.2f s, absorb G,Q %.2f s, "
      "Cholesky solve %.2f s; data load %.2f s)\n",
      fit_seconds, lower_seconds, feature_seconds, absorb_seconds, solve_seconds, load_seconds);

  phase = absl::Now();
  size_t train_correct = 0, offset = 0;
  for (const model::MatrixF& features : train_features) {
    train_correct += Correct(*readout, features, train->labels, offset);
    offset += features.rows();
  }
  train_features.clear();
  const double train_accuracy = static_cast<double>(train_correct) / train->size();
  std::printf("accuracy train %.2f%%", 100 * train_accuracy);
  double test_accuracy = 0;
  if (test) {
    if (readout_lower) {
      fpga::OpCounts unused;
      absl::StatusOr<double> accuracy =
          Int8Accuracy(*readout_lower, *readout, ToMatrix(*test), test->labels, unused);
      if (!accuracy.ok()) {
        std::fprintf(stderr, "strata-train: %s\n", accuracy.status().ToString().c_str());
        return 1;
      }
      test_accuracy = *accuracy;
    } else {
      test_accuracy = Accuracy(*lower, *readout, ToMatrix(*test), test->labels);
    }
    std::printf("  test %.2f%% (%s features)", 100 * test_accuracy,
                readout_lower ? "int8 lower-tier" : "float lower-tier");
  }
  std::printf("  (evaluated in %.2f s)\n", Seconds(phase));
  for (size_t i = 0; int8_backend != nullptr && i < int8_percentiles.size(); ++i) {
    if (absl::Status s = EvaluateInt8(*lower, *int8_backend, train_images, *train, *test, *readout,
                                      lambda, test_accuracy, int8_percentiles[i],
                                      i == 0 && absl::GetFlag(FLAGS_int8_resolve));
        !s.ok()) {
      std::fprintf(stderr, "strata-train: --int8_backend: %s\n", s.ToString().c_str());
      return 1;
    }
  }

  phase = absl::Now();
  const std::string out = absl::GetFlag(FLAGS_out);
  // The int8 lower tier points into `lower`'s stages: drop it before `lower` moves.
  readout_lower.reset();
  model::Bundle bundle{*std::move(lower), std::move(upper), 1, std::move(int8)};
  bundle.readout_features = readout_device == "float" ? "float" : "int8";
  bundle.readout_percentile = readout_int8 ? absl::GetFlag(FLAGS_readout_percentile) : 0;
  if (absl::Status s = model::WriteBundle(bundle, out); !s.ok()) {
    std::fprintf(stderr, "strata-train: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("bundle   %s written in %.2f s\n", out.c_str(), Seconds(phase));
  std::printf("memory   peak resident %.0f MiB\n", PeakMemoryMiB());
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Fits a Strata model (closed-form lower tier + ridge upper tier) and writes a bundle.\n"
      "Example: strata-train --train=fashion-mnist:train --out=model.bundle");
  absl::ParseCommandLine(argc, argv);
  return strata::Run();
}
