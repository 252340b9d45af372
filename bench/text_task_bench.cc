// strata-bench-text-task: the Compound LLM on a real text task (docs/text-task.md): Debian package
// descriptions labelled by their Section (data/debian_sections.py), the frozen all-MiniLM-L6-v2
// encoder (float and int8 cpu) with the analytic head (model::UpperTier, a ridge readout) over its
// embedding, optionally with a lexical view of the text appended (model::LexicalView: hashed word
// 1-2-grams, tf-idf, spec line `lexical`) and optionally widened by a seeded random ReLU expansion
// (model::ExpandStage, the image tier's stage). bench/text_task_bench.sh runs it beside the TF-IDF
// baseline.
//
// For each encoder path: embeddings of the train and test texts (cached on disk, keyed by a digest
// of the texts, the path and max_length), then for each (lexical view, expansion width):
//   the ridge lambda chosen on a validation part of train (sources with crc32c % 5 == 0; test is
//   never looked at), by re-solving one set of statistics for each lambda;
//   the head fit on all of train (the validation part absorbed into the fitted statistics: exact);
//   test accuracy, fit time, labelled sentences absorbed per second, and joules per sentence by
//   tier (fpga/energy.h's tables: the encoder on its backend's, the expansion and head on the
//   host's), as update::EnergyMeter's phases price them.
// Then the class-incremental run (sections arrive in --groups groups, each absorbed by Update-sized
// batches then refreshed) against joint training of the same head (text::CompareIncrementalToJoint).
// The last line is a JSON summary for the driver script.
//
// Usage: strata-bench-text-task --data=FILE.jsonl [--paths=float,cpu] [--widths=0,2048,8192]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/crc32c.h"
#include "fpga/backend.h"
#include "fpga/energy.h"
#include "model/lexical_view.h"
#include "model/stages.h"
#include "model/upper_tier.h"
#include "nlohmann/json.hpp"
#include "text/text_encoder.h"
#include "text/text_task.h"

ABSL_FLAG(std::string, data, "", "the data set (data/debian_sections.py's JSONL)");
ABSL_FLAG(std::string, model_dir, ".tools/models/all-minilm-l6-v2", "the encoder's folder");
ABSL_FLAG(std::string, cache_dir, ".tools/cache/text-task", "embedding cache ('' for none)");
ABSL_FLAG(std::string, paths, "float,cpu", "encoder paths: float, cpu (int8), emu (int8, slow)");
ABSL_FLAG(std::string, widths, "0,2048,8192",
          "random ReLU expansion widths to try (0: the 384-value embedding alone; else the "
          "embedding concatenated with that many units)");
ABSL_FLAG(std::string, lexical, "2048,4096",
          "lexical view sizes to try (spec line `lexical features=N`, model/lexical_view.h; '' for "
          "none): each appended to the embedding, with the expansion widths of --lexical_widths");
ABSL_FLAG(std::string, lexical_widths, "0", "expansion widths tried with a lexical view");
ABSL_FLAG(double, lexical_weight, 0.7,
          "the lexical view's L2 norm per text (chosen on the validation part: bench/"
          "text_task_lexical.py)");
ABSL_FLAG(std::string, lambdas, "0.001,0.01,0.1,1,3,10", "ridge lambdas the validation picks from");
ABSL_FLAG(double, bias_scale, 0.05,
          "the expansion's bias standard deviation: the embedding is unit-norm, so x P (P ~ "
          "N(0, 1/384)) has a standard deviation of about 1/sqrt(384) = 0.051; a bias of the same "
          "scale puts each unit's kink inside the data");
ABSL_FLAG(uint64_t, seed, 14, "the expansion's random seed");
ABSL_FLAG(int, max_length, 256, "tokens per text, [CLS] and [SEP] included");
ABSL_FLAG(int, batch, 32, "texts per Embed call when encoding the data set");
ABSL_FLAG(int, groups, 5, "class-incremental run: sections arrive in this many groups");
ABSL_FLAG(int, update_batch, 256, "class-incremental run: rows per absorb (an Update message)");

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Options {
  std::vector<std::string> paths;
  std::vector<int> widths, lexical, lexical_widths;
  std::vector<double> lambdas;
};

