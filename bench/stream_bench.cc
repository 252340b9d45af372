// strata-bench-stream: the update policies on a drifting Fashion-MNIST stream, in process (no
// gRPC), with the same calls the server's Update pipeline makes.
//
// 1. Fit a small lower tier once on the first --fit_images training images; it stays frozen.
// 2. Stream the remaining training images in messages of --message_size samples:
//    phases 1..5 bring two new classes each (classes 2p-2 and 2p-1, --phase_samples per class),
//    then a final phase of every class (the remaining images) in which --swap_a and --swap_b
//    exchange labels.
// 3. For each policy: predict every sample with the current readout before absorbing it
//    (prequential error), absorb, ask the policy, refresh if it says so; charge the EnergyMeter.
// Prints mean prequential accuracy and update energy (absorb + refresh joules) per policy and the
// ratios against eager; writes --csv and, with gnuplot on PATH, --png.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "data/dataset.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"
#include "update/energy_meter.h"
#include "update/update_policy.h"

ABSL_FLAG(std::string, data, "fashion-mnist:train", "Training images (data::Load source)");
ABSL_FLAG(int, fit_images, 10000, "Images the lower tier is fit on (then frozen)");
ABSL_FLAG(int, filters, 8, "PCA conv filters of the lower tier");
ABSL_FLAG(int, expansion, 1024, "Random ReLU units of the lower tier");
ABSL_FLAG(double, lambda, 30.0, "Ridge regularisation of the upper tier");
ABSL_FLAG(double, forgetting, 1.0, "Upper-tier forgetting factor alpha per absorbed message");
ABSL_FLAG(int, message_size, 100, "Samples per Update message");
ABSL_FLAG(int, phase_samples, 4000, "Samples per class in each new-class phase");
ABSL_FLAG(int, swap_a, 1, "Class (number) whose label swaps with --swap_b in the last phase");
ABSL_FLAG(int, swap_b, 8, "See --swap_a");
ABSL_FLAG(double, message_interval_s, 1.0, "Simulated seconds between messages");
ABSL_FLAG(std::string, policies, "eager,periodic,energy-aware", "Policies to run");
ABSL_FLAG(int64_t, period_samples, 2000, "periodic: samples between refreshes");
ABSL_FLAG(double, period_s, 0, "periodic: seconds between refreshes (0: off)");
ABSL_FLAG(double, joules_per_error, 1e-3, "energy-aware: joules one avoided error is worth");
ABSL_FLAG(double, budget_watts, 5e-3, "energy-aware: refresh budget fill rate (J/s)");
ABSL_FLAG(double, burst_joules, 0.1, "energy-aware: refresh budget capacity (J)");
ABSL_FLAG(std::string, drift_detector, "adwin", "adwin or page-hinkley");
ABSL_FLAG(int, window, 1000, "Sliding window (samples) of the CSV's prequential accuracy");
ABSL_FLAG(std::string, csv, "stream.csv", "Output CSV (empty: none)");
ABSL_FLAG(std::string, png, "stream.png", "Output PNG via gnuplot (empty: none)");

