// The upper tier: a ridge-regression readout kept as exact sufficient statistics.
//
//   G = sum_i h_i h_i^T + lambda I     (D x D, float64)
//   Q = sum_i h_i y_i^T                (D x C, float64; y_i one-hot over the classes)
//   W = G^-1 Q                         (solved by Cholesky, never by an explicit inverse)
//
// Absorbing samples only adds to G and Q, so the readout after any sequence of absorbs equals the
// batch fit on the union of the samples (up to float64 rounding). A label never seen before adds a
// class: a zero column in Q, which is exact, since every earlier sample's target for the new class
// was 0.
//
// Two ways to turn the statistics into a readout (docs/upper-tier.md has the math and the numbers):
//   - Solve() / Refresh(kForceRefactor): Cholesky-factor G from scratch (D^3/3 flops, blocked, both
//     cores), then two triangular solves for W (2 D^2 C flops).
//   - Refresh(kForceFactorUpdate): keep the factor L of the last refresh and fold in only the rows
//     absorbed since (3 k D^2 flops for k rows, by plane rotations), then the two triangular solves.
// Refresh(kAuto) picks the cheaper one by a flop-count cost model and re-factors from G
// periodically so that rounding in the updated factor cannot drift.
//
// Optional exponential forgetting (0 < alpha <= 1, default 1 = never forget): every absorbed batch
// first decays the data part of the statistics,
//   G <- alpha (G - lambda I) + lambda I,   Q <- alpha Q,
// then adds the batch; the regulariser lambda I is never decayed.
//
// Optional int8 readout features (docs/upper-tier.md, "Int8 readout features and the Gram kernel"):
// with per-feature scales s_j set (set_readout_scales), every absorbed row h is first quantised,
// h_q = clamp(round(h / s), -127, 127), and the statistics are those of the dequantised rows
// h~ = s .* h_q (exact in float: the scales carry at most 16 significant bits). Then
//   G = G_base + S (sum h_q h_q^T) S,   Q = Q_base + S (sum h_q y^T)
// and the integer sums are exact on any fpga::Backend: with a backend attached (AttachGramBackend)
// absorbs go into its GramInt8Accumulator (the FPGA's Gram kernel on a card) and the float64
// statistics fold the integer sums in once, when they are read (gram(), cross(), Solve, Refresh).
// Without a backend the same dequantised rows go through the float64 host path; both agree to
// float64 rounding (~1e-15 relative).
//
// Thread safety: const methods may run concurrently with each other, EXCEPT that with an attached
// Gram backend holding unfolded rows, gram(), cross() and Solve() fold them in first (mutating
// cached state), so callers must serialise those too (the server's store does: one mutex).
// Anything non-const (Absorb, Refresh, ClassIndexOrAdd, set_forgetting) needs exclusive access.
#ifndef STRATA_MODEL_UPPER_TIER_H_
#define STRATA_MODEL_UPPER_TIER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fpga/backend.h"
#include "model/tensor.h"

namespace strata::model {

// A solved readout: scores = features * weights.
struct Readout {
  MatrixF weights;  // D x C
  std::vector<std::string> labels;