// ExpandStage::Fit draws its projection and bias from the generator only and reads no rows.
class NoRows final : public model::FitData {
 public:
  Eigen::Index rows() const override { return 0; }
  absl::Status ForEachChunk(
      const std::function<absl::Status(const model::MatrixF&)>&) const override {
    return absl::OkStatus();
  }
  model::MatrixF Rows(std::span<const Eigen::Index>) const override { return {}; }
};

// The head's input: the stage input x (the embedding, or [embedding, lexical view] with one), or
// [x, relu(x P + b)] for width > 0.
struct Features {
  model::MatrixF train, test;
  int lexical = 0;                 // the lexical view's features in x (0: none)
  uint64_t macs_per_sentence = 0;  // the expansion's fp32 MACs
};

absl::StatusOr<Features> Expand(const model::MatrixF& train, const model::MatrixF& test,
                                int width) {
  if (width == 0) return Features{train, test, 0, 0};
  model::ExpandStage stage(model::Shape{1, 1, static_cast<int>(train.cols())}, width,
                           static_cast<float>(absl::GetFlag(FLAGS_bias_scale)), /*concat=*/true);
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  if (absl::Status s = stage.Fit(NoRows(), rng); !s.ok()) return s;
  Features out;
  stage.Apply(train, out.train);
  stage.Apply(test, out.test);
  out.macs_per_sentence = stage.MacsPerSample();
  return out;
}

// Train rows split into the part the lambda search fits and the part it validates on.
struct TrainParts {
  model::MatrixF fit, validation;
  std::vector<std::string> fit_labels, validation_labels;
};

TrainParts SplitTrain(const model::MatrixF& train, const text::TaskSplit& split) {
  std::vector<Eigen::Index> fit, validation;
  for (size_t i = 0; i < split.size(); ++i) {
    const std::string& source = split.sources[i];
    (base::Crc32c(source.data(), source.size()) % 5 == 0 ? validation : fit)
        .push_back(static_cast<Eigen::Index>(i));
  }
  TrainParts parts;
  parts.fit = train(fit, Eigen::all);
  parts.validation = train(validation, Eigen::all);
  for (Eigen::Index i : fit) parts.fit_labels.push_back(split.labels[i]);
  for (Eigen::Index i : validation) parts.validation_labels.push_back(split.labels[i]);
  return parts;
}

// What fitting one head cost and gave.
struct HeadResult {
  int width = 0;
  int lexical = 0;
  double lambda = 0;
  double validation_accuracy = 0, test_accuracy = 0;
  double absorb_seconds = 0, refresh_seconds = 0, lambda_search_seconds = 0;
  int features = 0, classes = 0;
  fpga::OpCounts absorb_counts, refresh_counts, predict_counts;
  uint64_t expand_macs_per_sentence = 0;
  double fit_seconds() const { return absorb_seconds + refresh_seconds; }
};

// The ridge lambda with the best validation accuracy: the fit part's statistics re-solved with
// each lambda (G - lambda0 I + lambda I), so the search costs one Cholesky per lambda.
absl::StatusOr<model::UpperTier> PickLambda(const model::UpperTier& fit_head,
                                            const TrainParts& parts,
                                            std::span<const double> lambdas, HeadResult& result) {
  const auto start = Clock::now();
  std::optional<model::UpperTier> best;
  result.validation_accuracy = -1;
  for (double lambda : lambdas) {
    model::MatrixD gram = fit_head.gram();
    gram.diagonal().array() += lambda - fit_head.lambda();
    absl::StatusOr<model::UpperTier> head = model::UpperTier::FromStatistics(
        lambda, std::move(gram), fit_head.cross(), fit_head.labels(), fit_head.samples_seen());
    if (!head.ok()) return head.status();
    absl::StatusOr<model::Readout> readout = head->Solve();
    if (!readout.ok()) return readout.status();
    const double accuracy = text::Accuracy(*readout, parts.validation, parts.validation_labels);
    if (accuracy > result.validation_accuracy) {
      result.validation_accuracy = accuracy;
      result.lambda = lambda;
      best = *std::move(head);
    }
  }
  result.lambda_search_seconds = SecondsSince(start);
  return *std::move(best);
}

