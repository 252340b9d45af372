// strata-train: fits both tiers in one step on a labelled image data set and writes a model bundle.
//
//   strata-train --train=fashion-mnist:train --test=fashion-mnist:test --out=model.bundle
//
// Prints the fit time of each phase, train and test accuracy, and the bundle written.
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
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
#include "model/lexical_view.h"
#include "model/lower_tier.h"
#include "model/quantized_lower_tier.h"
#include "model/tensor.h"
#include "model/trainer.h"
#include "model/upper_tier.h"
#include "text/labelled_texts.h"
#include "text/text_encoder.h"

ABSL_FLAG(std::string, train, "fashion-mnist:train",
          "Training data: fashion-mnist:train, idx:IMAGES,LABELS or csv:PATH; for a text spec "
          "(a `text` line), a file of LABEL<TAB>TEXT lines");
ABSL_FLAG(size_t, train_offset, 0, "Training samples to skip at the start of --train");
ABSL_FLAG(size_t, train_limit, 0, "Training samples to use after the offset (0: all)");
ABSL_FLAG(std::string, test, "fashion-mnist:test",
          "Test data (same forms as --train); empty: none. A text spec reads it only when it is "
          "set to a file (its default names images)");
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
ABSL_FLAG(
    bool, empty_upper, false,
    "Fit the lower tier (and its int8 and readout scales) only and write a bundle whose upper "
    "tier has no sample and no class: the server learns every class from Update streams "
    "(Predict fails with FAILED_PRECONDITION until one arrives). No accuracy is measured");
ABSL_FLAG(bool, int8_resolve, true,
          "With --int8_backend: also re-solve the readout on int8 training features and report "
          "its test accuracy (costs another pass over the training set and a solve)");