  // Class scores for a batch of feature rows: rows x C.
  MatrixF Scores(const MatrixF& features) const { return features * weights; }
  // The class index with the highest score, per feature row.
  std::vector<int> Classify(const MatrixF& features) const;
  // How many feature rows are classified as their label (labels[i] belongs to row i).
  size_t CountCorrect(const MatrixF& features, std::span<const std::string> labels) const;
  // The work of Scores for `rows` feature rows, in fp32 (for the energy meter): rows * D * C
  // MACs, and the scores written (4 B each). The weights are assumed cache-resident and the
  // features were counted as the lower tier's output, so the count is exactly proportional to
  // `rows`.
  fpga::OpCounts Counts(int rows) const;
};

// How the upper tier's readout is recomputed.
enum class RefreshPath {
  kRefactor,      // Cholesky of G from scratch, then two triangular solves
  kFactorUpdate,  // rank-k update of the kept factor with the rows absorbed since, then the solves
};

// What Refresh() may do.
enum class RefreshMode {
  kAuto,               // the cheaper path by the cost model (see UpperTierOptions)
  kForceRefactor,      // always re-factor
  kForceFactorUpdate,  // always update the factor; FAILED_PRECONDITION if it cannot be updated
};

// What a refresh did (or, from PlanRefresh, would do) and what it cost, for energy accounting.
struct RefreshReport {
  RefreshPath path = RefreshPath::kRefactor;
  // Why this path: "forced", "cost model", "periodic re-factor", "no factor kept", ...
  std::string reason;
  int64_t rows_folded = 0;  // rows folded into the factor (kFactorUpdate); 0 for kRefactor
  double factor_flops = 0;  // Cholesky (D^3/3 + lower-order terms) or the update (3 k D^2)
  double solve_flops = 0;   // the two triangular solves: 2 D^2 C
  double flops() const { return factor_flops + solve_flops; }
  // Smallest diagonal entry of the Cholesky factor after the refresh: > 0 means G is positive
  // definite. 0 in a plan (not yet known).
  double min_pivot = 0;
  // Factor updates applied since the last re-factorisation, this one included (0 after kRefactor).
  int updates_since_refactor = 0;
};

// ---- Work models of the float64 host paths (pure functions of the shapes; the energy meter,
// update/energy_meter.h, prices them) ----

// Absorbing `rows` samples with `d` features and `classes` classes in fp64: the symmetric rank-k
// update of G's lower triangle (rows * d * (d + 1) / 2 MACs) plus Q += H^T Y (rows * d * classes
// MACs: a dense GEMM's bound; the one-hot targets make most of them zeros). DRAM: H read once
// (4 B), G's lower triangle and Q read and written once (8 B each).
fpga::OpCounts AbsorbCounts(int d, int classes, int rows);

// A full refresh in fp64: Cholesky of G (d^3 / 6 MACs) and the forward and backward triangular
// solves for Q's columns (2 * d^2 / 2 MACs per class). DRAM: G read, the factor written and read
// twice, Q read, W written.
fpga::OpCounts CholeskyRefreshCounts(int d, int classes);

// A refresh by a rank-`rows` update of an existing Cholesky factor (rows * d^2 MACs) plus the same
// two triangular solves. Cheaper than CholeskyRefreshCounts when rows < d / 6.
fpga::OpCounts RankUpdateRefreshCounts(int d, int classes, int rows);

// The work a refresh reported (UpperTier::last_refresh() or PlanRefresh()): its flops as fp64
// MACs (2 flops per MAC) plus the DRAM traffic of the path it took.
fpga::OpCounts RefreshReportCounts(const RefreshReport& report, int d, int classes);

// The cheaper of the two refresh paths for `rows` samples absorbed since the last factorisation
// (a full Cholesky when there is no factor yet, rows < 0).
fpga::OpCounts CheapestRefreshCounts(int d, int classes, int rows);

// Construction-time options of an UpperTier.
struct UpperTierOptions {
  // Exponential forgetting factor alpha, 0 < alpha <= 1 (1: exact, nothing forgotten).
  double forgetting = 1.0;
  // Keep the Cholesky factor of the last refresh and the rows absorbed since it, so that Refresh()
  // can take the factor-update path. Costs D^2 doubles (the factor) plus the buffered rows (at
  // most max(1024, D/4) rows of D floats; beyond that the factor is dropped, as re-factoring is
  // then cheaper than folding the rows in).
  bool keep_factor = true;
  // kAuto re-factors from G after this many consecutive factor updates (bounds rounding drift).
  int refactor_every = 64;
  // Cost-model weight of one factor-update flop relative to one re-factorisation flop: the
  // rotations run at a lower flop rate than the Cholesky's block products. kAuto updates the
  // factor when weight * 3 k D^2 < D^3 / 3. Measured on the 2-core machine (docs/upper-tier.md).
  double update_flop_weight = 2.0;
  // Int8 readout with a Gram backend: absorbed rows are staged (quantised, D bytes each) and handed
  // to the backend's accumulator in blocks of this many rows, because every Accumulate call also
  // passes once over the int64 triangle of G (D^2/2 values; 166 MB at D = 6448): per-message calls
  // made small Update messages slower than the float64 host path. Exact: the integer sums do not
  // depend on how rows are split over calls. Staged rows are accumulated before any fold.
  int gram_block_rows = 2048;
};

// Per-feature int8 scales for the readout features, calibrated on `features` (rows of training
// features): s_j = (the `percentile` of |h_j| over the rows) / 127, in (0, 100] (100: the maximum);
// a feature that is 0 on every row gets the scale of the largest feature (any positive scale
// represents 0 exactly). INVALID_ARGUMENT if there are no rows, the percentile is out of range or
// a value is NaN / Inf.
absl::StatusOr<std::vector<float>> CalibrateReadoutScales(const MatrixF& features,
                                                          double percentile);

class UpperTier {
 public:
  // An empty readout over `feature_size` features with ridge parameter `lambda` > 0.
  UpperTier(int feature_size, double lambda);
  UpperTier(int feature_size, double lambda, const UpperTierOptions& options);
  // Copies fold the source's unfolded Gram rows in first; the copy shares the Gram backend (not
  // the accumulator: it creates its own on its first int8 absorb).
  UpperTier(const UpperTier& other);
  UpperTier& operator=(const UpperTier& other);
  UpperTier(UpperTier&&) = default;
  UpperTier& operator=(UpperTier&&) = default;
  ~UpperTier();

