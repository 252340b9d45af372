#include "update/energy_meter.h"

#include <algorithm>

namespace strata::update {

absl::string_view EnergyPhaseName(EnergyPhase phase) {
  switch (phase) {
    case EnergyPhase::kLowerTierInference:
      return "lower_tier_inference";
    case EnergyPhase::kAbsorb:
      return "absorb";
    case EnergyPhase::kRefresh:
      return "refresh";
    case EnergyPhase::kReadoutInference:
      return "readout_inference";
  }
  return "unknown";
}

double RequestEnergy::total() const {
  double sum = 0;
  for (double phase : joules) sum += phase;
  return sum;
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

}  // namespace strata::update
