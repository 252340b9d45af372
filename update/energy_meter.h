// The energy meter: turns the work each phase of serving and learning did into joules, and keeps
// per-phase totals.
//
// Phases:
//   kLowerTierInference  the frozen lower tier's features (Predict, ExtractFeatures, and the
//                        features of every Update sample);
//   kAbsorb              adding samples to the upper tier's statistics G and Q;
//   kRefresh             re-solving the readout W = G^-1 Q (or a rank-k update of its factor).
//
// Work is described by fpga::OpCounts: the accelerator backends report theirs per call
// (fpga/backend.h); the CPU float paths have no kernel to report, so the *Counts functions below
// estimate them from the shapes (docs/update-policies.md lists the formulas). Joules come from
// fpga::Joules(counts, table) with the documented per-operation constants of fpga/energy.h.
//
// No gRPC here: the server and the benchmarks call this directly.
#ifndef STRATA_UPDATE_ENERGY_METER_H_
#define STRATA_UPDATE_ENERGY_METER_H_

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "fpga/backend.h"
#include "fpga/energy.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"

namespace strata::update {

enum class EnergyPhase { kLowerTierInference = 0, kAbsorb = 1, kRefresh = 2 };
inline constexpr int kNumEnergyPhases = 3;

// "lower_tier_inference", "absorb", "refresh": stable names for stats and CSV columns.
absl::string_view EnergyPhaseName(EnergyPhase phase);

// ---- Work models of the CPU float paths (pure functions of the shapes) ------------------------

// The lower tier in fp32 for `images` images: macs_per_image fp32 MACs each (the stages' matrix
// products: PCA convolution and expansion GEMM; model::LowerTier::MacsPerSample()). DRAM: images
// in (4 B/value), features out (4 B/feature), the parameters read once per call.
fpga::OpCounts LowerTierInferenceCounts(uint64_t macs_per_image, int input_size, int feature_size,
                                        int images, uint64_t parameter_bytes = 0);

// Bytes of the float lower tier's matrix-product parameters at 4 B per value: conv filters,
// expansion projection and bias, ELM encoder (the parameters its fp32 GEMMs stream).
uint64_t LowerTierWeightBytes(const model::LowerTier& lower);

// Rows per chunk in which both lower tiers (model::LowerTier and model::QuantizedLowerTier) stream
// a batch through their matrix products; each chunk reads every weight once.
inline constexpr int kLowerTierRowsPerChunk = 64;

// The float lower tier's work for `images` images: LowerTierInferenceCounts with its weights read
// once per chunk of kLowerTierRowsPerChunk images. The int8 lower tier's backend calls count their
// (int8) weights the same way, once per call, one call per layer and chunk: both paths count the
// same dataflow (docs/fpga.md, "Energy").
fpga::OpCounts FloatLowerTierCounts(const model::LowerTier& lower, int images);

// Absorbing `rows` samples into an upper tier with `d` features and `classes` classes in fp64:
// the symmetric rank-k update of G's lower triangle (rows * d * (d + 1) / 2 MACs) plus Q += H^T Y
// (rows * d * classes MACs: a dense GEMM's bound; the one-hot targets make most of them zeros).
// DRAM: H read once (4 B), G's lower triangle and Q read and written once (8 B each).
fpga::OpCounts AbsorbCounts(int d, int classes, int rows);

// The work of the readout's scores for `rows` feature rows of width `d` over `classes` classes, in
// fp32: rows * d * classes MACs, and the scores written (4 bytes each). The weights (d x classes) are
// assumed cache-resident and the features were counted as the lower tier's output, so the count is
// exactly proportional to `rows`. (Predict, and the Update pipeline's prequential predictions.)
fpga::OpCounts ReadoutCounts(int d, int classes, int rows);

// A full refresh in fp64: Cholesky of G (d^3 / 6 MACs) and the forward and backward triangular
// solves for Q's columns (2 * d^2 / 2 MACs per class). DRAM: G read, the factor written and read
// twice, Q read, W written.
fpga::OpCounts CholeskyRefreshCounts(int d, int classes);

// A refresh by a rank-`rows` update of an existing Cholesky factor (rows * d^2 MACs) plus the same
// two triangular solves. Cheaper than CholeskyRefreshCounts when rows < d / 6.
fpga::OpCounts RankUpdateRefreshCounts(int d, int classes, int rows);

// The work a refresh reported (model::UpperTier::last_refresh() or PlanRefresh()): its flops as
// fp64 MACs (2 flops per MAC) plus the DRAM traffic of the path it took.
fpga::OpCounts RefreshReportCounts(const model::RefreshReport& report, int d, int classes);

// The cheaper of the two refresh paths for `rows` samples absorbed since the last factorisation
// (a full Cholesky when there is no factor yet, rows < 0).
fpga::OpCounts CheapestRefreshCounts(int d, int classes, int rows);

// ---- The meter --------------------------------------------------------------------------------

// Joules and work of one request (or one Update message), by phase. A plain value: not
// thread-safe; one per request, passed to EnergyMeter::Charge.
struct RequestEnergy {
  std::array<double, kNumEnergyPhases> joules{};

  double total() const { return joules[0] + joules[1] + joules[2]; }
  double of(EnergyPhase phase) const { return joules[static_cast<int>(phase)]; }
};

// Cumulative totals of one phase.
struct PhaseEnergy {
  double joules = 0;
  uint64_t charges = 0;   // Charge / ChargeJoules calls
  fpga::OpCounts counts;  // the work charged through Charge (not ChargeJoules)
};

// Accumulates joules per phase. Thread-safe: every method may be called concurrently.
class EnergyMeter {
 public:
  // Converts counts with `table` (e.g. *fpga::EnergyTableFor("cpu")).
  explicit EnergyMeter(const fpga::EnergyTable& table) : table_(table) {}

  EnergyMeter(const EnergyMeter&) = delete;
  EnergyMeter& operator=(const EnergyMeter&) = delete;

  // The joules `counts` cost under this meter's table, without charging anything. For policies
  // that price a refresh before deciding on it.
  double Estimate(const fpga::OpCounts& counts) const { return fpga::Joules(counts, table_); }

  // Charges the work to `phase` and, if `request` is not null, to the request too. Returns the
  // joules charged.
  double Charge(EnergyPhase phase, const fpga::OpCounts& counts, RequestEnergy* request = nullptr);

  // The same, priced with `table` instead of the meter's: for work done on another device than
  // the one the meter's table describes (e.g. the int8 lower tier on an FPGA backend, priced with
  // that backend's table while the host's upper-tier work uses the meter's).
  double Charge(EnergyPhase phase, const fpga::OpCounts& counts, const fpga::EnergyTable& table,
                RequestEnergy* request = nullptr);

  // Charges joules measured or computed elsewhere (e.g. a backend with its own table).
  // `joules` must be >= 0; negative values are clamped to 0.
  void ChargeJoules(EnergyPhase phase, double joules, RequestEnergy* request = nullptr);

  // A consistent copy of the totals of every phase.
  std::array<PhaseEnergy, kNumEnergyPhases> Totals() const;
  // The cumulative joules of one phase.
  double Joules(EnergyPhase phase) const;
  // Absorb plus refresh: the energy spent on learning.
  double UpdateJoules() const;

  const fpga::EnergyTable& table() const { return table_; }

 private:
  const fpga::EnergyTable table_;
  mutable absl::Mutex mutex_;
  std::array<PhaseEnergy, kNumEnergyPhases> totals_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_ENERGY_METER_H_
