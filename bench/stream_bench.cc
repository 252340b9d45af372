// strata-bench-stream: the update policies on two drifting Fashion-MNIST streams, measured on real
// strata-server processes over gRPC (docs/update-policies.md).
//
// 1. Fit a lower tier once on the first --fit_images training images (--spec) and write a bundle
//    whose upper tier is empty (model::TrainOptions::empty_upper, as strata-train --empty_upper):
//    every class comes from the stream.
// 2. Build the streams from the remaining training images (messages of --message_size samples):
//      drift      five phases of two new classes each, then every class with two labels swapped;
//      recurring  five classes, then the other five while the first vanish, then all ten recur,
//                 then two labels drift apart gradually (the swap's probability rises linearly
//                 over half the phase) and stay swapped.
// 3. For each stream and each policy configuration (--configs), start one strata-server on the
//    bundle with that configuration's flags and send each message as its own Update stream, so
//    that each UpdateSummary is one message's result: its prequential errors, skipped samples,
//    refreshes and joules by phase (the server's own meter). GetStats at the end gives the
//    decisions, drift alarms, forgotten classes and totals (checked against the summaries' sums).
// Prints per stream the policies' table (accuracy, update and total joules, refreshes, samples
// absorbed vs seen, recovery after the swap) and per phase joules and accuracy; writes a CSV and
// (gnuplot) a PNG per stream; with --update_docs rewrites the marked tables of
// docs/update-policies.md and README.md from this run.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "data/dataset.h"
#include "model/architecture.h"
#include "model/bundle.h"
#include "model/tensor.h"
#include "model/trainer.h"
#include "tests/server_process.h"

ABSL_FLAG(std::string, data, "fashion-mnist:train", "Training images (data::Load source)");
ABSL_FLAG(int, fit_images, 10000, "Images the lower tier is fit on (then frozen)");
ABSL_FLAG(std::string, spec, STRATA_SOURCE_DIR "/specs/stream.spec", "Lower-tier spec file");
ABSL_FLAG(double, lambda, 30.0, "Ridge regularisation of the upper tier");
ABSL_FLAG(int, message_size, 100, "Samples per Update message");
ABSL_FLAG(std::string, streams, "drift,recurring", "Streams to run: drift, recurring");
ABSL_FLAG(std::vector<std::string>, configs,
          std::vector<std::string>({
              "eager=--update_policy=eager",
              "eager+forget=--update_policy=eager --policy_forget_on_drift",
              "periodic=--update_policy=periodic --policy_period_samples=2000 --policy_period=0",
              "energy-aware=--update_policy=energy-aware",
              "energy-aware+forget+selective=--update_policy=energy-aware "
              "--policy_forget_on_drift --policy_forget_decay=0.01 --policy_absorb_margin=0.5 "
              "--policy_joules_per_error=1e-4 --policy_growth_factor=16 "
              "--policy_growth_min_samples=40",
          }),
          "Policy configurations, NAME=strata-server flags (space-separated), comma-separated; the "
          "one named eager is the reference of the ratios");
ABSL_FLAG(std::vector<std::string>, server_args,
          std::vector<std::string>({"--policy_budget_watts=1e6", "--policy_burst_joules=1e6"}),
          "Flags every server gets (default: a joule budget that never binds, so energy-aware "
          "decides by its gain estimate alone and the run does not depend on the machine's speed)");
ABSL_FLAG(int, window, 1000, "Sliding window (samples) of the CSV's prequential accuracy");
ABSL_FLAG(std::string, out_dir, "stream-bench", "Where the bundle, CSVs, PNGs and logs go");
ABSL_FLAG(bool, update_docs, false,
          "Rewrite the marked tables of docs/update-policies.md and README.md from this run");