  // The class index of `label`, adding it as a new class if it is new. A new class costs
  // amortised O(D): Q (and an attached Gram accumulator's Q) keep spare class columns and grow
  // their capacity geometrically (class_capacity()), so a stream of C new labels costs O(D C) in
  // all, not O(D C^2).
  int ClassIndexOrAdd(absl::string_view label);
  // The class index of `label`, or -1.
  int ClassIndex(absl::string_view label) const;

  // Adds the samples (one feature row each) with their class indices to G and Q (after decaying
  // them by the forgetting factor, if it is < 1 and the batch is not empty). G's lower triangle is
  // updated by a blocked symmetric rank-k update that runs on every OpenMP thread.
  // INVALID_ARGUMENT if the widths or counts disagree or a class index is out of range; nothing
  // changes then.
  // With readout scales set, the rows are quantised first (see the top of this file); with a Gram
  // backend attached too and forgetting 1, they go into the backend's accumulator (int8 MACs, no
  // host D^2 work); with forgetting < 1 (not exact with integer sums) the accumulator is folded
  // in and the dequantised rows take the float64 path. If `counts` is not null it receives the
  // work: the backend's OpCounts for an accumulator absorb, else zero (the float64 path's work is
  // priced from the shapes by the caller, AbsorbCounts above). A backend error
  // (xrt) is returned as is; the statistics are then unchanged.
  // With a Gram backend the rows are staged and accumulated by the block (gram_block_rows), so
  // `counts` receives the work of the blocks this call completed (often none): the work of rows
  // still staged is reported by the FoldGram that accumulates them.
  absl::Status Absorb(const MatrixF& features, std::span<const int> classes,
                      fpga::OpCounts* counts = nullptr);

  // The absorb every caller with labels uses (the server's store, the update pipeline, recovery,
  // strata-train, the benchmarks and tests): maps labels[i], the label of row i, to its class (a
  // label not seen before becomes a new class, in the order first seen), then Absorb()s the rows.
  // Returns the labels that became new classes, in that order. INVALID_ARGUMENT if the row count
  // differs from labels.size() or the width from feature_size(); then nothing changes, no class
  // included. Absorb()'s errors otherwise (the new classes then stay, as zero columns of Q: exactly
  // the statistics of "no sample with that label yet").
  absl::StatusOr<std::vector<std::string>> AbsorbLabeled(const MatrixF& features,
                                                         std::span<const std::string> labels,
                                                         fpga::OpCounts* counts = nullptr);

  // Per-feature int8 scales of the readout features (D values, each > 0, finite; empty: float
  // features, the default). Scales are rounded to 16 significant bits so that s_j * h_q is exact
  // in float. INVALID_ARGUMENT on a wrong length or a bad value (then nothing changes). Changing
  // the scales after samples were absorbed is allowed: the statistics keep the rows as they were.
  absl::Status set_readout_scales(std::vector<float> scales);
  const std::vector<float>& readout_scales() const { return readout_scales_; }
  bool int8_readout() const { return !readout_scales_.empty(); }
  // Quantises feature rows with the readout scales: h_q (rows x D, row-major) and, if `dequantized`
  // is not null, h~ = s .* h_q. FAILED_PRECONDITION without scales; INVALID_ARGUMENT on a width.
  absl::Status QuantizeFeatures(const MatrixF& features, std::vector<int8_t>* quantized,
                                MatrixF* dequantized) const;