absl::StatusOr<HeadResult> FitHead(const Features& f, const text::TextTask& task,
                                   std::span<const double> lambdas) {
  HeadResult result;
  result.features = static_cast<int>(f.train.cols());
  result.expand_macs_per_sentence = f.macs_per_sentence;
  const TrainParts parts = SplitTrain(f.train, task.train);
  auto start = Clock::now();
  model::UpperTier fit_head(result.features, lambdas.front());
  if (auto added = fit_head.AbsorbLabeled(parts.fit, parts.fit_labels); !added.ok())
    return added.status();
  result.absorb_seconds = SecondsSince(start);
  absl::StatusOr<model::UpperTier> head = PickLambda(fit_head, parts, lambdas, result);
  if (!head.ok()) return head.status();
  start = Clock::now();
  if (auto added = head->AbsorbLabeled(parts.validation, parts.validation_labels); !added.ok())
    return added.status();
  result.absorb_seconds += SecondsSince(start);
  start = Clock::now();
  absl::StatusOr<model::Readout> readout = head->Refresh(model::RefreshMode::kForceRefactor);
  if (!readout.ok()) return readout.status();
  result.refresh_seconds = SecondsSince(start);
  result.classes = head->num_classes();
  result.test_accuracy = text::Accuracy(*readout, f.test, task.test.labels);
  result.absorb_counts =
      model::AbsorbCounts(result.features, result.classes, static_cast<int>(f.train.rows()));
  result.refresh_counts = model::CholeskyRefreshCounts(result.features, result.classes);
  result.predict_counts = readout->Counts(1);
  return result;
}

fpga::OpCounts Fp32Macs(uint64_t macs) {
  fpga::OpCounts counts;
  counts.fp32_macs = macs;
  return counts;
}

std::string Millijoules(double joules) { return absl::StrFormat("%.3f mJ", joules * 1e3); }

void PrintHead(const std::string& path, const HeadResult& r, size_t train_rows,
               double encoder_joules_per_sentence) {
  const fpga::EnergyTable host = fpga::HostEnergyTable();
  const double n = static_cast<double>(train_rows);
  const double expand_j = fpga::Joules(Fp32Macs(r.expand_macs_per_sentence), host);
  std::printf(
      "%-8s lexical %4d width %5d (%5d features) lambda %-6g validation %.4f  TEST ACCURACY %.4f  "
      "fit %.2f s (absorb %.2f s = %.0f sentences/s, refresh %.2f s; lambda search %.2f s)\n",
      path.c_str(), r.lexical, r.width, r.features, r.lambda, r.validation_accuracy,
      r.test_accuracy, r.fit_seconds(), r.absorb_seconds, n / std::max(r.absorb_seconds, 1e-9),
      r.refresh_seconds, r.lambda_search_seconds);
  std::printf(
      "         J/sentence: encoder %s, expansion %s, absorb %s, refresh (amortised) %s, "
      "readout %s\n",
      Millijoules(encoder_joules_per_sentence).c_str(), Millijoules(expand_j).c_str(),
      Millijoules(fpga::Joules(r.absorb_counts, host) / n).c_str(),
      Millijoules(fpga::Joules(r.refresh_counts, host) / n).c_str(),
      Millijoules(fpga::Joules(r.predict_counts, host)).c_str());
  std::fflush(stdout);
}

