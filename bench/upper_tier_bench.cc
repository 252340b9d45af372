// strata-bench-upper: what the upper tier costs and how exact it is, at the default feature width
// on real Fashion-MNIST features (docs/upper-tier.md quotes its output).
//
//   (a) exactness: the training samples streamed in --batches batches (refreshing the readout after
//       each) vs the batch fit: relative Frobenius difference of the readouts, test accuracies;
//   (b) absorb throughput (samples/s) at batch 1/100/500/5000 for our blocked two-core symmetric
//       rank-k update, Eigen's rankUpdate and a full GEMM; float32 block products accumulated into
//       float64 (exactness and time); refresh time of each path;
//   (c) the same stream learned by full retraining after every batch (re-absorb all samples seen
//       + solve) vs our incremental absorb + refresh: total time and ratio (retraining is measured
//       at a few prefix sizes and extrapolated linearly in the number of samples; the printout says
//       so);
//   (d) stability: --stability_updates single-sample updates at width --stability_width on
//       synthetic data: NaN, SPD, prediction difference against a fresh solve;
//   (e) new classes: --new_classes samples, each with a label never seen before, absorbed in
//       Update-sized messages the way server::ModelStore::Absorb does (ClassIndexOrAdd per sample,
//       one Absorb per message) at width --new_class_width, against as many samples of known
//       labels; first vs last quarter, on the float64 host path and the int8 Gram (cpu backend)
//       path. Synthetic rows: the cost of a class does not depend on the values.
//
// Usage: strata-bench-upper [--train_limit=60000] [--expansion=4096] [--batches=600]
//          [--stream_refresh_batches=600] [--retrain_points=3000,12000]
//          [--stability_updates=1000000] [--new_classes=2000] [--sections=abcde]
//   Quick look (about a minute): --train_limit=6000 --expansion=512 --stability_updates=20000
#include <omp.h>

#include <Eigen/Cholesky>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "data/dataset.h"
#include "fpga/backend.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"

ABSL_FLAG(size_t, train_limit, 60000, "Fashion-MNIST training images to fit on and stream");
ABSL_FLAG(int, expansion, 4096, "Random ReLU expansion of the lower tier (default spec: 4096)");
ABSL_FLAG(int, batches, 600, "Batches the training samples are streamed in");
ABSL_FLAG(int, stream_refresh_batches, 600,
          "Refresh the readout after each of the first N stream batches (timed); the rest of the "
          "stream is only absorbed and its refresh time extrapolated from the measured mean");
ABSL_FLAG(std::string, retrain_points, "3000,12000",
          "Sample counts at which full retraining is measured (plus the whole set, the batch fit)");
ABSL_FLAG(double, lambda, 30.0, "Ridge regularisation");
ABSL_FLAG(int, stability_updates, 1000000, "Single-sample updates of the stability run");
ABSL_FLAG(int, stability_width, 256, "Feature width of the stability run");
ABSL_FLAG(int, stability_refresh_every, 10, "Refresh (kAuto) after every N stability updates");
ABSL_FLAG(int, new_classes, 2000, "Samples with a new label each in section (e)");
ABSL_FLAG(int, new_class_width, 6448, "Feature width of section (e) (default spec: 6448)");
ABSL_FLAG(int, new_class_message, 100, "Samples per Update message in section (e)");
ABSL_FLAG(std::string, sections, "abcde", "Which sections to run (letters a-e; c needs a)");

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
using model::MatrixD;
using model::MatrixF;
using model::Readout;
using model::RefreshMode;
using model::RefreshPath;
using model::UpperTier;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Accuracy(const Readout& readout, const MatrixF& features,
                const std::vector<std::string>& labels) {
  return 100.0 * readout.CountCorrect(features, labels) / features.rows();
}