  // Absorbs int8-readout rows through `backend`'s GramInt8Accumulator (not owned; must outlive
  // this tier). FAILED_PRECONDITION without readout scales. Folds any rows of a previous backend.
  absl::Status AttachGramBackend(fpga::Backend* backend);
  fpga::Backend* gram_backend() const { return gram_backend_; }
  // Rows absorbed through the Gram backend (staged or in the accumulator) not yet folded into the
  // float64 statistics.
  uint64_t unfolded_gram_rows() const;
  // Rows staged for the accumulator's next block (a subset of unfolded_gram_rows()).
  uint64_t staged_gram_rows() const { return staged_classes_.size(); }
  // Hands the staged rows to the accumulator now (creating it if needed) instead of when their
  // block fills or at the next fold; adds the work to `counts`. The backend's errors (xrt) are
  // returned; then the rows stay staged.
  absl::Status AccumulateStaged(fpga::OpCounts& counts) const;
  // Accumulates the staged rows, then folds the accumulator's integer sums into G and Q now
  // (G += S G_int S, Q += S Q_int): in place and then zeroed when the sums live in host memory
  // (cpu), else from Read()'s copy into a fresh accumulator (emu, xrt). If `counts` is not null it
  // receives the fold's work (the sums read and zeroed, or the read-back; G's triangle and Q read
  // and written; the fold's fp64 MACs); the staged rows'
  // accumulation goes to `absorb_counts` if that is not null, else is added to `counts`. The
  // backend's errors (xrt) are returned; then nothing was folded.
  absl::Status FoldGram(fpga::OpCounts* counts = nullptr,
                        fpga::OpCounts* absorb_counts = nullptr) const;

  // Solves W = G^-1 Q by a fresh Cholesky factorisation; touches no cached state.
  // FAILED_PRECONDITION if there is no class yet; INTERNAL if G is not positive definite
  // (impossible with lambda > 0 unless the statistics hold NaN or Inf).
  absl::StatusOr<Readout> Solve() const;

  // Recomputes the readout by the path `mode` selects and keeps its factor for the next refresh
  // (if keep_factor). The result equals Solve()'s up to rounding. Errors as Solve(), plus
  // FAILED_PRECONDITION for kForceFactorUpdate when there is no up-to-date factor to update (no
  // refresh yet, keep_factor off, forgetting < 1 decayed G since, or too many rows were absorbed
  // since for the update to be worth keeping them). On error the kept factor is dropped (the next
  // refresh re-factors). last_refresh() then describes this refresh.
  absl::StatusOr<Readout> Refresh(RefreshMode mode = RefreshMode::kAuto);
  // The path and flop count Refresh(mode) would take now, without doing it (min_pivot is 0).
  // FAILED_PRECONDITION as Refresh() for kForceFactorUpdate.
  absl::StatusOr<RefreshReport> PlanRefresh(RefreshMode mode = RefreshMode::kAuto) const;
  // The report of the last successful Refresh() (default-constructed before the first).
  const RefreshReport& last_refresh() const { return last_refresh_; }
  // Rows absorbed since the kept factor was computed, waiting to be folded into it.
  int64_t pending_factor_rows() const { return pending_rows_; }

  int feature_size() const { return static_cast<int>(gram_.rows()); }
  int num_classes() const { return static_cast<int>(labels_.size()); }
  // Class columns allocated for Q (>= num_classes(); the spare ones are zero), and how many times
  // ClassIndexOrAdd re-allocated them (each time at least doubling the capacity): for tests and
  // the bench, which check that classes are added at amortised O(D).
  int class_capacity() const { return static_cast<int>(cross_.cols()); }
  int64_t class_reallocations() const { return class_reallocations_; }
  double lambda() const { return lambda_; }
  uint64_t samples_seen() const { return samples_seen_; }
  const std::vector<std::string>& labels() const { return labels_; }
  const UpperTierOptions& options() const { return options_; }

  // The forgetting factor alpha (the bundle stores it). set_forgetting takes effect from the next
  // Absorb; INVALID_ARGUMENT unless 0 < alpha <= 1 (then nothing changes).
  double forgetting() const { return options_.forgetting; }
  absl::Status set_forgetting(double alpha);