nlohmann::json HeadJson(const std::string& path, const HeadResult& r, size_t train_rows,
                        double encoder_joules_per_sentence) {
  const fpga::EnergyTable host = fpga::HostEnergyTable();
  const double n = static_cast<double>(train_rows);
  return {{"path", path},
          {"width", r.width},
          {"lexical", r.lexical},
          {"features", r.features},
          {"lambda", r.lambda},
          {"validation_accuracy", r.validation_accuracy},
          {"test_accuracy", r.test_accuracy},
          {"fit_seconds", r.fit_seconds()},
          {"absorb_sentences_per_s", n / std::max(r.absorb_seconds, 1e-9)},
          {"encoder_j_per_sentence", encoder_joules_per_sentence},
          {"expand_j_per_sentence", fpga::Joules(Fp32Macs(r.expand_macs_per_sentence), host)},
          {"absorb_j_per_sentence", fpga::Joules(r.absorb_counts, host) / n},
          {"refresh_j_per_sentence", fpga::Joules(r.refresh_counts, host) / n},
          {"readout_j_per_sentence", fpga::Joules(r.predict_counts, host)}};
}

double Percentile(std::vector<int> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p / 100.0 * values.size()))];
}

// The task's sentence lengths in tokens ([CLS] and [SEP] included, after truncation).
void PrintLengths(const text::TextEncoder& encoder, const text::TextTask& task) {
  std::vector<int> lengths;
  for (const text::TaskSplit* side : {&task.train, &task.test}) {
    for (const std::string& t : side->texts) {
      lengths.push_back(static_cast<int>(encoder.tokenizer().Encode(t)->size()));
    }
  }
  const int max_length = encoder.tokenizer().max_length();
  const double mean =
      std::accumulate(lengths.begin(), lengths.end(), 0.0) / static_cast<double>(lengths.size());
  std::printf(
      "tokens per text (truncated at %d): mean %.1f, p50 %.0f, p95 %.0f; %.1f %% truncated\n",
      max_length, mean, Percentile(lengths, 50), Percentile(lengths, 95),
      100.0 * static_cast<double>(std::count(lengths.begin(), lengths.end(), max_length)) /
          static_cast<double>(lengths.size()));
}

// One encoder path's embeddings of the task and what they cost.
struct Encoded {
  std::string path;
  model::MatrixF train, test;
  double seconds = 0;
  double joules_per_sentence = 0;
  bool from_cache = false;
};

absl::StatusOr<Encoded> Encode(const std::string& path, const text::TextTask& task,
                               bool print_lengths) {
  std::unique_ptr<fpga::Backend> backend;
  text::TextEncoderOptions options;
  options.tokenizer.max_length = absl::GetFlag(FLAGS_max_length);
  fpga::EnergyTable energy = fpga::HostEnergyTable();
  if (path != "float") {
    absl::StatusOr<std::unique_ptr<fpga::Backend>> created = fpga::CreateBackend(path);
    if (!created.ok()) return created.status();
    backend = *std::move(created);
    options.backend = backend.get();
    absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(path);
    if (!table.ok()) return table.status();
    energy = *table;
  }
  absl::StatusOr<std::unique_ptr<text::TextEncoder>> encoder =
      text::TextEncoder::Load(absl::GetFlag(FLAGS_model_dir), options);
  if (!encoder.ok()) return encoder.status();
  if (print_lengths) PrintLengths(**encoder, task);
  Encoded out;
  out.path = path == "float" ? "float" : absl::StrCat("int8 ", path);
  const std::string dir = absl::GetFlag(FLAGS_cache_dir);
  if (!dir.empty()) std::filesystem::create_directories(dir);
  const auto key = [&](const text::TaskSplit& side) {
    return dir.empty()
               ? std::string()
               : absl::StrFormat("%s/%08x-%d-%s-L%d.f32", dir, text::TextsDigest(side.texts),
                                 side.size(), path, options.tokenizer.max_length);
  };
  text::EncodeCost train_cost, test_cost;
  const int batch = absl::GetFlag(FLAGS_batch);
  absl::StatusOr<model::MatrixF> train =
      text::EmbedCached(**encoder, task.train.texts, batch, key(task.train), &train_cost);
  if (!train.ok()) return train.status();
  absl::StatusOr<model::MatrixF> test =
      text::EmbedCached(**encoder, task.test.texts, batch, key(task.test), &test_cost);
  if (!test.ok()) return test.status();
  out.train = *std::move(train);
  out.test = *std::move(test);
  const double n = static_cast<double>(task.train.size() + task.test.size());
  out.seconds = train_cost.seconds + test_cost.seconds;
  out.joules_per_sentence =
      (fpga::Joules(train_cost.counts, energy) + fpga::Joules(test_cost.counts, energy)) / n;
  out.from_cache = train_cost.from_cache && test_cost.from_cache;
  std::printf("%-8s encoder: %.0f texts in %.1f s = %.1f sentences/s at batch %d%s, %s/sentence\n",
              out.path.c_str(), n, out.seconds, n / std::max(out.seconds, 1e-9), batch,
              out.from_cache ? " (from the cache: the run that wrote it)" : "",
              Millijoules(out.joules_per_sentence).c_str());
  std::fflush(stdout);
  return out;
}