// Readout columns of `b` reordered to `a`'s labels, then ||b - a||_F / ||a||_F.
double RelativeDifference(const Readout& a, const Readout& b) {
  MatrixF aligned(b.weights.rows(), a.weights.cols());
  for (size_t c = 0; c < a.labels.size(); ++c) {
    const auto it = std::find(b.labels.begin(), b.labels.end(), a.labels[c]);
    aligned.col(c) = b.weights.col(it - b.labels.begin());
  }
  return (aligned - a.weights).norm() / a.weights.norm();
}

struct Features {
  MatrixF train, test;
  std::vector<std::string> train_labels, test_labels;
};

// Absorbs rows [0, n) in blocks of 5000 and solves: a learner that retrains from stored features.
Readout Retrain(const Features& f, Eigen::Index n, double lambda, double* seconds) {
  const auto start = Clock::now();
  UpperTier tier(static_cast<int>(f.train.cols()), lambda);
  for (Eigen::Index begin = 0; begin < n; begin += 5000) {
    const Eigen::Index rows = std::min<Eigen::Index>(5000, n - begin);
    const std::span<const std::string> labels(f.train_labels.data() + begin, rows);
    if (!tier.AbsorbLabeled(f.train.middleRows(begin, rows), labels).ok()) std::abort();
  }
  absl::StatusOr<Readout> readout = tier.Solve();
  if (!readout.ok()) std::abort();
  *seconds = Since(start);
  return *std::move(readout);
}

// ---- (b) absorb kernels ---------------------------------------------------------------------
// One row of the absorb table: samples/s of each kernel on the first k rows, `reps` times.
struct AbsorbRates {
  double ours = 0, rank_update = 0, gemm = 0, int8_gram = 0;
  double fold_seconds = 0;  // the int8 Gram's fold into float64 after the reps
};

AbsorbRates MeasureAbsorbRates(const MatrixF& rows, int reps, double lambda,
                               const std::vector<float>& scales, fpga::Backend* cpu) {
  const int d = static_cast<int>(rows.cols());
  const int k = static_cast<int>(rows.rows());
  AbsorbRates rates;
  std::vector<int> classes(k, 0);
  // Ours: UpperTier::Absorb (the conversion to double and the Q update included).
  UpperTier tier(d, lambda);
  tier.ClassIndexOrAdd("x");
  if (!tier.Absorb(rows, classes).ok()) std::abort();  // warm-up: page in G
  auto start = Clock::now();
  for (int r = 0; r < reps; ++r) {
    if (!tier.Absorb(rows, classes).ok()) std::abort();
  }
  rates.ours = k * reps / Since(start);
  // Eigen's single-threaded symmetric rank-k update of a column-major G.
  Eigen::MatrixXd g = lambda * Eigen::MatrixXd::Identity(d, d);
  const Eigen::MatrixXd h = rows.cast<double>();
  g.selfadjointView<Eigen::Lower>().rankUpdate(h.transpose());
  start = Clock::now();
  for (int r = 0; r < reps; ++r) {
    const Eigen::MatrixXd hd = rows.cast<double>();
    g.selfadjointView<Eigen::Lower>().rankUpdate(hd.transpose());
  }
  rates.rank_update = k * reps / Since(start);
  // A full (both triangles) GEMM, which Eigen runs on every thread.
  g.noalias() += h.transpose() * h;
  start = Clock::now();
  for (int r = 0; r < reps; ++r) {
    const Eigen::MatrixXd hd = rows.cast<double>();
    g.noalias() += hd.transpose() * hd;
  }
  rates.gemm = k * reps / Since(start);
  UpperTier int8_tier(d, lambda);
  int8_tier.ClassIndexOrAdd("x");
  if (!int8_tier.set_readout_scales(scales).ok() || !int8_tier.AttachGramBackend(cpu).ok() ||
      !int8_tier.Absorb(rows, classes).ok()) {
    std::abort();
  }
  start = Clock::now();
  for (int r = 0; r < reps; ++r) {
    if (!int8_tier.Absorb(rows, classes).ok()) std::abort();
  }
  // Rows are staged and accumulated in blocks (UpperTierOptions::gram_block_rows): count the
  // last, partial block's accumulation too.
  fpga::OpCounts staged_counts;
  if (!int8_tier.AccumulateStaged(staged_counts).ok()) std::abort();
  rates.int8_gram = k * reps / Since(start);
  start = Clock::now();
  if (!int8_tier.FoldGram().ok()) std::abort();
  rates.fold_seconds = Since(start);
  return rates;
}