  // Lets go of the past once, when the stream drifted (update/update_policy.h, forgetting on
  // drift): folds any Gram rows in, zeroes Q's columns of `reset_classes` (every sample absorbed
  // so far then counts as "not this class": the classes stay, their past samples stop voting for
  // them), then decays the data part of the statistics by `decay`,
  //   G <- decay (G - lambda I) + lambda I,   Q <- decay Q,
  // so that each earlier sample weighs `decay` against 1 for a sample absorbed later. Unlike
  // set_forgetting (a decay at every absorb, which keeps absorbs off the Gram kernel) this is one
  // pass over G, once per drift. A decay < 1 drops the kept factor (the next refresh re-factors);
  // zeroed columns alone keep it (G is unchanged). `counts` (if not null) receives the work: the
  // fold's, plus for a decay d(d+1)/2 + d C fp64 MACs and G's triangle and Q read and written.
  // INVALID_ARGUMENT for a class index out of range or a decay outside (0, 1] (then nothing
  // changes); a Gram backend's error (then nothing changes either).
  absl::Status Forget(std::span<const int> reset_classes, double decay,
                      fpga::OpCounts* counts = nullptr);

  // The statistics, for the bundle and snapshots. G is symmetric and only its lower triangle is
  // kept up to date: read gram() through gram().triangularView<Eigen::Lower>() or
  // selfadjointView<Eigen::Lower>(); its strict upper triangle is unspecified. cross() is a copy
  // (D x num_classes(), row-major; O(D C)): Q is kept column-major with spare class columns, so
  // take it once per use, not once per element or column.
  // With an attached Gram backend both fold its unfolded rows in first (FoldGram); a backend
  // error then is logged and the statistics returned without those rows (call FoldGram() first
  // to see the error).
  const MatrixD& gram() const;
  MatrixD cross() const;
  // Rebuilds an upper tier from stored statistics (forgetting 1; call set_forgetting to restore a
  // stored one); INVALID_ARGUMENT if shapes disagree. No factor is kept: the first Refresh()
  // re-factors.
  static absl::StatusOr<UpperTier> FromStatistics(double lambda, MatrixD gram, MatrixD cross,
                                                  std::vector<std::string> labels,
                                                  uint64_t samples_seen);

 private:
  // Flop counts of the two paths for the current state.
  double RefactorFlops() const;
  double UpdateFlops(int64_t rows) const;
  // Drops the kept factor and the buffered rows; `why` becomes the factor-update blocker.
  void DropFactor(std::string why);
  // gram_ += S G_int S (lower triangle) and Q += S Q_int for the accumulator's integer sums: g is
  // D x D row-major; Q_int(i, k) is q[k * class_stride + i * feature_stride].
  void AddScaledSums(const int64_t* g, const int64_t* q, Eigen::Index class_stride,
                     Eigen::Index feature_stride) const;
  // The float64 absorb of rows already validated (and dequantised, for an int8 readout).
  void AbsorbFloat(const MatrixF& features, std::span<const int> classes);
  // Buffers rows for the factor-update path (or drops the factor when too many).
  void BufferPendingRows(const MatrixF& features);

  double lambda_;
  UpperTierOptions options_;
  // D x D, lambda I + sum h h^T, lower triangle; mutable: FoldGram adds the accumulator's sums.
  mutable MatrixD gram_;
  // Q, D x class_capacity(), column-major: column c < num_classes() is class c's sums (contiguous,
  // so a sample's update is one contiguous add); the spare columns past num_classes() are zero, so
  // a new class within the capacity costs nothing. Mutable: FoldGram adds the accumulator's sums.
  mutable Eigen::MatrixXd cross_;
  int64_t class_reallocations_ = 0;
  std::vector<std::string> labels_;
  absl::flat_hash_map<std::string, int> index_;
  uint64_t samples_seen_ = 0;

  // The factor-update path's state. factor_ is column-major, lower triangle valid (empty: none).
  Eigen::MatrixXd factor_;
  std::vector<float> pending_;  // rows absorbed since factor_ was computed, row after row
  int64_t pending_rows_ = 0;
  std::string factor_blocker_;  // why there is no factor to update (empty: there is one)
  int updates_since_refactor_ = 0;
  RefreshReport last_refresh_;

  // The int8 readout (empty scales: float features).
  std::vector<float> readout_scales_;
  fpga::Backend* gram_backend_ = nullptr;  // not owned
  // Created on the first int8 absorb; sums of rows not yet folded into gram_ / cross_.
  mutable std::unique_ptr<fpga::GramInt8Accumulator> accumulator_;
  // Quantised rows (row-major, D each) and their class indices waiting for the next block.
  mutable std::vector<int8_t> staged_rows_;
  mutable std::vector<int32_t> staged_classes_;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_UPPER_TIER_H_
