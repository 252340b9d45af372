// The energy meter: turns the work each phase of serving and learning did into joules, and keeps
// per-phase totals.
//
// Phases:
//   kLowerTierInference  the frozen lower tier's features (Predict, ExtractFeatures, and the
//                        features of every Update sample);
//   kAbsorb              adding samples to the upper tier's statistics G and Q;
//   kRefresh             re-solving the readout W = G^-1 Q (or a rank-k update of its factor);
//   kReadoutInference    the readout's scores (Predict, and the Update pipeline's prequential
//                        predictions).
//
// Work is described by fpga::OpCounts, reported by the code that does it: the accelerator backends
// per call (fpga/backend.h), and the CPU float paths by work models next to them, pure functions
// of the shapes (model::LowerTier::Counts, model::Readout::Counts, model::AbsorbCounts,
// model::RefreshReportCounts, ...; docs/update-policies.md lists the formulas). Joules come from
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

namespace strata::update {

enum class EnergyPhase {
  kLowerTierInference = 0,
  kAbsorb = 1,
  kRefresh = 2,
  kReadoutInference = 3,
};
inline constexpr int kNumEnergyPhases = 4;

// "lower_tier_inference", "absorb", "refresh", "readout_inference": stable names for stats and CSV
// columns.
absl::string_view EnergyPhaseName(EnergyPhase phase);

// ---- The meter --------------------------------------------------------------------------------

// Joules and work of one request (or one Update message), by phase. A plain value: not
// thread-safe; one per request, passed to EnergyMeter::Charge.
struct RequestEnergy {
  std::array<double, kNumEnergyPhases> joules{};

  double total() const;
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
  // Converts counts with `table` (e.g. fpga::HostEnergyTable()).
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