// Compensated float32: float block products (500 rows) accumulated into float64, vs float64.
void CompensatedFloat32(const Features& f, double lambda) {
  const int d = static_cast<int>(f.train.cols());
  const Eigen::Index n = std::min<Eigen::Index>(5000, f.train.rows());
  const Eigen::MatrixXf hf = f.train.topRows(n);
  Eigen::MatrixXd exact = Eigen::MatrixXd::Zero(d, d), compensated = Eigen::MatrixXd::Zero(d, d);
  auto start = Clock::now();
  for (Eigen::Index b = 0; b < n; b += 500) {
    const Eigen::MatrixXd hd = hf.middleRows(b, std::min<Eigen::Index>(500, n - b)).cast<double>();
    exact.noalias() += hd.transpose() * hd;
  }
  const double exact_seconds = Since(start);
  start = Clock::now();
  for (Eigen::Index b = 0; b < n; b += 500) {
    const auto block = hf.middleRows(b, std::min<Eigen::Index>(500, n - b));
    const Eigen::MatrixXf product = block.transpose() * block;
    compensated += product.cast<double>();
  }
  const double float_seconds = Since(start);
  exact.diagonal().array() += lambda;
  compensated.diagonal().array() += lambda;
  const double g_error = (compensated - exact).norm() / exact.norm();
  // What it does to a readout: solve both against the same right-hand sides.
  Eigen::MatrixXd q = Eigen::MatrixXd::Zero(d, 10);
  for (Eigen::Index i = 0; i < n; ++i) {
    q.col(std::hash<std::string>()(f.train_labels[i]) % 10) += hf.row(i).transpose().cast<double>();
  }
  const Eigen::MatrixXd w_exact = exact.llt().solve(q), w_comp = compensated.llt().solve(q);
  std::printf(
      "  float32 block products (500 rows) into float64, %lld samples: rel. error of G %.1e, of "
      "W %.1e; full GEMM time %.2f s vs %.2f s in float64\n",
      static_cast<long long>(n), g_error, (w_comp - w_exact).norm() / w_exact.norm(), float_seconds,
      exact_seconds);
}

void AbsorbThroughput(const Features& f, double lambda) {
  const int d = static_cast<int>(f.train.cols());
  std::printf("\n(b) absorb throughput at D = %d (float64 G, lower triangle; %d threads)\n", d,
              omp_get_max_threads());
  std::printf("  %-6s %16s %16s %16s %16s   %s\n", "batch", "blocked (ours)", "Eigen rankUpdate",
              "full GEMM", "int8 Gram (cpu)", "samples/s");
  // The int8 readout (docs/upper-tier.md): features quantised per feature, absorbed by the cpu
  // backend's Gram accumulator; the fold into float64 is timed separately (once per refresh).
  std::unique_ptr<fpga::Backend> cpu = *fpga::CreateBackend("cpu");
  const std::vector<float> scales = *model::CalibrateReadoutScales(
      f.train.topRows(std::min<Eigen::Index>(5000, f.train.rows())), 100);
  double fold_seconds = 0;
  for (int k : {1, 100, 500, 5000}) {
    if (k > f.train.rows()) continue;
    const int reps = k == 1 ? 20 : k == 100 ? 4 : 1;
    const AbsorbRates rates =
        MeasureAbsorbRates(f.train.topRows(k), reps, lambda, scales, cpu.get());
    fold_seconds = rates.fold_seconds;
    std::printf("  %-6d %16.0f %16.0f %16.0f %16.0f   (GFLOP/s ours %.1f: k D^2 flops per batch)\n",
                k, rates.ours, rates.rank_update, rates.gemm, rates.int8_gram,
                rates.ours * d * static_cast<double>(d) / 1e9);
  }
  std::printf("  int8 Gram fold into float64 G, Q (once per refresh): %.3f s\n", fold_seconds);
  CompensatedFloat32(f, lambda);
}