absl::StatusOr<nlohmann::json> RunIncremental(const Features& f, const text::TextTask& task,
                                              const std::string& path, const HeadResult& head) {
  const std::vector<std::vector<std::string>> groups =
      text::GroupLabels(task.train.labels, absl::GetFlag(FLAGS_groups));
  absl::StatusOr<text::IncrementalComparison> c =
      text::CompareIncrementalToJoint(f.train, task.train.labels, f.test, task.test.labels, groups,
                                      head.lambda, absl::GetFlag(FLAGS_update_batch));
  if (!c.ok()) return c.status();
  std::printf(
      "class-incremental (%s, lexical %d, width %d, lambda %g): %d groups of sections, %d classes, "
      "absorbed %d rows per message, refreshed after each group\n",
      path.c_str(), head.lexical, head.width, head.lambda, c->groups, c->classes,
      absl::GetFlag(FLAGS_update_batch));
  for (size_t g = 0; g < groups.size(); ++g) {
    std::printf("  after group %zu (%s .. %s): test accuracy on the classes so far %.4f\n", g + 1,
                groups[g].front().c_str(), groups[g].back().c_str(), c->accuracy_after_group[g]);
  }
  std::printf(
      "  vs joint training: statistics G, Q rel. diff %.2e; float64 solution rel. diff %.2e "
      "(bound 1e-9: %s); served readouts rel. diff %.2e; test predictions that differ: %lld of "
      "%zu; time incremental %.2f s, joint %.2f s\n",
      c->statistics_difference, c->solution_difference,
      c->solution_difference <= 1e-9 ? "EQUAL" : "NOT EQUAL", c->readout_difference,
      static_cast<long long>(c->prediction_differences), task.test.size(), c->incremental_seconds,
      c->joint_seconds);
  return nlohmann::json{{"statistics_difference", c->statistics_difference},
                        {"solution_difference", c->solution_difference},
                        {"readout_difference", c->readout_difference},
                        {"prediction_differences", c->prediction_differences},
                        {"groups", c->groups}};
}

absl::StatusOr<Options> ParseOptions() {
  Options o;
  o.paths = absl::StrSplit(absl::GetFlag(FLAGS_paths), ',', absl::SkipEmpty());
  for (auto [flag, out] :
       {std::pair{&FLAGS_widths, &o.widths}, std::pair{&FLAGS_lexical, &o.lexical},
        std::pair{&FLAGS_lexical_widths, &o.lexical_widths}}) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(*flag), ',', absl::SkipEmpty())) {
      int value = 0;
      if (!absl::SimpleAtoi(part, &value) || value < 0)
        return absl::InvalidArgumentError(absl::StrCat("bad size '", part, "'"));
      out->push_back(value);
    }
  }
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_lambdas), ',')) {
    double lambda = 0;
    if (!absl::SimpleAtod(part, &lambda) || !(lambda > 0))
      return absl::InvalidArgumentError(absl::StrCat("--lambdas: bad lambda '", part, "'"));
    o.lambdas.push_back(lambda);
  }
  if (o.paths.empty()) return absl::InvalidArgumentError("--paths is empty");
  return o;
}