namespace strata {
namespace {

struct Stream {
  std::string name;
  std::string title;
  std::vector<int> rows;                            // image indices
  std::vector<std::string> labels;                  // the label each streamed sample carries
  std::vector<std::pair<int, std::string>> phases;  // start position, description
  int drift_at = -1;      // where the label swap is complete (recovery is measured from here)
  int stable_until = -1;  // the accuracy over the 2,000 samples before this is the reference
};

struct PolicyConfig {
  std::string name;
  std::vector<std::string> flags;
};

// One message's result (its UpdateSummary).
struct MessageResult {
  int samples = 0;
  uint64_t errors = 0;
  uint64_t skipped = 0;
  double refreshes = 0;  // a count, as double so that PolicyRun::Sum adds it
  double lower = 0, readout = 0, absorb = 0, refresh = 0;  // joules by phase
};

struct PolicyRun {
  std::string name;
  std::vector<MessageResult> messages;
  v1::Stats stats;
  double seconds = 0;

  double Accuracy(size_t from, size_t to, int message_size) const;
  double update_joules() const {
    return Sum(&MessageResult::absorb) + Sum(&MessageResult::refresh);
  }
  double total_joules() const {
    return update_joules() + Sum(&MessageResult::lower) + Sum(&MessageResult::readout);
  }
  double Sum(double MessageResult::*field) const {
    double total = 0;
    for (const MessageResult& m : messages) total += m.*field;
    return total;
  }
};

// Accuracy over the messages covering stream positions [from, to).
double PolicyRun::Accuracy(size_t from, size_t to, int message_size) const {
  uint64_t samples = 0, errors = 0;
  for (size_t m = from / message_size; m < messages.size() && m * message_size < to; ++m) {
    samples += messages[m].samples;
    errors += messages[m].errors;
  }
  return samples == 0 ? 0 : 1.0 - static_cast<double>(errors) / static_cast<double>(samples);
}

int ClassOf(const data::LabeledImages& images, size_t i) {
  for (int c = 0; c < 10; ++c) {
    if (images.labels[i] == data::kFashionMnistClasses[c]) return c;
  }
  return -1;
}

// The images from `first` on, by class, each pool shuffled.
std::vector<std::vector<int>> ClassPools(const data::LabeledImages& images, size_t first,
                                         std::mt19937_64& rng) {
  std::vector<std::vector<int>> pools(10);
  for (size_t i = first; i < images.size(); ++i) {
    if (const int c = ClassOf(images, i); c >= 0) pools[c].push_back(static_cast<int>(i));
  }
  for (auto& pool : pools) std::shuffle(pool.begin(), pool.end(), rng);
  return pools;
}

// Takes up to `count` images of each class in `classes` off the pools, shuffled together.
std::vector<int> Take(std::vector<std::vector<int>>& pools, const std::vector<int>& classes,
                      size_t count, std::mt19937_64& rng) {
  std::vector<int> part;
  for (const int c : classes) {
    const size_t take = std::min(count, pools[c].size());
    part.insert(part.end(), pools[c].end() - take, pools[c].end());
    pools[c].resize(pools[c].size() - take);
  }
  std::shuffle(part.begin(), part.end(), rng);
  return part;
}

// Appends a phase: each image with its class's label, or with `a` and `b` exchanged with a
// probability that rises linearly from swap_from to swap_to over the phase.
void Append(Stream& stream, const data::LabeledImages& images, const std::vector<int>& part,
            std::string description, int a, int b, double swap_from, double swap_to,
            std::mt19937_64& rng) {
  stream.phases.emplace_back(static_cast<int>(stream.rows.size()), std::move(description));
  std::uniform_real_distribution<double> uniform(0, 1);
  for (size_t j = 0; j < part.size(); ++j) {
    int c = ClassOf(images, part[j]);
    const double p = swap_from + (swap_to - swap_from) * static_cast<double>(j) /
                                     static_cast<double>(std::max<size_t>(1, part.size()));
    if ((c == a || c == b) && p > 0 && uniform(rng) < p) c = c == a ? b : a;
    stream.rows.push_back(part[j]);
    stream.labels.push_back(data::kFashionMnistClasses[c]);
  }
}

std::string ClassName(int c) { return data::kFashionMnistClasses[c]; }

// The stream: five phases of two new classes (4,000 images each), then the rest of every
// class with Trouser and Bag swapped.
Stream DriftStream(const data::LabeledImages& images, size_t first) {
  std::mt19937_64 rng(42);
  std::vector<std::vector<int>> pools = ClassPools(images, first, rng);
  Stream stream;
  stream.name = "drift";
  stream.title = "classes arrive two at a time, then Trouser and Bag swap labels";
  for (int phase = 0; phase < 5; ++phase) {
    Append(stream, images, Take(pools, {2 * phase, 2 * phase + 1}, 4000, rng),
           absl::StrCat("new: ", ClassName(2 * phase), ", ", ClassName(2 * phase + 1)), -1, -1, 0,
           0, rng);
  }
  stream.drift_at = static_cast<int>(stream.rows.size());
  stream.stable_until = stream.drift_at;
  Append(stream, images, Take(pools, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 100000, rng),
         "all ten, Trouser <-> Bag", 1, 8, 1, 1, rng);
  return stream;
}

// The second stream: a class set that vanishes and recurs, then a gradual swap.
Stream RecurringStream(const data::LabeledImages& images, size_t first) {
  std::mt19937_64 rng(7);
  std::vector<std::vector<int>> pools = ClassPools(images, first, rng);
  Stream stream;
  stream.name = "recurring";
  stream.title =
      "five classes, the other five (the first vanish), all ten recur, then Sandal "
      "and Sneaker swap gradually";
  Append(stream, images, Take(pools, {0, 1, 2, 3, 4}, 1000, rng), "classes 0-4", -1, -1, 0, 0, rng);
  Append(stream, images, Take(pools, {5, 6, 7, 8, 9}, 1000, rng), "classes 5-9 (0-4 vanish)", -1,
         -1, 0, 0, rng);
  Append(stream, images, Take(pools, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 1000, rng), "all ten recur",
         -1, -1, 0, 0, rng);
  stream.stable_until = static_cast<int>(stream.rows.size());
  Append(stream, images, Take(pools, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 1000, rng),
         "Sandal <-> Sneaker, gradually", 5, 7, 0, 1, rng);
  stream.drift_at = static_cast<int>(stream.rows.size());
  Append(stream, images, Take(pools, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 100000, rng),
         "all ten, Sandal <-> Sneaker", 5, 7, 1, 1, rng);
  return stream;
}

// Fits the lower tier on the first --fit_images images and writes a bundle with an empty upper tier.
absl::Status WriteEmptyBundle(const data::LabeledImages& images, const std::string& path) {
  absl::StatusOr<model::Architecture> architecture =
      model::ReadArchitecture(absl::GetFlag(FLAGS_spec));
  if (!architecture.ok()) return architecture.status();
  model::TrainOptions options;
  options.architecture = *std::move(architecture);
  options.lambda = absl::GetFlag(FLAGS_lambda);
  options.empty_upper = true;
  const int fit = absl::GetFlag(FLAGS_fit_images);
  model::TrainingData data;
  data.train.images =
      model::PixelsToMatrix(images.pixels, static_cast<Eigen::Index>(images.image_size()))
          .topRows(fit);
  data.train.labels.assign(images.labels.begin(), images.labels.begin() + fit);
  absl::StatusOr<model::TrainedModel> trained = model::Train(options, data);
  if (!trained.ok()) return trained.status();
  std::printf("bundle: lower tier fit on %d images (%s, %d features), empty upper tier, %s\n", fit,
              absl::GetFlag(FLAGS_spec).c_str(), trained->bundle.upper.feature_size(),
              path.c_str());
  return model::WriteBundle(trained->bundle, path);
}

MessageResult ToResult(const v1::UpdateSummary& summary, int samples) {
  MessageResult m;
  m.samples = samples;
  m.errors = summary.prequential_errors();
  m.skipped = summary.skipped();
  m.refreshes = static_cast<double>(summary.refreshes());
  m.lower = summary.energy().lower_tier_inference_joules();
  m.readout = summary.energy().readout_inference_joules();
  m.absorb = summary.energy().absorb_joules();
  m.refresh = summary.energy().refresh_joules();
  return m;
}

// Streams `stream` into a fresh server with `config`'s flags, one Update call per message.
absl::StatusOr<PolicyRun> RunPolicy(const Stream& stream, const data::LabeledImages& images,
                                    const std::string& bundle, const PolicyConfig& config) {
  std::vector<std::string> args = absl::GetFlag(FLAGS_server_args);
  args.insert(args.end(), config.flags.begin(), config.flags.end());
  const std::string log =
      absl::StrCat(absl::GetFlag(FLAGS_out_dir), "/", stream.name, ".", config.name, ".log");
  std::remove(log.c_str());
  absl::StatusOr<std::unique_ptr<test::ServerProcess>> server =
      test::ServerProcess::Launch(bundle, args, log);
  if (!server.ok()) return server.status();
  PolicyRun run;
  run.name = config.name;
  const absl::Time start = absl::Now();
  const size_t image_size = images.image_size();
  const int message_size = absl::GetFlag(FLAGS_message_size);
  for (size_t first = 0; first < stream.rows.size(); first += message_size) {
    const size_t end = std::min(stream.rows.size(), first + message_size);
    v1::UpdateRequest request;
    for (size_t i = first; i < end; ++i) {
      v1::LabeledSample* sample = request.add_samples();
      sample->set_label(stream.labels[i]);
      sample->mutable_sample()->set_pixels(
          images.pixels.data() + static_cast<size_t>(stream.rows[i]) * image_size, image_size);
    }
    absl::StatusOr<v1::UpdateSummary> summary =
        (*server)->client().Update(std::span<const v1::UpdateRequest>(&request, 1));
    if (!summary.ok()) return summary.status();
    if (summary->accepted() != end - first) {
      return absl::InternalError(absl::StrCat("message at ", first, ": ", summary->accepted(),
                                              " of ", end - first, " samples accepted"));
    }
    run.messages.push_back(ToResult(*summary, static_cast<int>(end - first)));
  }
  run.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::StatusOr<v1::Stats> stats = (*server)->client().GetStats();
  if (!stats.ok()) return stats.status();
  run.stats = *std::move(stats);
  (*server)->Terminate();
  return run;
}

// The smallest k (in samples, a multiple of the message size, >= 500) after the stream's drift_at
// at which the accuracy over the 500 samples before drift_at + k is >= 90% of the accuracy over
// the 2,000 samples before stable_until; -1 if never.
int RecoverySamples(const PolicyRun& run, const Stream& stream, int message_size, size_t n) {
  const int at = stream.drift_at;
  if (stream.stable_until < 2000) return -1;
  const double before = run.Accuracy(stream.stable_until - 2000, stream.stable_until, message_size);
  for (size_t k = 500; at + k <= n; k += message_size) {
    if (run.Accuracy(at + k - 500, at + k, message_size) >= 0.9 * before)
      return static_cast<int>(k);
  }
  return -1;
}

std::string Decisions(const v1::Stats& stats) {
  std::string text;
  for (const v1::DecisionCount& d : stats.decisions()) {
    absl::StrAppend(&text, text.empty() ? "" : ", ", d.reason(), " ", d.count());
  }
  return text;
}

// The policies' table of one stream, as markdown.
std::string PolicyTable(const Stream& stream, const std::vector<PolicyRun>& runs) {
  const int message_size = absl::GetFlag(FLAGS_message_size);
  const size_t n = stream.rows.size();
  const PolicyRun* eager = nullptr;
  for (const PolicyRun& r : runs) {
    if (r.name == "eager") eager = &r;
  }
  std::string table =
      "| policy | mean prequential accuracy | vs eager | update J (absorb + refresh) | vs eager | "
      "total J | refreshes | absorbed / seen | samples to recover after the swap |\n"
      "|---|---|---|---|---|---|---|---|---|\n";
  for (const PolicyRun& r : runs) {
    const double accuracy = r.Accuracy(0, n, message_size);
    const int recovery = RecoverySamples(r, stream, message_size, n);
    absl::StrAppendFormat(
        &table, "| %s | %.4f | %s | %.3f (%.3f + %.3f) | %s | %.3f | %d | %d / %d | %s |\n", r.name,
        accuracy,
        eager ? absl::StrFormat("%.2f%%", 100 * accuracy / eager->Accuracy(0, n, message_size))
              : "",
        r.update_joules(), r.Sum(&MessageResult::absorb), r.Sum(&MessageResult::refresh),
        eager ? absl::StrFormat("%.2f%%", 100 * r.update_joules() / eager->update_joules()) : "",
        r.total_joules(), static_cast<int>(r.Sum(&MessageResult::refreshes) + 0.5),
        static_cast<int>(r.stats.samples_absorbed()),
        static_cast<int>(r.stats.samples_absorbed() + r.stats.samples_skipped()),
        recovery < 0 ? "not within the stream" : absl::StrCat(recovery));
  }
  return table;
}

// Accuracy and update joules per phase, as markdown.
std::string PhaseTable(const Stream& stream, const std::vector<PolicyRun>& runs) {
  const int message_size = absl::GetFlag(FLAGS_message_size);
  std::string table = "| phase | samples |";
  for (const PolicyRun& r : runs) absl::StrAppend(&table, " ", r.name, " |");
  absl::StrAppend(&table, "\n|---|---|");
  for (size_t i = 0; i < runs.size(); ++i) absl::StrAppend(&table, "---|");
  absl::StrAppend(&table, "\n");
  for (size_t p = 0; p < stream.phases.size(); ++p) {
    const size_t from = stream.phases[p].first;
    const size_t to =
        p + 1 < stream.phases.size() ? stream.phases[p + 1].first : stream.rows.size();
    absl::StrAppendFormat(&table, "| %s | %d |", stream.phases[p].second, to - from);
    for (const PolicyRun& r : runs) {
      double update = 0, total = 0;
      for (size_t m = from / message_size; m < r.messages.size() && m * message_size < to; ++m) {
        const MessageResult& x = r.messages[m];
        update += x.absorb + x.refresh;
        total += x.absorb + x.refresh + x.lower + x.readout;
      }
      absl::StrAppendFormat(&table, " %.4f, %.3f J (%.3f J) |", r.Accuracy(from, to, message_size),
                            update, total);
    }
    absl::StrAppend(&table, "\n");
  }
  return table;
}

void WriteCsv(const std::string& path, const std::vector<PolicyRun>& runs, size_t n) {
  std::ofstream out(path);
  const int message_size = absl::GetFlag(FLAGS_message_size);
  const int window = absl::GetFlag(FLAGS_window);
  out << "position";
  for (const PolicyRun& r : runs)
    out << "," << r.name << "_accuracy," << r.name << "_update_joules";
  out << "\n";
  std::vector<double> cumulative(runs.size(), 0);
  for (size_t m = 0; m < runs[0].messages.size(); ++m) {
    const size_t position = std::min(n, (m + 1) * message_size);
    out << position;
    for (size_t i = 0; i < runs.size(); ++i) {
      cumulative[i] += runs[i].messages[m].absorb + runs[i].messages[m].refresh;
      const size_t from = position > static_cast<size_t>(window) ? position - window : 0;
      out << absl::StrFormat(",%.4f,%.6f", runs[i].Accuracy(from, position, message_size),
                             cumulative[i]);
    }
    out << "\n";
  }
}

void PlotPng(const std::string& csv, const std::string& png, const std::vector<PolicyRun>& runs,
             const Stream& stream) {
  FILE* gp = popen("gnuplot 2>&1", "w");
  if (gp == nullptr) {
    std::fprintf(stderr, "gnuplot not available: no PNG (scripts/setup.sh installs gnuplot-nox)\n");
    return;
  }
  std::fprintf(gp, "set terminal pngcairo size 1200,900 font 'sans,11'\nset output '%s'\n",
               png.c_str());
  std::fprintf(gp, "set datafile separator ','\nset key autotitle columnhead\n");
  std::fprintf(gp, "set multiplot layout 2,1 title 'Stream \"%s\" on strata-server: %s'\n",
               stream.name.c_str(), stream.title.c_str());
  for (size_t p = 1; p < stream.phases.size(); ++p) {
    std::fprintf(gp, "set arrow from %d, graph 0 to %d, graph 1 nohead dt 2 lc 'grey'\n",
                 stream.phases[p].first, stream.phases[p].first);
  }
  std::fprintf(gp,
               "set grid\nset ylabel 'prequential accuracy (last %d samples)'\n"
               "set yrange [0:1]\nset key bottom left\nplot ",
               absl::GetFlag(FLAGS_window));
  for (size_t i = 0; i < runs.size(); ++i) {
    std::fprintf(gp, "%s'%s' using 1:%zu with lines lw 2 title '%s'", i ? ", " : "", csv.c_str(),
                 2 + 2 * i, runs[i].name.c_str());
  }
  std::fprintf(gp,
               "\nset xlabel 'stream position (samples)'\n"
               "set ylabel 'cumulative update energy (J, log)'\nset logscale y\n"
               "set yrange [*:*]\nset key top left\nplot ");
  for (size_t i = 0; i < runs.size(); ++i) {
    std::fprintf(gp, "%s'%s' using 1:%zu with lines lw 2 title '%s'", i ? ", " : "", csv.c_str(),
                 3 + 2 * i, runs[i].name.c_str());
  }
  std::fprintf(gp, "\nunset multiplot\n");
  if (pclose(gp) != 0) std::fprintf(stderr, "gnuplot failed: no PNG\n");
}

// Replaces what lies between "<!-- BEGIN strata-bench-stream TAG -->" and the matching END line
// of `path` with `text`. Fails if the markers are missing.
absl::Status ReplaceMarked(const std::string& path, const std::string& tag,
                           const std::string& text) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string content = buffer.str();
  const std::string begin = absl::StrCat("<!-- BEGIN strata-bench-stream ", tag, " -->\n");
  const std::string end = absl::StrCat("<!-- END strata-bench-stream ", tag, " -->");
  const size_t b = content.find(begin);
  const size_t e = content.find(end);
  if (b == std::string::npos || e == std::string::npos || e < b) {
    return absl::NotFoundError(absl::StrCat(path, ": no markers for '", tag, "'"));
  }
  content.replace(b + begin.size(), e - b - begin.size(), text);
  std::ofstream(path) << content;
  return absl::OkStatus();
}

std::vector<PolicyConfig> ReadConfigs() {
  std::vector<PolicyConfig> configs;
  for (const std::string& entry : absl::GetFlag(FLAGS_configs)) {
    std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    PolicyConfig config;
    config.name = parts[0];
    if (parts.size() > 1) config.flags = absl::StrSplit(parts[1], ' ', absl::SkipEmpty());
    configs.push_back(std::move(config));
  }
  return configs;
}

// What RunStream printed, as markdown: the policies' table and the per-phase table.
struct StreamReport {
  std::string policies;
  std::string phases;
};

// Runs every configuration on `stream`; prints and returns the run's markdown tables.
absl::StatusOr<StreamReport> RunStream(const Stream& stream, const data::LabeledImages& images,
                                       const std::string& bundle) {
  std::printf("\n== stream %s: %s; %zu samples; phases at", stream.name.c_str(),
              stream.title.c_str(), stream.rows.size());
  for (const auto& [start, description] : stream.phases) std::printf(" %d", start);
  std::printf("; swap complete at %d\n", stream.drift_at);
  std::vector<PolicyRun> runs;
  for (const PolicyConfig& config : ReadConfigs()) {
    absl::StatusOr<PolicyRun> run = RunPolicy(stream, images, bundle, config);
    if (!run.ok()) return run.status();
    const v1::Stats& s = run->stats;
    std::printf(
        "%-30s %.1f s; decisions: %s; drift alarms %llu, classes forgotten %llu; "
        "server totals: update %.4f J, total %.4f J\n",
        run->name.c_str(), run->seconds, Decisions(s).c_str(),
        static_cast<unsigned long long>(s.drift_alarms()),
        static_cast<unsigned long long>(s.classes_forgotten()),
        s.energy().absorb_joules() + s.energy().refresh_joules(), s.energy().total_joules());
    std::fflush(stdout);
    runs.push_back(*std::move(run));
  }
  const StreamReport report{PolicyTable(stream, runs), PhaseTable(stream, runs)};
  std::printf("\n%s\nPer phase: prequential accuracy, update joules (total joules):\n\n%s",
              report.policies.c_str(), report.phases.c_str());
  const std::string base = absl::StrCat(absl::GetFlag(FLAGS_out_dir), "/", stream.name);
  WriteCsv(base + ".csv", runs, stream.rows.size());
  PlotPng(base + ".csv", base + ".png", runs, stream);
  std::printf("wrote %s.csv, %s.png\n", base.c_str(), base.c_str());
  return report;
}

int Main() {
  absl::StatusOr<data::LabeledImages> images = data::Load(absl::GetFlag(FLAGS_data));
  if (!images.ok()) {
    std::fprintf(stderr, "strata-bench-stream: %s\n", images.status().ToString().c_str());
    return 1;
  }
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::filesystem::create_directories(dir);
  const std::string bundle = dir + "/stream.bundle";
  if (absl::Status s = WriteEmptyBundle(*images, bundle); !s.ok()) {
    std::fprintf(stderr, "strata-bench-stream: %s\n", s.ToString().c_str());
    return 1;
  }
  const size_t first = absl::GetFlag(FLAGS_fit_images);
  std::map<std::string, StreamReport> reports;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_streams), ',')) {
    const Stream stream =
        name == "recurring" ? RecurringStream(*images, first) : DriftStream(*images, first);
    absl::StatusOr<StreamReport> report = RunStream(stream, *images, bundle);
    if (!report.ok()) {
      std::fprintf(stderr, "strata-bench-stream: %s\n", report.status().ToString().c_str());
      return 1;
    }
    reports[stream.name] = *report;
  }
  if (!absl::GetFlag(FLAGS_update_docs)) return 0;
  const std::string source = STRATA_SOURCE_DIR;
  for (const auto& [name, report] : reports) {
    // The doc gets both tables, the README the policies' table.
    for (const absl::Status& s :
         {ReplaceMarked(source + "/docs/update-policies.md", name, report.policies),
          ReplaceMarked(source + "/docs/update-policies.md", name + "-phases", report.phases),
          ReplaceMarked(source + "/README.md", name, report.policies)}) {
      if (!s.ok()) {
        std::fprintf(stderr, "strata-bench-stream: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    std::error_code error;  // a missing PNG (no gnuplot) leaves the doc's old plot
    std::filesystem::copy_file(absl::StrCat(dir, "/", name, ".png"),
                               absl::StrCat(source, "/docs/update-policies-", name, ".png"),
                               std::filesystem::copy_options::overwrite_existing, error);
  }
  std::printf("updated docs/update-policies.md, its plots and README.md\n");
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Update policies on drifting Fashion-MNIST streams, on real strata-server processes");
  absl::ParseCommandLine(argc, argv);
  return strata::Main();
}