// ---- (a) + (c) stream vs batch, incremental vs retraining --------------------------------------
// What streaming the training set in batches cost (the refreshes of the timed prefix only).
struct StreamCost {
  double absorb_seconds = 0, update_seconds = 0, refactor_seconds = 0;
  int updates = 0, refactors = 0;
  double update_flops = 0, refactor_flops = 0;
  int batches = 0, refresh_batches = 0;
};

// Streams f.train into `stream` in `cost->batches` batches, refreshing after each of the first
// `cost->refresh_batches` and the last; returns the final readout.
Readout StreamInBatches(const Features& f, UpperTier& stream, StreamCost* cost) {
  const Eigen::Index n = f.train.rows();
  absl::StatusOr<Readout> streamed;
  for (int b = 0; b < cost->batches; ++b) {
    const Eigen::Index begin = n * b / cost->batches, end = n * (b + 1) / cost->batches;
    auto start = Clock::now();
    const std::span<const std::string> labels(f.train_labels.data() + begin, end - begin);
    if (!stream.AbsorbLabeled(f.train.middleRows(begin, end - begin), labels).ok()) std::abort();
    cost->absorb_seconds += Since(start);
    if (b >= cost->refresh_batches && b != cost->batches - 1) continue;
    start = Clock::now();
    streamed = stream.Refresh();
    const double seconds = Since(start);
    if (!streamed.ok()) {
      std::printf("  refresh failed: %s\n", streamed.status().ToString().c_str());
      std::abort();
    }
    if (b >= cost->refresh_batches) continue;  // the final readout, outside the timed prefix
    if (stream.last_refresh().path == RefreshPath::kFactorUpdate) {
      ++cost->updates;
      cost->update_seconds += seconds;
      cost->update_flops += stream.last_refresh().flops();
    } else {
      ++cost->refactors;
      cost->refactor_seconds += seconds;
      cost->refactor_flops += stream.last_refresh().flops();
    }
  }
  return *std::move(streamed);
}

// Refresh time of each path, forced, on the streamed tier (test rows absorbed for the updates).
void RefreshTimes(const Features& f, UpperTier& stream) {
  std::printf("\n(b) refresh time at D = %d, C = %d\n", stream.feature_size(),
              stream.num_classes());
  auto time_refresh = [&](RefreshMode mode) {
    const auto start = Clock::now();
    if (!stream.Refresh(mode).ok()) std::abort();
    return Since(start);
  };
  const double refactor_time = time_refresh(RefreshMode::kForceRefactor);
  std::printf("  %-34s %8.3f s  %7.1f GFLOP  %5.1f GFLOP/s\n", "re-factorisation (Cholesky+solves)",
              refactor_time, stream.last_refresh().flops() / 1e9,
              stream.last_refresh().flops() / 1e9 / refactor_time);
  Eigen::Index row = 0;
  for (int k : {1, 10, 100, 500}) {
    const std::span<const std::string> labels(f.test_labels.data() + row, k);
    if (!stream.AbsorbLabeled(f.test.middleRows(row, k), labels).ok()) std::abort();
    row += k;
    const double t = time_refresh(RefreshMode::kForceFactorUpdate);
    std::printf("  factor update, k = %-4d rows       %8.3f s  %7.1f GFLOP  %5.1f GFLOP/s\n", k, t,
                stream.last_refresh().flops() / 1e9, stream.last_refresh().flops() / 1e9 / t);
  }
  const auto start = Clock::now();
  if (!stream.Solve().ok()) std::abort();
  std::printf("  %-34s %8.3f s\n", "Solve() (stateless re-factorisation)", Since(start));
}