// The stage inputs with a lexical view of `features` buckets (0: the embeddings alone), the view
// fitted on every training text (as strata-train does; the test texts are never read by the fit).
absl::StatusOr<std::pair<model::MatrixF, model::MatrixF>> StageInputs(const Encoded& e,
                                                                      const text::TextTask& task,
                                                                      int features) {
  if (features == 0) return std::pair{e.train, e.test};
  model::LexicalSpec spec;
  spec.features = features;
  spec.weight = static_cast<float>(absl::GetFlag(FLAGS_lexical_weight));
  absl::StatusOr<model::LexicalView> view = model::LexicalView::Fit(spec, task.train.texts);
  if (!view.ok()) return view.status();
  return std::pair{model::AppendLexical(e.train, &*view, task.train.texts),
                   model::AppendLexical(e.test, &*view, task.test.texts)};
}

// The heads of every (lexical view, width) over one path's embeddings: --widths without a lexical
// view, --lexical_widths with each --lexical size; the best by validation accuracy kept in `best`
// (with its features) for the class-incremental run.
absl::Status RunHeads(const Encoded& e, const text::TextTask& task, const Options& o,
                      nlohmann::json& json, HeadResult& best, Features& best_features) {
  best.validation_accuracy = -1;
  std::vector<std::pair<int, int>> heads;  // (lexical, width)
  for (int width : o.widths) heads.emplace_back(0, width);
  for (int lexical : o.lexical) {
    for (int width : o.lexical_widths) heads.emplace_back(lexical, width);
  }
  for (const auto& [lexical, width] : heads) {
    absl::StatusOr<std::pair<model::MatrixF, model::MatrixF>> inputs =
        StageInputs(e, task, lexical);
    if (!inputs.ok()) return inputs.status();
    absl::StatusOr<Features> f = Expand(inputs->first, inputs->second, width);
    if (!f.ok()) return f.status();
    f->lexical = lexical;
    absl::StatusOr<HeadResult> r = FitHead(*f, task, o.lambdas);
    if (!r.ok()) return r.status();
    r->width = width;
    r->lexical = lexical;
    PrintHead(e.path, *r, task.train.size(), e.joules_per_sentence);
    json.push_back(HeadJson(e.path, *r, task.train.size(), e.joules_per_sentence));
    if (r->validation_accuracy > best.validation_accuracy) {
      best = *r;
      best_features = *std::move(f);
    }
  }
  return absl::OkStatus();
}

absl::Status Run() {
  absl::StatusOr<Options> o = ParseOptions();
  if (!o.ok()) return o.status();
  absl::StatusOr<text::TextTask> task = text::ReadTextTask(absl::GetFlag(FLAGS_data));
  if (!task.ok()) return task.status();
  std::printf("data set: %s, %zu texts (%zu train, %zu test), %llu bytes, crc32c %08x\n",
              absl::GetFlag(FLAGS_data).c_str(), task->train.size() + task->test.size(),
              task->train.size(), task->test.size(), static_cast<unsigned long long>(task->bytes),
              task->crc32c);
  nlohmann::json heads = nlohmann::json::array(), incremental;
  for (size_t i = 0; i < o->paths.size(); ++i) {
    absl::StatusOr<Encoded> e = Encode(o->paths[i], *task, /*print_lengths=*/i == 0);
    if (!e.ok()) return e.status();
    HeadResult best;
    Features best_features;
    if (absl::Status s = RunHeads(*e, *task, *o, heads, best, best_features); !s.ok()) return s;
    // The class-incremental run on the last path (int8 cpu by default: the served one).
    if (i + 1 == o->paths.size()) {
      absl::StatusOr<nlohmann::json> c = RunIncremental(best_features, *task, e->path, best);
      if (!c.ok()) return c.status();
      incremental = *std::move(c);
    }
  }
  const nlohmann::json summary = {{"packages", task->train.size() + task->test.size()},
                                  {"crc32c", absl::StrFormat("%08x", task->crc32c)},
                                  {"heads", heads},
                                  {"class_incremental", incremental}};
  std::printf("JSON %s\n", summary.dump().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("The text task: encoder + analytic head on Debian sections");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = strata::Run(); !s.ok()) {
    std::fprintf(stderr, "strata-bench-text-task: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