namespace strata {
namespace {

using model::MatrixF;

struct Stream {
  std::vector<int> order;            // indices into the feature rows
  std::vector<std::string> labels;   // the label each streamed sample carries
  std::vector<int> phase_starts;     // stream positions where phases begin
};

struct PolicyRun {
  std::string name;
  double accuracy = 0;
  double absorb_joules = 0, refresh_joules = 0, inference_joules = 0;
  update::UpdatePolicyStats stats;
  std::vector<double> window_accuracy;  // per message: accuracy over the last --window samples
  std::vector<double> cumulative_joules;
  double seconds = 0;
};

PolicyRun RunPolicy(const std::string& name, const MatrixF& features, const Stream& stream,
                    const model::LowerTier& lower) {
  PolicyRun run;
  run.name = name;
  const int d = static_cast<int>(features.cols());
  model::UpperTierOptions upper_options;
  upper_options.forgetting = absl::GetFlag(FLAGS_forgetting);
  model::UpperTier upper(d, absl::GetFlag(FLAGS_lambda), upper_options);

  update::UpdatePolicyOptions options;
  options.period_samples = absl::GetFlag(FLAGS_period_samples);
  options.period = absl::Seconds(absl::GetFlag(FLAGS_period_s));
  options.joules_per_error = absl::GetFlag(FLAGS_joules_per_error);
  options.budget_watts = absl::GetFlag(FLAGS_budget_watts);
  options.burst_joules = absl::GetFlag(FLAGS_burst_joules);
  options.drift_detector = absl::GetFlag(FLAGS_drift_detector);
  absl::Time now = absl::UnixEpoch();
  auto policy = update::UpdatePolicy::Create(name, options, now);
  if (!policy.ok()) {
    std::fprintf(stderr, "strata-bench-stream: %s\n", policy.status().ToString().c_str());
    std::exit(2);
  }
  update::EnergyMeter meter(*fpga::EnergyTableFor("cpu"));

  const int message_size = absl::GetFlag(FLAGS_message_size);
  const int window = absl::GetFlag(FLAGS_window);
  const absl::Duration interval = absl::Seconds(absl::GetFlag(FLAGS_message_interval_s));
  model::Readout readout;
  bool have_readout = false;
  std::vector<uint8_t> history;  // per-sample prequential errors, for the sliding window
  int64_t window_errors = 0;
  int64_t errors_total = 0;
  const absl::Time wall_start = absl::Now();

  const size_t n = stream.order.size();
  for (size_t start = 0; start < n; start += message_size) {
    const int k = static_cast<int>(std::min<size_t>(message_size, n - start));
    MatrixF h(k, d);
    for (int i = 0; i < k; ++i) h.row(i) = features.row(stream.order[start + i]);
    // The features were computed once up front; charge what the lower tier would have spent.
    meter.Charge(update::EnergyPhase::kLowerTierInference,
                 model::LowerTierInferenceCounts(lower.MacsPerSample(), lower.input_size(), d, k));

    // Prequential: predict with the current readout before absorbing.
    std::vector<uint8_t> errors(k, 1);
    if (have_readout) {
      const std::vector<int> predicted = readout.Classify(h);
      for (int i = 0; i < k; ++i) {
        errors[i] = readout.labels[predicted[i]] == stream.labels[start + i] ? 0 : 1;
      }
    }
    bool new_class = false;
    std::vector<int> classes(k);
    for (int i = 0; i < k; ++i) {
      if (upper.ClassIndex(stream.labels[start + i]) < 0) new_class = true;
      classes[i] = upper.ClassIndexOrAdd(stream.labels[start + i]);
    }
    if (absl::Status s = upper.Absorb(h, classes); !s.ok()) {
      std::fprintf(stderr, "absorb: %s\n", s.ToString().c_str());
      std::exit(1);
    }
    meter.Charge(update::EnergyPhase::kAbsorb,
                 model::AbsorbCounts(d, upper.num_classes(), k));

    auto plan = upper.PlanRefresh(model::RefreshMode::kAuto);
    const double refresh_cost =
        plan.ok() ? meter.Estimate(model::RefreshReportCounts(*plan, d, upper.num_classes()))
                  : meter.Estimate(model::CholeskyRefreshCounts(d, upper.num_classes()));
    const update::Decision decision =
        (*policy)->OnMessage({errors, new_class, refresh_cost, now});
    if (decision.apply) {
      auto solved = upper.Refresh(model::RefreshMode::kAuto);
      if (!solved.ok()) {
        std::fprintf(stderr, "refresh: %s\n", solved.status().ToString().c_str());
        std::exit(1);
      }
      readout = *std::move(solved);
      have_readout = true;
      meter.Charge(update::EnergyPhase::kRefresh,
                   model::RefreshReportCounts(upper.last_refresh(), d, upper.num_classes()));
    }
    now += interval;

    for (uint8_t e : errors) {
      history.push_back(e);
      window_errors += e;
      errors_total += e;
      if (static_cast<int>(history.size()) > window) window_errors -= history[history.size() - 1 - window];
    }
    const double width = std::min<double>(window, static_cast<double>(history.size()));
    run.window_accuracy.push_back(1.0 - static_cast<double>(window_errors) / width);
    run.cumulative_joules.push_back(meter.UpdateJoules());
  }
  run.seconds = absl::ToDoubleSeconds(absl::Now() - wall_start);
  run.accuracy = 1.0 - static_cast<double>(errors_total) / static_cast<double>(n);
  run.absorb_joules = meter.Joules(update::EnergyPhase::kAbsorb);
  run.refresh_joules = meter.Joules(update::EnergyPhase::kRefresh);
  run.inference_joules = meter.Joules(update::EnergyPhase::kLowerTierInference);
  run.stats = (*policy)->Stats();
  return run;
}

Stream BuildStream(const data::LabeledImages& images, size_t first) {
  const int phase_samples = absl::GetFlag(FLAGS_phase_samples);
  const int swap_a = absl::GetFlag(FLAGS_swap_a), swap_b = absl::GetFlag(FLAGS_swap_b);
  std::vector<std::vector<int>> pools(10);
  for (size_t i = first; i < images.size(); ++i) {
    for (int c = 0; c < 10; ++c) {
      if (images.labels[i] == data::kFashionMnistClasses[c]) {
        pools[c].push_back(static_cast<int>(i - first));
        break;
      }
    }
  }
  std::mt19937_64 rng(42);
  Stream stream;
  auto append = [&](std::vector<int> part, bool swap) {
    std::shuffle(part.begin(), part.end(), rng);
    stream.phase_starts.push_back(static_cast<int>(stream.order.size()));
    for (int row : part) {
      int c = 0;
      while (images.labels[first + row] != data::kFashionMnistClasses[c]) ++c;
      if (swap && c == swap_a) c = swap_b;
      else if (swap && c == swap_b) c = swap_a;
      stream.order.push_back(row);
      stream.labels.push_back(data::kFashionMnistClasses[c]);
    }
  };
  for (int phase = 0; phase < 5; ++phase) {
    std::vector<int> part;
    for (int c = 2 * phase; c < 2 * phase + 2; ++c) {
      const size_t take = std::min<size_t>(phase_samples, pools[c].size());
      part.insert(part.end(), pools[c].begin(), pools[c].begin() + take);
      pools[c].erase(pools[c].begin(), pools[c].begin() + take);
    }
    append(std::move(part), false);
  }
  std::vector<int> rest;
  for (auto& pool : pools) rest.insert(rest.end(), pool.begin(), pool.end());
  append(std::move(rest), true);
  return stream;
}

void WriteCsv(const std::string& path, const std::vector<PolicyRun>& runs, int message_size,
              size_t n) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "position");
  for (const auto& r : runs) std::fprintf(f, ",%s_accuracy,%s_update_joules", r.name.c_str(), r.name.c_str());
  std::fprintf(f, "\n");
  for (size_t m = 0; m < runs[0].window_accuracy.size(); ++m) {
    std::fprintf(f, "%zu", std::min(n, (m + 1) * static_cast<size_t>(message_size)));
    for (const auto& r : runs) std::fprintf(f, ",%.4f,%.6f", r.window_accuracy[m], r.cumulative_joules[m]);
    std::fprintf(f, "\n");
  }
  std::fclose(f);
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
  std::fprintf(gp, "set multiplot layout 2,1 title 'Drifting Fashion-MNIST stream: classes arrive "
                   "2 at a time, then two labels swap'\n");
  for (size_t p = 1; p < stream.phase_starts.size(); ++p) {
    std::fprintf(gp, "set arrow from %d, graph 0 to %d, graph 1 nohead dt 2 lc 'grey'\n",
                 stream.phase_starts[p], stream.phase_starts[p]);
  }
  std::fprintf(gp, "set grid\nset ylabel 'prequential accuracy (last %d samples)'\n"
                   "set yrange [0:1]\nset key bottom left\n", absl::GetFlag(FLAGS_window));
  std::fprintf(gp, "plot ");
  for (size_t i = 0; i < runs.size(); ++i) {
    std::fprintf(gp, "%s'%s' using 1:%zu with lines lw 2 title '%s'", i ? ", " : "", csv.c_str(),
                 2 + 2 * i, runs[i].name.c_str());
  }
  std::fprintf(gp, "\nset xlabel 'stream position (samples)'\n"
                   "set ylabel 'cumulative update energy (J, log)'\nset logscale y\n"
                   "set yrange [*:*]\nset key top left\nplot ");
  for (size_t i = 0; i < runs.size(); ++i) {
    std::fprintf(gp, "%s'%s' using 1:%zu with lines lw 2 title '%s'", i ? ", " : "", csv.c_str(),
                 3 + 2 * i, runs[i].name.c_str());
  }
  std::fprintf(gp, "\nunset multiplot\n");
  if (pclose(gp) != 0) std::fprintf(stderr, "gnuplot failed: no PNG\n");
}