// (c): incremental absorb + refresh after every batch vs retraining from stored features after
// every batch (measured at --retrain_points and the full set, extrapolated linearly between).
void CompareRetraining(const Features& f, double lambda, double batch_seconds,
                       const StreamCost& cost) {
  const Eigen::Index n = f.train.rows();
  std::printf(
      "\n(c) the %d-batch stream: incremental absorb + refresh vs retraining after every "
      "batch\n",
      cost.batches);
  std::vector<std::pair<double, double>> points;  // (samples, seconds)
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_retrain_points), ',')) {
    int64_t m = 0;
    if (!absl::SimpleAtoi(s, &m) || m <= 0 || m >= n) continue;
    double seconds = 0;
    Retrain(f, m, lambda, &seconds);
    points.emplace_back(static_cast<double>(m), seconds);
  }
  points.emplace_back(static_cast<double>(n), batch_seconds);
  for (const auto& [m, seconds] : points) {
    std::printf("  retrain on %6.0f samples (absorb all + solve): %.2f s  (measured)\n", m,
                seconds);
  }
  // Least-squares line t = a + b m through the measured points.
  double sm = 0, st = 0, smm = 0, smt = 0;
  for (const auto& [m, t] : points) sm += m, st += t, smm += m * m, smt += m * t;
  const double k = static_cast<double>(points.size());
  double slope = 0, intercept = st / k;
  if (points.size() > 1) {
    slope = (k * smt - sm * st) / (k * smm - sm * sm);
    intercept = (st - slope * sm) / k;
  }
  double retrain_total = 0;
  for (int b = 0; b < cost.batches; ++b) {
    retrain_total += intercept + slope * static_cast<double>(n * (b + 1) / cost.batches);
  }
  const double refresh_seconds = cost.update_seconds + cost.refactor_seconds;
  const double refresh_mean = refresh_seconds / std::max(1, cost.updates + cost.refactors);
  const double incremental_total =
      cost.absorb_seconds + refresh_seconds + refresh_mean * (cost.batches - cost.refresh_batches);
  std::printf(
      "  retraining after every batch: %.0f s  (EXTRAPOLATED: t(m) = %.2f s + %.3g s x m "
      "fitted to the %zu measured points, summed over m = %lld..%lld)\n",
      retrain_total, intercept, slope, points.size(), static_cast<long long>(n / cost.batches),
      static_cast<long long>(n));
  std::printf(
      "  incremental (absorb + refresh after every batch): %.1f s  (measured: absorb %.1f "
      "s, refresh %.1f s over %d batches%s)\n",
      incremental_total, cost.absorb_seconds, refresh_seconds, cost.refresh_batches,
      cost.refresh_batches < cost.batches ? "; the other batches' refreshes extrapolated" : "");
  std::printf("  ratio retrain / incremental: %.1fx\n", retrain_total / incremental_total);
}

