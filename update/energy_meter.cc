#include "update/energy_meter.h"

#include <algorithm>

#include "model/stages.h"

namespace strata::update {
namespace {

uint64_t U(double x) { return x <= 0 ? 0 : static_cast<uint64_t>(x); }

// Forward and backward substitution for every class column, and the traffic of G's factor.
fpga::OpCounts TriangularSolveCounts(int d, int classes) {
  const double dd = static_cast<double>(d), c = static_cast<double>(classes);
  fpga::OpCounts counts;
  counts.fp64_macs = U(dd * dd * c);  // 2 solves x d^2 / 2 MACs per column
  // The factor's lower triangle read once per solve, Q read, W written (as fp32).
  counts.dram_bytes = U(2 * 8 * dd * (dd + 1) / 2 + 8 * dd * c + 4 * dd * c);
  return counts;
}

}  // namespace

absl::string_view EnergyPhaseName(EnergyPhase phase) {
  switch (phase) {
    case EnergyPhase::kLowerTierInference:
      return "lower_tier_inference";
    case EnergyPhase::kAbsorb:
      return "absorb";
    case EnergyPhase::kRefresh:
      return "refresh";
  }
  return "unknown";
}

fpga::OpCounts LowerTierInferenceCounts(uint64_t macs_per_image, int input_size, int feature_size,
                                        int images, uint64_t parameter_bytes) {
  fpga::OpCounts counts;
  counts.fp32_macs = macs_per_image * static_cast<uint64_t>(std::max(images, 0));
  counts.dram_bytes = U(4.0 * images * (static_cast<double>(input_size) + feature_size)) +
                      parameter_bytes;
  return counts;
}

uint64_t LowerTierWeightBytes(const model::LowerTier& lower) {
  uint64_t values = 0;
  for (const auto& stage : lower.stages()) {
    if (const auto* conv = dynamic_cast<const model::ConvStage*>(stage.get())) {
      values += static_cast<uint64_t>(conv->filters().size());
    } else if (const auto* expand = dynamic_cast<const model::ExpandStage*>(stage.get())) {
      values += static_cast<uint64_t>(expand->projection().size() + expand->bias().size());
    } else if (const auto* elm = dynamic_cast<const model::ElmAutoencoderStage*>(stage.get())) {
      values += static_cast<uint64_t>(elm->encoder().size());
    }
  }
  return 4 * values;
}

fpga::OpCounts FloatLowerTierCounts(const model::LowerTier& lower, int images) {
  const uint64_t chunks =
      (static_cast<uint64_t>(std::max(images, 0)) + kLowerTierRowsPerChunk - 1) /
      kLowerTierRowsPerChunk;
  return LowerTierInferenceCounts(lower.MacsPerSample(), lower.input_size(), lower.feature_size(),
                                  images, chunks * LowerTierWeightBytes(lower));
}

fpga::OpCounts AbsorbCounts(int d, int classes, int rows) {
  const double dd = d, c = classes, k = rows;
  fpga::OpCounts counts;
  counts.fp64_macs = U(k * dd * (dd + 1) / 2 + k * dd * c);
  counts.dram_bytes = U(4 * k * dd + 2 * 8 * dd * (dd + 1) / 2 + 2 * 8 * dd * c);
  return counts;
}

fpga::OpCounts CholeskyRefreshCounts(int d, int classes) {
  const double dd = d;
  fpga::OpCounts counts = TriangularSolveCounts(d, classes);
  counts.fp64_macs += U(dd * dd * dd / 6);
  // G's lower triangle read, the factor written.
  counts.dram_bytes += U(2 * 8 * dd * (dd + 1) / 2);
  return counts;
}

fpga::OpCounts RankUpdateRefreshCounts(int d, int classes, int rows) {
  const double dd = d, k = rows;
  fpga::OpCounts counts = TriangularSolveCounts(d, classes);
  counts.fp64_macs += U(k * dd * dd);
  // The factor read and written once per block of updates; H read.
  counts.dram_bytes += U(2 * 8 * dd * (dd + 1) / 2 + 4 * k * dd);
  return counts;
}

fpga::OpCounts RefreshReportCounts(const model::RefreshReport& report, int d, int classes) {
  const double dd = d;
  fpga::OpCounts counts = TriangularSolveCounts(d, classes);
  counts.fp64_macs = U(report.flops() / 2);
  if (report.path == model::RefreshPath::kRefactor) {
    counts.dram_bytes += U(2 * 8 * dd * (dd + 1) / 2);
  } else {
    counts.dram_bytes += U(2 * 8 * dd * (dd + 1) / 2 + 4.0 * report.rows_folded * dd);
  }
  return counts;
}

fpga::OpCounts CheapestRefreshCounts(int d, int classes, int rows) {
  const fpga::OpCounts full = CholeskyRefreshCounts(d, classes);
  if (rows < 0) return full;
  const fpga::OpCounts rank = RankUpdateRefreshCounts(d, classes, rows);
  return rank.fp64_macs < full.fp64_macs ? rank : full;
}

double EnergyMeter::Charge(EnergyPhase phase, const fpga::OpCounts& counts,
                           RequestEnergy* request) {
  return Charge(phase, counts, table_, request);
}

double EnergyMeter::Charge(EnergyPhase phase, const fpga::OpCounts& counts,
                           const fpga::EnergyTable& table, RequestEnergy* request) {
  const double joules = fpga::Joules(counts, table);
  const int i = static_cast<int>(phase);
  {
    absl::MutexLock lock(&mutex_);
    totals_[i].joules += joules;
    totals_[i].charges += 1;
    totals_[i].counts += counts;
  }
  if (request != nullptr) request->joules[i] += joules;
  return joules;
}

void EnergyMeter::ChargeJoules(EnergyPhase phase, double joules, RequestEnergy* request) {
  joules = std::max(joules, 0.0);
  const int i = static_cast<int>(phase);
  {
    absl::MutexLock lock(&mutex_);
    totals_[i].joules += joules;
    totals_[i].charges += 1;
  }
  if (request != nullptr) request->joules[i] += joules;
}

std::array<PhaseEnergy, kNumEnergyPhases> EnergyMeter::Totals() const {
  absl::MutexLock lock(&mutex_);
  return totals_;
}

double EnergyMeter::Joules(EnergyPhase phase) const {
  absl::MutexLock lock(&mutex_);
  return totals_[static_cast<int>(phase)].joules;
}

double EnergyMeter::UpdateJoules() const {
  absl::MutexLock lock(&mutex_);
  return totals_[static_cast<int>(EnergyPhase::kAbsorb)].joules +
         totals_[static_cast<int>(EnergyPhase::kRefresh)].joules;
}

fpga::OpCounts ReadoutCounts(int d, int classes, int rows) {
  fpga::OpCounts counts;
  counts.fp32_macs = static_cast<uint64_t>(std::max(rows, 0)) * static_cast<uint64_t>(d) *
                     static_cast<uint64_t>(classes);
  counts.dram_bytes = 4 * static_cast<uint64_t>(std::max(rows, 0)) * static_cast<uint64_t>(classes);
  return counts;
}

}  // namespace strata::update