int Main() {
  auto images = data::Load(absl::GetFlag(FLAGS_data));
  if (!images.ok()) {
    std::fprintf(stderr, "strata-bench-stream: %s\n", images.status().ToString().c_str());
    return 1;
  }
  const size_t fit = absl::GetFlag(FLAGS_fit_images);
  const MatrixF all = model::PixelsToMatrix(images->pixels, images->image_size());

  model::LowerTierSpec spec;
  spec.filters = absl::GetFlag(FLAGS_filters);
  spec.expansion = absl::GetFlag(FLAGS_expansion);
  absl::Time t0 = absl::Now();
  auto lower = model::LowerTier::Fit(spec, all.topRows(fit));
  if (!lower.ok()) {
    std::fprintf(stderr, "strata-bench-stream: %s\n", lower.status().ToString().c_str());
    return 1;
  }
  const MatrixF features = lower->Features(all.bottomRows(all.rows() - fit));
  std::printf("lower tier: fit on %zu images, %d features, %.1f s (fit + stream features)\n", fit,
              lower->feature_size(), absl::ToDoubleSeconds(absl::Now() - t0));

  const Stream stream = BuildStream(*images, fit);
  std::printf("stream: %zu samples in messages of %d; phases start at", stream.order.size(),
              absl::GetFlag(FLAGS_message_size));
  for (int s : stream.phase_starts) std::printf(" %d", s);
  std::printf(" (last phase: '%s' <-> '%s' swapped)\n",
              data::kFashionMnistClasses[absl::GetFlag(FLAGS_swap_a)],
              data::kFashionMnistClasses[absl::GetFlag(FLAGS_swap_b)]);

  std::vector<PolicyRun> runs;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_policies), ',')) {
    runs.push_back(RunPolicy(std::string(name), features, stream, *lower));
    const PolicyRun& r = runs.back();
    std::printf("%-13s accuracy %.4f  update %.4f J (absorb %.4f + refresh %.4f)  refreshes %llu"
                "  drift alarms %llu  [%.1f s]\n",
                r.name.c_str(), r.accuracy, r.absorb_joules + r.refresh_joules, r.absorb_joules,
                r.refresh_joules, static_cast<unsigned long long>(r.stats.refreshes),
                static_cast<unsigned long long>(r.stats.drift_alarms), r.seconds);
    std::printf("              decisions:");
    for (int i = 0; i < update::kNumDecisionReasons; ++i) {
      if (r.stats.by_reason[i] == 0) continue;
      std::printf(" %s=%llu",
                  std::string(update::DecisionReasonName(static_cast<update::DecisionReason>(i)))
                      .c_str(),
                  static_cast<unsigned long long>(r.stats.by_reason[i]));
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  const PolicyRun* eager = nullptr;
  for (const auto& r : runs) if (r.name == "eager") eager = &r;
  std::printf("\n| policy | mean prequential accuracy | update energy (J) | refreshes |%s\n",
              eager ? " accuracy vs eager | update energy vs eager | refresh energy vs eager |" : "");
  std::printf("|---|---|---|---|%s\n", eager ? "---|---|---|" : "");
  for (const auto& r : runs) {
    const double joules = r.absorb_joules + r.refresh_joules;
    std::printf("| %s | %.4f | %.4f | %llu |", r.name.c_str(), r.accuracy, joules,
                static_cast<unsigned long long>(r.stats.refreshes));
    if (eager) {
      std::printf(" %.2f%% | %.2f%% | %.2f%% |", 100 * r.accuracy / eager->accuracy,
                  100 * joules / (eager->absorb_joules + eager->refresh_joules),
                  100 * r.refresh_joules / eager->refresh_joules);
    }
    std::printf("\n");
  }

  const std::string csv = absl::GetFlag(FLAGS_csv), png = absl::GetFlag(FLAGS_png);
  if (!csv.empty()) {
    WriteCsv(csv, runs, absl::GetFlag(FLAGS_message_size), stream.order.size());
    std::printf("wrote %s\n", csv.c_str());
    if (!png.empty()) {
      PlotPng(csv, png, runs, stream);
      std::printf("wrote %s\n", png.c_str());
    }
  }
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Update policies on a drifting Fashion-MNIST stream");
  absl::ParseCommandLine(argc, argv);
  return strata::Main();
}