void StreamExactness(const Features& f, double lambda, bool compare_retraining) {
  const int d = static_cast<int>(f.train.cols());
  StreamCost cost;
  cost.batches = absl::GetFlag(FLAGS_batches);
  cost.refresh_batches = std::min(cost.batches, absl::GetFlag(FLAGS_stream_refresh_batches));
  std::printf("\n(a) exactness: %lld training samples streamed in %d batches vs the batch fit\n",
              static_cast<long long>(f.train.rows()), cost.batches);
  double batch_seconds = 0;
  const Readout batch = Retrain(f, f.train.rows(), lambda, &batch_seconds);
  UpperTier stream(d, lambda);
  const Readout streamed = StreamInBatches(f, stream, &cost);
  absl::StatusOr<Readout> fresh = stream.Solve();
  if (!fresh.ok()) std::abort();
  const double batch_accuracy = Accuracy(batch, f.test, f.test_labels);
  const double stream_accuracy = Accuracy(streamed, f.test, f.test_labels);
  std::printf("  %-44s %.2e   (target <= 1e-6)\n", "readout rel. Frobenius diff, stream vs batch",
              RelativeDifference(batch, streamed));
  std::printf("  %-44s %.2e\n", "  same, stream's G re-solved from scratch",
              RelativeDifference(batch, *fresh));
  std::printf("  %-44s batch %.2f%%  stream %.2f%%  (diff %.3f points, target +-0.05)\n",
              "test accuracy", batch_accuracy, stream_accuracy, stream_accuracy - batch_accuracy);
  std::printf(
      "  %-44s %d factor updates (mean %.3f s, %.1f GFLOP), %d re-factorisations "
      "(mean %.3f s, %.1f GFLOP)\n",
      "refreshes in the stream (kAuto)", cost.updates,
      cost.updates ? cost.update_seconds / cost.updates : 0,
      cost.updates ? cost.update_flops / cost.updates / 1e9 : 0, cost.refactors,
      cost.refactors ? cost.refactor_seconds / cost.refactors : 0,
      cost.refactors ? cost.refactor_flops / cost.refactors / 1e9 : 0);
  RefreshTimes(f, stream);
  if (compare_retraining) CompareRetraining(f, lambda, batch_seconds, cost);
}