namespace strata {
namespace {

model::LabelledImages ToLabelled(data::LabeledImages images) {
  return {model::PixelsToMatrix(images.pixels, static_cast<Eigen::Index>(images.image_size())),
          std::move(images.labels)};
}

// Peak resident memory of this process so far, in MiB.
double PeakMemoryMiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

// What strata-train does, read once from the flags.
struct Options {
  model::TrainOptions train;
  std::string out;
  // --int8_backend: the backend quantised lower tiers are evaluated on (null: none), at each of
  // int8_percentiles, the first also re-solved if int8_resolve.
  std::unique_ptr<fpga::Backend> int8_backend;
  std::vector<double> int8_percentiles;
  bool int8_resolve = true;
};

absl::StatusOr<Options> ReadOptions(bool have_test) {
  Options options;
  model::TrainOptions& train = options.train;
  if (const std::string spec = absl::GetFlag(FLAGS_spec); !spec.empty()) {
    absl::StatusOr<model::Architecture> read = model::ReadArchitecture(spec);
    if (!read.ok())
      return absl::InvalidArgumentError(absl::StrCat("--spec: ", read.status().ToString()));
    train.architecture = *std::move(read);
  }
  train.seed = absl::GetFlag(FLAGS_seed);
  train.lambda = absl::GetFlag(FLAGS_lambda);
  if (!(train.lambda > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lambda=", train.lambda, ", expected a value > 0"));
  }
  // --int8_backend: create the backend now, so that a missing card fails before the fit.
  if (const std::string name = absl::GetFlag(FLAGS_int8_backend); name != "none") {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(name);
    if (!backend.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--int8_backend: ", backend.status().ToString()));
    }
    if (!have_test) return absl::InvalidArgumentError("--int8_backend needs --test data");
    options.int8_backend = *std::move(backend);
  }
  for (const std::string& text : absl::GetFlag(FLAGS_int8_percentiles)) {
    double value;
    if (!absl::SimpleAtod(text, &value) || !(value > 0 && value <= 100)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--int8_percentiles: ", text, ", expected numbers in (0, 100]"));
    }
    options.int8_percentiles.push_back(value);
  }
  if (options.int8_percentiles.empty()) options.int8_percentiles.push_back(99.99);
  train.int8_calibration_images = absl::GetFlag(FLAGS_int8_calibration_images);
  train.int8_percentile = options.int8_percentiles[0];
  train.readout_device = absl::GetFlag(FLAGS_readout_device);
  train.readout_int8 = absl::GetFlag(FLAGS_readout_int8);
  train.readout_percentile = absl::GetFlag(FLAGS_readout_percentile);
  train.empty_upper = absl::GetFlag(FLAGS_empty_upper);
  if (train.empty_upper && absl::GetFlag(FLAGS_int8_backend) != "none") {
    return absl::InvalidArgumentError("--int8_backend evaluates a readout: not with --empty_upper");
  }
  options.int8_resolve = absl::GetFlag(FLAGS_int8_resolve);
  options.out = absl::GetFlag(FLAGS_out);
  return options;
}

// --int8_backend: quantises the fitted lower tier, then reports the test accuracy of the float
// readout on int8 features (and of a readout re-solved on int8 features) next to the float one.
absl::Status EvaluateInt8(const model::TrainedModel& trained, fpga::Backend& backend,
                          const model::TrainingData& data, double lambda, double percentile,
                          bool resolve) {
  absl::Time phase = absl::Now();
  const model::MatrixF& train_images = data.train.images;
  const Eigen::Index calibration_rows = std::min<Eigen::Index>(
      train_images.rows(), static_cast<Eigen::Index>(absl::GetFlag(FLAGS_int8_calibration_images)));
  absl::StatusOr<model::QuantizedLowerTier> quantized = model::QuantizedLowerTier::Calibrate(
      trained.bundle.lower, train_images.topRows(calibration_rows), backend,
      {.percentile = percentile});
  if (!quantized.ok()) return quantized.status();
  std::printf(
      "int8     backend %s (%s); calibrated on %td training images, activation "
      "percentile %g, in %.2f s\n",
      backend.info().name.c_str(), backend.info().description.c_str(), calibration_rows, percentile,
      Seconds(phase));
  for (const std::string& line : quantized->DescribeQuantization()) {
    std::printf("int8     %s\n", line.c_str());
  }

  phase = absl::Now();
  fpga::OpCounts counts;
  absl::StatusOr<double> int8_accuracy =
      model::Accuracy(*quantized, trained.readout, *data.test, &counts);
  if (!int8_accuracy.ok()) return int8_accuracy.status();
  const double float_accuracy = trained.report.test_accuracy.value_or(0);
  const double per_image = data.test->images.rows() > 0 ? 1.0 / data.test->images.rows() : 0.0;
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(backend.info().name);
  std::printf("int8     test features in %.2f s: %.0f int8 MACs/image%s\n", Seconds(phase),
              static_cast<double>(counts.int8_macs) * per_image,
              table.ok() ? absl::StrCat(", ", fpga::Joules(counts, *table) * per_image * 1e6,
                                        " uJ/image by the ", backend.info().name, " energy table")
                               .c_str()
                         : "");
  std::printf(
      "int8     test accuracy: float features %.2f%%, int8 features (same readout) %.2f%% "
      "(%+.2f points)\n",
      100 * float_accuracy, 100 * *int8_accuracy, 100 * (*int8_accuracy - float_accuracy));

  if (!resolve) return absl::OkStatus();
  phase = absl::Now();
  model::UpperTier upper(quantized->feature_size(), lambda);
  if (absl::Status s = model::AbsorbAll(*quantized, data.train, upper); !s.ok()) return s;
  absl::StatusOr<model::Readout> resolved = upper.Solve();
  if (!resolved.ok()) return resolved.status();
  absl::StatusOr<double> resolved_accuracy = model::Accuracy(*quantized, *resolved, *data.test);
  if (!resolved_accuracy.ok()) return resolved_accuracy.status();
  std::printf(
      "int8     test accuracy, readout re-solved on int8 training features: %.2f%% "
      "(%+.2f points vs float), in %.2f s\n",
      100 * *resolved_accuracy, 100 * (*resolved_accuracy - float_accuracy), Seconds(phase));
  return absl::OkStatus();
}

// The lines of what Train() did, after the data line and before the int8 evaluation.
void PrintTraining(const model::TrainOptions& options, const model::TrainedModel& trained) {
  const model::TrainReport& report = trained.report;
  for (const std::string& stage : trained.bundle.lower->Describe()) {
    std::printf("lower    %s\n", stage.c_str());
  }
  if (report.calibration_images > 0) {
    std::printf(
        "int8     scales for %zu stages calibrated on %td training images "
        "(percentile %g) in %.2f s, stored in the bundle\n",
        trained.bundle.int8.activation_scales.size(), report.calibration_images,
        trained.bundle.int8.percentile, report.calibration_seconds);
  }
  if (report.readout_float_without_scales) {
    std::printf(
        "readout  no int8 activation scales (--int8_calibration_images=0): the readout is "
        "fit on the float lower tier's features\n");
  }
  const fpga::Backend* backend = trained.backend.get();
  const bool int8_lower = trained.readout_extractor->backend() != nullptr;
  std::printf(
      "readout  features from the %s lower tier%s; G, Q by %s\n", int8_lower ? "int8" : "float",
      int8_lower ? absl::StrCat(" on the ", backend->info().name, " backend").c_str() : "",
      options.readout_int8 ? absl::StrCat("the int8 Gram kernel on the ", backend->info().name,
                                          " backend (", backend->info().description,
                                          "), features quantised per feature at percentile ",
                                          options.readout_percentile)
                                 .c_str()
                           : "the float64 host rank-k update");
  if (options.readout_int8) {
    absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(backend->info().name);
    std::printf("gram     %s; fold %s; %.3f J by the %s table\n",
                ToString(report.gram_counts).c_str(), ToString(report.fold_counts).c_str(),
                table.ok() ? fpga::Joules(report.gram_counts + report.fold_counts, *table) : 0.0,
                backend->info().name.c_str());
  }
  const model::UpperTier& upper = trained.bundle.upper;
  std::printf("upper    ridge readout, lambda %g, %d features x %d classes\n", options.lambda,
              upper.feature_size(), upper.num_classes());
}

int Fail(absl::string_view what, const absl::Status& status) {
  std::fprintf(stderr, "strata-train: %s%s\n", std::string(what).c_str(),
               status.ToString().c_str());
  return 1;
}

// A text spec's data: --train (and --test when set) read as LABEL<TAB>TEXT files and embedded by
// the spec's encoder, on the --readout_device backend (the features a server on that device
// computes; float for "float"). The encoder's folder is made absolute, so the bundle does not
// depend on strata-train's working directory. The stages after the encoder run in float in the
// server (text/text_extractor.h), so the fit uses no int8 lower-tier scales, and the readout's
// Gram is the float64 host one.
absl::StatusOr<model::TrainingData> ReadTextData(model::TrainOptions& train,
                                                 std::unique_ptr<fpga::Backend>& backend) {
  model::TextInput& input = *train.architecture.text;
  input.encoder = std::filesystem::absolute(input.encoder).lexically_normal().string();
  if (train.readout_device != "float") {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> created =
        fpga::CreateBackend(train.readout_device);
    if (!created.ok()) return created.status();
    backend = *std::move(created);
  }
  text::TextEncoderOptions encoder_options;
  encoder_options.tokenizer.max_length = input.max_tokens;
  encoder_options.backend = backend.get();
  absl::StatusOr<std::unique_ptr<text::TextEncoder>> encoder =
      text::TextEncoder::Load(input.encoder, encoder_options);
  if (!encoder.ok()) return encoder.status();
  const size_t limit = absl::GetFlag(FLAGS_train_limit);
  absl::StatusOr<text::LabelledTexts> texts =
      text::ReadLabelledTexts(absl::GetFlag(FLAGS_train), limit);
  if (!texts.ok()) return texts.status();
  model::TrainingData data;
  if (const std::optional<model::LexicalSpec>& lexical = train.architecture.lexical) {
    absl::StatusOr<model::LexicalView> view = model::LexicalView::Fit(*lexical, texts->texts);
    if (!view.ok()) return view.status();
    data.lexical = std::make_shared<const model::LexicalView>(*std::move(view));
  }
  absl::StatusOr<model::LabelledImages> embedded =
      text::EmbedLabelled(**encoder, *std::move(texts), data.lexical.get());
  if (!embedded.ok()) return embedded.status();
  data.train = *std::move(embedded);
  if (const std::string test = absl::GetFlag(FLAGS_test);
      !test.empty() && test != "fashion-mnist:test") {
    absl::StatusOr<text::LabelledTexts> test_texts =
        text::ReadLabelledTexts(test, absl::GetFlag(FLAGS_test_limit));
    if (!test_texts.ok()) return test_texts.status();
    absl::StatusOr<model::LabelledImages> test_embedded =
        text::EmbedLabelled(**encoder, *std::move(test_texts), data.lexical.get());
    if (!test_embedded.ok()) return test_embedded.status();
    data.test = *std::move(test_embedded);
  }
  train.int8_calibration_images = 0;
  train.readout_device = "float";
  train.readout_int8 = false;
  return data;
}

// strata-train for a text spec: embeds the labelled texts, fits the stages after the encoder and
// the readout on the embeddings (model::Train), writes the bundle.
int RunText(Options& options) {
  const absl::Time start = absl::Now();
  std::unique_ptr<fpga::Backend> backend;
  absl::StatusOr<model::TrainingData> data = ReadTextData(options.train, backend);
  if (!data.ok()) return Fail("text data: ", data.status());
  std::printf("data     %td training texts from %s embedded in %.2f s (encoder on %s), %td test\n",
              data->train.images.rows(), absl::GetFlag(FLAGS_train).c_str(), Seconds(start),
              backend != nullptr ? backend->info().name.c_str() : "float",
              data->test ? data->test->images.rows() : Eigen::Index{0});
  absl::StatusOr<model::TrainedModel> trained = model::Train(options.train, *data);
  if (!trained.ok()) return Fail("", trained.status());
  if (options.train.empty_upper) {
    std::printf("upper    empty (--empty_upper): no sample, no class; accuracy not measured\n");
  } else {
    std::printf("accuracy train %.2f%%", 100 * trained->report.train_accuracy);
    if (trained->report.test_accuracy) {
      std::printf("  test %.2f%%", 100 * *trained->report.test_accuracy);
    }
    std::printf("  (fit %.2f s)\n", trained->report.fit_seconds());
  }
  if (absl::Status s = model::WriteBundle(trained->bundle, options.out); !s.ok()) {
    return Fail("", s);
  }
  std::printf("bundle   %s written\n", options.out.c_str());
  return 0;
}

int Run() {
  const absl::Time start = absl::Now();
  if (absl::StatusOr<Options> text_options = ReadOptions(/*have_test=*/false);
      text_options.ok() && text_options->train.architecture.text.has_value()) {
    return RunText(*text_options);
  }
  absl::StatusOr<data::LabeledImages> train =
      data::Load(absl::GetFlag(FLAGS_train),
                 {absl::GetFlag(FLAGS_train_offset), absl::GetFlag(FLAGS_train_limit)});
  if (!train.ok()) return Fail("reading --train: ", train.status());
  model::TrainingData data;
  if (!absl::GetFlag(FLAGS_test).empty()) {
    absl::StatusOr<data::LabeledImages> t =
        data::Load(absl::GetFlag(FLAGS_test), {0, absl::GetFlag(FLAGS_test_limit)});
    if (!t.ok()) return Fail("reading --test: ", t.status());
    data.test = ToLabelled(*std::move(t));
  }
  absl::StatusOr<Options> options = ReadOptions(data.test.has_value());
  if (!options.ok()) {
    std::fprintf(stderr, "strata-train: %s\n", std::string(options.status().message()).c_str());
    return 1;
  }
  const model::Architecture& architecture = options->train.architecture;
  if (architecture.height != train->height || architecture.width != train->width ||
      architecture.channels != 1) {
    std::fprintf(stderr,
                 "strata-train: the spec's input is %dx%dx%d, the data's images are %dx%dx1\n",
                 architecture.height, architecture.width, architecture.channels, train->height,
                 train->width);
    return 1;
  }
  std::printf("data     %zu training images %dx%d from %s (offset %zu), %zu test images\n",
              train->size(), train->height, train->width, absl::GetFlag(FLAGS_train).c_str(),
              absl::GetFlag(FLAGS_train_offset), data.test ? data.test->labels.size() : size_t{0});
  data.train = ToLabelled(*std::move(train));
  const double load_seconds = Seconds(start);

  absl::StatusOr<model::TrainedModel> trained = model::Train(options->train, data);
  if (!trained.ok()) return Fail("", trained.status());
  PrintTraining(options->train, *trained);
  const model::TrainReport& report = trained->report;
  std::printf(
      "fit      %.2f s  (lower tier fit %.2f s, features %.2f s, absorb G,Q %.2f s, "
      "Cholesky solve %.2f s; data load %.2f s)\n",
      report.fit_seconds(), report.lower_seconds, report.feature_seconds, report.absorb_seconds,
      report.solve_seconds, load_seconds);
  if (report.augmented_rows > 0) {
    const model::Augmentation& augment = options->train.architecture.augment;
    std::printf("augment  %td copies absorbed besides the training images (hflip=%d shift=%d)\n",
                report.augmented_rows, augment.hflip ? 1 : 0, augment.shift);
  }
  if (options->train.empty_upper) {
    std::printf("upper    empty (--empty_upper): no sample, no class; accuracy not measured\n");
  } else {
    std::printf("accuracy train %.2f%%", 100 * report.train_accuracy);
    if (report.test_accuracy) {
      std::printf("  test %.2f%% (%s features)", 100 * *report.test_accuracy,
                  trained->readout_extractor->backend() != nullptr ? "int8 lower-tier"
                                                                   : "float lower-tier");
    }
    std::printf("  (evaluated in %.2f s)\n", report.evaluate_seconds);
  }
  for (size_t i = 0; options->int8_backend != nullptr && i < options->int8_percentiles.size();
       ++i) {
    if (absl::Status s =
            EvaluateInt8(*trained, *options->int8_backend, data, options->train.lambda,
                         options->int8_percentiles[i], i == 0 && options->int8_resolve);
        !s.ok()) {
      return Fail("--int8_backend: ", s);
    }
  }

  const absl::Time phase = absl::Now();
  if (absl::Status s = model::WriteBundle(trained->bundle, options->out); !s.ok()) {
    return Fail("", s);
  }
  std::printf("bundle   %s written in %.2f s\n", options->out.c_str(), Seconds(phase));
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
