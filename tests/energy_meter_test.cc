// EnergyMeter: the work models of the CPU float paths it prices (model/upper_tier.h,
// model/lower_tier.h), per-phase and per-request totals, and concurrent charging.
#include "update/energy_meter.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"

namespace strata::update {
namespace {

fpga::EnergyTable CpuTable() { return *fpga::EnergyTableFor("cpu"); }

using model::AbsorbCounts;
using model::CheapestRefreshCounts;
using model::CholeskyRefreshCounts;
using model::LowerTierInferenceCounts;
using model::RankUpdateRefreshCounts;
using model::RefreshReportCounts;

TEST(EnergyModelTest, AbsorbIsTheSymmetricRankKUpdatePlusQ) {
  const fpga::OpCounts c = AbsorbCounts(/*d=*/1000, /*classes=*/10, /*rows=*/100);
  EXPECT_EQ(c.fp64_macs, 100ull * 1000 * 1001 / 2 + 100ull * 1000 * 10);
  EXPECT_EQ(c.fp32_macs, 0u);
  EXPECT_EQ(c.int8_macs, 0u);
  EXPECT_GT(c.dram_bytes, 16ull * 1000 * 1001 / 2);  // G's triangle read and written
}

TEST(EnergyModelTest, RefreshPathsScaleAsDocumented) {
  const int d = 1200, classes = 10;
  const fpga::OpCounts full = CholeskyRefreshCounts(d, classes);
  // D^3 / 6 for the factor, D^2 C for the two triangular solves.
  EXPECT_EQ(full.fp64_macs, 1200ull * 1200 * 1200 / 6 + 1200ull * 1200 * 10);
  const fpga::OpCounts rank = RankUpdateRefreshCounts(d, classes, 50);
  EXPECT_EQ(rank.fp64_macs, 50ull * 1200 * 1200 + 1200ull * 1200 * 10);
  // A factor update is cheaper only for fewer than d / 6 rows.
  EXPECT_EQ(CheapestRefreshCounts(d, classes, 50), rank);
  EXPECT_EQ(CheapestRefreshCounts(d, classes, 400), full);
  EXPECT_EQ(CheapestRefreshCounts(d, classes, -1), full);
}

TEST(EnergyModelTest, RefreshReportFlopsBecomeMacs) {
  model::RefreshReport report;
  report.path = model::RefreshPath::kRefactor;
  report.factor_flops = 2e9;
  report.solve_flops = 2e7;
  const fpga::OpCounts c = RefreshReportCounts(report, 1000, 10);
  EXPECT_EQ(c.fp64_macs, static_cast<uint64_t>(1.01e9));
}

TEST(EnergyModelTest, LowerTierInferenceIsFp32) {
  const fpga::OpCounts c = LowerTierInferenceCounts(/*macs_per_image=*/2000000, 784, 1808, 10);
  EXPECT_EQ(c.fp32_macs, 20000000u);
  EXPECT_EQ(c.fp64_macs, 0u);
  EXPECT_EQ(c.dram_bytes, 4u * 10 * (784 + 1808));
}

TEST(EnergyMeterTest, ChargesPhasesAndRequestsSeparately) {
  EnergyMeter meter(CpuTable());
  fpga::OpCounts fp64;
  fp64.fp64_macs = 1000000;  // 1e6 x 18.4 pJ = 18.4 uJ
  fpga::OpCounts fp32;
  fp32.fp32_macs = 1000000;  // 4.6 uJ

  RequestEnergy request;
  EXPECT_NEAR(meter.Charge(EnergyPhase::kAbsorb, fp64, &request), 18.4e-6, 1e-12);
  meter.Charge(EnergyPhase::kLowerTierInference, fp32, &request);
  meter.Charge(EnergyPhase::kRefresh, fp64);  // not part of this request
  meter.ChargeJoules(EnergyPhase::kRefresh, 1e-3, &request);
  meter.ChargeJoules(EnergyPhase::kRefresh, -5);  // clamped: never reduces a total

  EXPECT_NEAR(request.of(EnergyPhase::kAbsorb), 18.4e-6, 1e-12);
  EXPECT_NEAR(request.of(EnergyPhase::kLowerTierInference), 4.6e-6, 1e-12);
  EXPECT_NEAR(request.of(EnergyPhase::kRefresh), 1e-3, 1e-12);
  EXPECT_NEAR(request.total(), 18.4e-6 + 4.6e-6 + 1e-3, 1e-12);

  EXPECT_NEAR(meter.Joules(EnergyPhase::kAbsorb), 18.4e-6, 1e-12);
  EXPECT_NEAR(meter.Joules(EnergyPhase::kRefresh), 18.4e-6 + 1e-3, 1e-12);
  EXPECT_NEAR(meter.UpdateJoules(), 2 * 18.4e-6 + 1e-3, 1e-12);
  const auto totals = meter.Totals();
  EXPECT_EQ(totals[static_cast<int>(EnergyPhase::kRefresh)].charges, 3u);
  EXPECT_EQ(totals[static_cast<int>(EnergyPhase::kRefresh)].counts.fp64_macs, 1000000u);
  EXPECT_EQ(meter.Estimate(fp64), fpga::Joules(fp64, CpuTable()));
  EXPECT_EQ(EnergyPhaseName(EnergyPhase::kLowerTierInference), "lower_tier_inference");
  EXPECT_EQ(EnergyPhaseName(EnergyPhase::kReadoutInference), "readout_inference");
}

TEST(EnergyMeterTest, ReadoutInferenceIsItsOwnPhaseOutsideUpdateJoules) {
  EnergyMeter meter(CpuTable());
  model::Readout readout;
  readout.weights = model::MatrixF::Zero(100, 10);
  const fpga::OpCounts scores = readout.Counts(8);
  EXPECT_EQ(scores.fp32_macs, 8u * 100 * 10);
  EXPECT_EQ(scores.dram_bytes, 4u * 8 * 10);
  EXPECT_EQ(readout.Counts(8), readout.Counts(1) + readout.Counts(7));  // proportional to rows
  RequestEnergy request;
  const double joules = meter.Charge(EnergyPhase::kReadoutInference, scores, &request);
  EXPECT_EQ(joules, meter.Estimate(scores));
  EXPECT_EQ(request.of(EnergyPhase::kReadoutInference), joules);
  EXPECT_EQ(request.total(), joules);
  EXPECT_EQ(meter.Joules(EnergyPhase::kReadoutInference), joules);
  EXPECT_EQ(meter.UpdateJoules(), 0);
}

TEST(EnergyMeterTest, ConcurrentChargesAreAllCounted) {
  EnergyMeter meter(CpuTable());
  fpga::OpCounts one;
  one.fp64_macs = 1;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&meter, one] {
      for (int i = 0; i < 10000; ++i) meter.Charge(EnergyPhase::kAbsorb, one);
    });
  }
  for (auto& t : threads) t.join();
  const auto totals = meter.Totals();
  EXPECT_EQ(totals[static_cast<int>(EnergyPhase::kAbsorb)].charges, 40000u);
  EXPECT_EQ(totals[static_cast<int>(EnergyPhase::kAbsorb)].counts.fp64_macs, 40000u);
}

}  // namespace
}  // namespace strata::update