// ---- (d) stability ---------------------------------------------------------------------------
void Stability() {
  const int d = absl::GetFlag(FLAGS_stability_width);
  const int updates = absl::GetFlag(FLAGS_stability_updates);
  const int every = std::max(1, absl::GetFlag(FLAGS_stability_refresh_every));
  std::printf(
      "\n(d) stability: %d single-sample updates at width %d (synthetic, 4 classes, "
      "feature scales 1 and 30), kAuto refresh every %d\n",
      updates, d, every);
  std::mt19937_64 rng(23);
  std::normal_distribution<float> normal;
  UpperTier tier(d, 1.0);
  for (int c = 0; c < 4; ++c) tier.ClassIndexOrAdd(std::string(1, static_cast<char>('a' + c)));
  MatrixF row(1, d);
  absl::StatusOr<Readout> readout;
  int factor_updates = 0, refactors = 0, non_finite = 0;
  double min_pivot = std::numeric_limits<double>::infinity();
  const auto start = Clock::now();
  for (int i = 0; i < updates; ++i) {
    const int c = static_cast<int>(rng() % 4);
    for (int j = 0; j < d; ++j) {
      row(0, j) = (j % 8 == 0 ? 30.0f : 1.0f) * normal(rng) + (j < 8 ? c : 0);
    }
    if (!tier.Absorb(row, std::vector<int>{c}).ok()) std::abort();
    if ((i + 1) % every == 0 || i + 1 == updates) {
      readout = tier.Refresh();
      if (!readout.ok()) {
        std::printf("  refresh %d failed: %s\n", i, readout.status().ToString().c_str());
        return;
      }
      non_finite += !readout->weights.allFinite();
      min_pivot = std::min(min_pivot, tier.last_refresh().min_pivot);
      (tier.last_refresh().path == RefreshPath::kFactorUpdate ? factor_updates : refactors)++;
    }
  }
  const double seconds = Since(start);
  Eigen::LLT<Eigen::MatrixXd> cholesky(Eigen::MatrixXd(tier.gram()));
  const bool spd = cholesky.info() == Eigen::Success &&
                   Eigen::MatrixXd(cholesky.matrixL()).diagonal().minCoeff() > 0;
  absl::StatusOr<Readout> fresh = tier.Solve();
  if (!fresh.ok()) std::abort();
  MatrixF probe(1000, d);
  for (Eigen::Index i = 0; i < probe.size(); ++i) probe.data()[i] = normal(rng);
  const MatrixF a = readout->Scores(probe), b = fresh->Scores(probe);
  std::printf(
      "  %.1f s; refreshes: %d factor updates, %d re-factorisations; non-finite readouts: "
      "%d; G finite: %s; G SPD (fresh Cholesky): %s; min pivot over all refreshes %.3g\n",
      seconds, factor_updates, refactors, non_finite, tier.gram().allFinite() ? "yes" : "NO",
      spd ? "yes" : "NO", min_pivot);
  std::printf(
      "  last refreshed readout vs a fresh solve: max |score diff| / max |score| = %.2e, "
      "rel. Frobenius diff of W = %.2e\n",
      (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff(),
      (readout->weights - fresh->weights).norm() / fresh->weights.norm());
}

// ---- (e) new classes ---------------------------------------------------------------------------
// What the absorb of `labels` (one row each, in messages of `message` rows) costs, per quarter of
// the samples: ClassIndexOrAdd for every label, then one Absorb per message, as
// server::ModelStore::Absorb does. For the int8 path the rows still staged at the end are then
// accumulated (reported apart: the same work for known and new labels but the Q columns).
struct QuarterTimes {
  double quarter[4] = {0, 0, 0, 0};
  double total = 0;
  double accumulate_staged = 0;
};

QuarterTimes AbsorbMessages(UpperTier& tier, const MatrixF& rows,
                            const std::vector<std::string>& labels, int message) {
  QuarterTimes t;
  const int n = static_cast<int>(labels.size());
  for (int begin = 0; begin < n; begin += message) {
    const int end = std::min(n, begin + message);
    const auto start = Clock::now();
    std::vector<int> classes;
    classes.reserve(end - begin);
    for (int i = begin; i < end; ++i) classes.push_back(tier.ClassIndexOrAdd(labels[i]));
    if (!tier.Absorb(rows.middleRows(begin, end - begin), classes).ok()) std::abort();
    const double seconds = Since(start);
    t.quarter[std::min(3, 4 * begin / n)] += seconds;
    t.total += seconds;
  }
  if (tier.gram_backend() != nullptr) {
    const auto start = Clock::now();
    fpga::OpCounts counts;
    if (!tier.AccumulateStaged(counts).ok()) std::abort();
    t.accumulate_staged = Since(start);
  }
  return t;
}

void NewClasses(double lambda) {
  const int n = absl::GetFlag(FLAGS_new_classes);
  const int d = absl::GetFlag(FLAGS_new_class_width);
  const int message = std::max(1, absl::GetFlag(FLAGS_new_class_message));
  std::printf(
      "\n(e) %d new classes, one sample each, in messages of %d, vs %d samples of 10 known "
      "labels; D = %d (synthetic rows); seconds of ClassIndexOrAdd + Absorb\n",
      n, message, n, d);
  std::mt19937_64 rng(29);
  std::normal_distribution<float> normal;
  MatrixF rows(n, d);
  for (Eigen::Index i = 0; i < rows.size(); ++i) rows.data()[i] = normal(rng);
  std::vector<std::string> known(n), fresh(n);
  for (int i = 0; i < n; ++i) {
    known[i] = absl::StrCat("known", i % 10);
    fresh[i] = absl::StrCat("new", i);
  }
  std::unique_ptr<fpga::Backend> cpu = *fpga::CreateBackend("cpu");
  const std::vector<float> scales = *model::CalibrateReadoutScales(rows, 100);
  std::printf("  %-24s %-6s %9s %9s %9s %9s %9s %12s\n", "path", "labels", "total", "1st qtr",
              "2nd qtr", "3rd qtr", "4th qtr", "+accumulate");
  for (const bool int8 : {false, true}) {
    QuarterTimes times[2];
    for (const bool new_labels : {false, true}) {
      // A tier as a server holds it after a while: 10 known classes, G paged in and, for the int8
      // path, the accumulator created by one full block of rows (so the run stages no block).
      UpperTier tier(d, lambda);
      std::vector<int> warm_classes;
      for (int i = 0; i < 10; ++i) tier.ClassIndexOrAdd(absl::StrCat("known", i));
      if (int8) {
        if (!tier.set_readout_scales(scales).ok() || !tier.AttachGramBackend(cpu.get()).ok()) {
          std::abort();
        }
      }
      const int warm = int8 ? tier.options().gram_block_rows : message;
      MatrixF warm_rows(warm, d);
      for (int i = 0; i < warm; ++i) {
        warm_rows.row(i) = rows.row(i % n);
        warm_classes.push_back(i % 10);
      }
      if (!tier.Absorb(warm_rows, warm_classes).ok()) std::abort();
      if (int8 && tier.staged_gram_rows() != 0) std::abort();
      times[new_labels] = AbsorbMessages(tier, rows, new_labels ? fresh : known, message);
      const QuarterTimes& t = times[new_labels];
      std::printf("  %-24s %-6s %9.3f %9.3f %9.3f %9.3f %9.3f %12.3f\n",
                  int8 ? "int8 Gram (cpu backend)" : "float64 host", new_labels ? "new" : "known",
                  t.total, t.quarter[0], t.quarter[1], t.quarter[2], t.quarter[3],
                  t.accumulate_staged);
    }
    std::printf("  %-24s new / known: %.1fx (total), last / first quarter of new: %.1fx\n", "",
                (times[1].total + times[1].accumulate_staged) /
                    (times[0].total + times[0].accumulate_staged),
                times[1].quarter[3] / times[1].quarter[0]);
  }
}

int Run() {
  const std::string sections = absl::GetFlag(FLAGS_sections);
  const double lambda = absl::GetFlag(FLAGS_lambda);
  const bool real_data = sections.find_first_of("abc") != std::string::npos;
  Features f;
  if (real_data) {
    const auto start = Clock::now();
    absl::StatusOr<data::LabeledImages> train =
        data::Load("fashion-mnist:train", {0, absl::GetFlag(FLAGS_train_limit)});
    absl::StatusOr<data::LabeledImages> test = data::Load("fashion-mnist:test");
    if (!train.ok() || !test.ok()) {
      std::fprintf(stderr, "strata-bench-upper: cannot read Fashion-MNIST: %s %s\n",
                   train.status().ToString().c_str(), test.status().ToString().c_str());
      return 1;
    }
    model::LowerTierSpec spec;
    spec.expansion = absl::GetFlag(FLAGS_expansion);
    const MatrixF images = model::PixelsToMatrix(train->pixels, train->image_size());
    absl::StatusOr<model::LowerTier> lower = model::LowerTier::Fit(spec, images);
    if (!lower.ok()) {
      std::fprintf(stderr, "strata-bench-upper: %s\n", lower.status().ToString().c_str());
      return 1;
    }
    f.train = lower->Features(images);
    f.test = lower->Features(model::PixelsToMatrix(test->pixels, test->image_size()));
    f.train_labels = train->labels;
    f.test_labels = test->labels;
    std::printf(
        "data: lower tier (default spec, expansion %d) fit on %zu Fashion-MNIST training "
        "images; D = %d features; %zu test images; lambda %g; %.1f s\n",
        spec.expansion, train->size(), lower->feature_size(), test->size(), lambda, Since(start));
  }
  if (sections.find('b') != std::string::npos) AbsorbThroughput(f, lambda);
  if (sections.find('a') != std::string::npos) {
    StreamExactness(f, lambda, sections.find('c') != std::string::npos);
  }
  if (sections.find('d') != std::string::npos) Stability();
  if (sections.find('e') != std::string::npos) NewClasses(lambda);
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Measures the upper tier: exactness of the streamed readout, absorb throughput, refresh "
      "paths, incremental vs full retraining, long-run stability and the cost of new classes.");
  absl::ParseCommandLine(argc, argv);
  return strata::Run();
}
