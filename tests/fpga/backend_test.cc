// Every backend against the references and against each other (ggml's test-backend-ops idea):
// cpu (oneDNN, the hand-written VNNI kernel, portable) and emu must agree bit for bit; OpCounts
// follow the shapes; the xrt backend fails cleanly without a card and "auto" falls back to emu.
#include "fpga/backend.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "fpga/dataflow.h"
#include "fpga/energy.h"
#include "fpga/registry.h"
#include "gtest/gtest.h"
#include "reference.h"

namespace strata::fpga {
namespace {

struct Named {
  std::string label;
  std::unique_ptr<Backend> backend;
};

std::vector<Named> AllCpuSideBackends() {
  std::vector<Named> all;
  BackendOptions portable;
  portable.cpu_portable = true;
  BackendOptions one_thread;
  one_thread.cpu_threads = 1;
  all.push_back({"cpu", *CreateBackend("cpu")});
  all.push_back({"cpu-portable", *CreateBackend("cpu", portable)});
  all.push_back({"cpu-1-thread", *CreateBackend("cpu", one_thread)});
  BackendOptions own_kernel;  // the hand-written VNNI kernel instead of oneDNN's
  own_kernel.cpu_onednn = false;
  all.push_back({"cpu-own-kernel", *CreateBackend("cpu", own_kernel)});
  all.push_back({"emu", *CreateBackend("emu")});
  return all;
}

DenseInt8Spec SpecFrom(const testing::DenseCase& c) {
  DenseInt8Spec spec;
  spec.in_features = c.in;
  spec.out_features = c.out;
  spec.weights = c.w;
  spec.bias = c.bias;
  for (int o = 0; o < c.out; ++o) spec.scales.push_back({c.multiplier[o], c.shift[o]});
  spec.relu = c.relu;
  spec.raw_output = c.raw;
  return spec;
}

absl::StatusOr<std::vector<int32_t>> Forward(Backend& backend, const testing::DenseCase& c,
                                             OpCounts* counts = nullptr) {
  absl::StatusOr<std::unique_ptr<DenseInt8Layer>> layer = backend.LoadDenseInt8(SpecFrom(c));
  if (!layer.ok()) return layer.status();
  std::vector<int8_t> y8(c.raw ? 0 : static_cast<size_t>(c.batch) * c.out);
  std::vector<int32_t> y32(c.raw ? static_cast<size_t>(c.batch) * c.out : 0);
  absl::StatusOr<OpCounts> done = (*layer)->Forward(c.x, c.batch, y8, y32);
  if (!done.ok()) return done.status();
  if (counts != nullptr) *counts = *done;
  if (c.raw) return y32;
  return std::vector<int32_t>(y8.begin(), y8.end());
}

TEST(DenseInt8Test, EveryBackendMatchesTheReference) {
  std::mt19937 rng(11);
  struct Shape {
    int batch, in, out;
  };
  const std::vector<Shape> shapes = {{1, 1, 1},  {1, 25, 24},   {9, 300, 33},   {4, 4, 16},
                                     {5, 3, 17}, {33, 257, 65}, {2, 1000, 130}, {70, 25, 24}};
  for (Named& named : AllCpuSideBackends()) {
    for (const Shape& s : shapes) {
      for (int mode = 0; mode < 4; ++mode) {
        testing::DenseCase c = testing::RandomDenseCase(s.batch, s.in, s.out, rng);
        c.relu = mode & 1;
        c.raw = mode & 2;
        absl::StatusOr<std::vector<int32_t>> y = Forward(*named.backend, c);
        ASSERT_TRUE(y.ok()) << y.status();
        ASSERT_EQ(*y, testing::ReferenceDense(c))
            << named.label << " batch=" << s.batch << " in=" << s.in << " out=" << s.out
            << " mode=" << mode;
      }
    }
  }
}

TEST(DenseInt8Test, CpuAndEmuAgreeBitForBitOnLargeRandomLayers) {
  std::mt19937 rng(12);
  std::vector<Named> all = AllCpuSideBackends();
  for (int trial = 0; trial < 6; ++trial) {
    std::uniform_int_distribution<int> batch(1, 40), in(1, 700), out(1, 150);
    testing::DenseCase c = testing::RandomDenseCase(batch(rng), in(rng), out(rng), rng);
    c.relu = trial % 2;
    c.raw = trial % 3 == 0;
    absl::StatusOr<std::vector<int32_t>> expected = Forward(*all.back().backend, c);  // emu
    ASSERT_TRUE(expected.ok());
    for (size_t b = 0; b + 1 < all.size(); ++b) {
      EXPECT_EQ(*Forward(*all[b].backend, c), *expected) << all[b].label << " trial " << trial;
    }
  }
}

TEST(DenseInt8Test, RejectsBadSpecsAndSpans) {
  std::unique_ptr<Backend> cpu = *CreateBackend("cpu");
  DenseInt8Spec spec;
  spec.in_features = 3;
  spec.out_features = 2;
  spec.weights.assign(5, 1);
  EXPECT_EQ(cpu->LoadDenseInt8(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.weights.assign(6, 1);
  EXPECT_EQ(cpu->LoadDenseInt8(spec).status().code(), absl::StatusCode::kInvalidArgument)
      << "missing scales";
  spec.scales.assign(2, {1 << 30, 40});
  EXPECT_EQ(cpu->LoadDenseInt8(spec).status().code(), absl::StatusCode::kInvalidArgument)
      << "shift out of range";
  spec.scales.assign(2, {1 << 30, -3});
  spec.bias = {(1 << 30) + 1, 0};
  EXPECT_EQ(cpu->LoadDenseInt8(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.bias.clear();
  std::unique_ptr<DenseInt8Layer> layer = *cpu->LoadDenseInt8(spec);
  std::vector<int8_t> x(6, 1), y(3, 7);
  EXPECT_EQ(layer->Forward(x, 2, y, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(y, std::vector<int8_t>(3, 7)) << "nothing written on error";
  EXPECT_EQ(layer->Forward(x, 0, y, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DenseInt8Test, OpCountsFollowTheShapes) {
  std::mt19937 rng(13);
  testing::DenseCase c = testing::RandomDenseCase(9, 300, 33, rng);
  OpCounts cpu_counts, emu_counts;
  ASSERT_TRUE(Forward(**CreateBackend("cpu"), c, &cpu_counts).ok());
  ASSERT_TRUE(Forward(**CreateBackend("emu"), c, &emu_counts).ok());
  EXPECT_EQ(cpu_counts.int8_macs, 9u * 300 * 33);
  // x + w + (bias, multiplier, shift) + y
  EXPECT_EQ(cpu_counts.dram_bytes, 9u * 300 + 33u * 300 + 33u * 12 + 9u * 33);
  EXPECT_EQ(cpu_counts.host_to_device_bytes, 0u);
  // Kernel: 2 batch tiles (8 rows), 2 output tiles (32): x read twice, w twice, channel
  // parameters twice, y once; x in and y out over PCIe, both also through card DRAM.
  EXPECT_EQ(emu_counts.int8_macs, 9u * 300 * 33);
  EXPECT_EQ(emu_counts.host_to_device_bytes, 2700u);
  EXPECT_EQ(emu_counts.device_to_host_bytes, 297u);
  EXPECT_EQ(emu_counts.dram_bytes, 5400u + 19800 + 792 + 297 + 2700 + 297);
  c.raw = true;
  ASSERT_TRUE(Forward(**CreateBackend("cpu"), c, &cpu_counts).ok());
  EXPECT_EQ(cpu_counts.dram_bytes, 9u * 300 + 33u * 300 + 33u * 4 + 9u * 33 * 4);
}

// ---- Gram ----------------------------------------------------------------------------------

struct GramResult {
  std::vector<int64_t> g, q;
  friend bool operator==(const GramResult&, const GramResult&) = default;
};

GramResult ReadAll(const GramInt8Accumulator& accumulator) {
  GramResult r;
  EXPECT_TRUE(accumulator.Read(&r.g, &r.q).ok());
  return r;
}

TEST(GramInt8Test, EveryBackendMatchesTheReference) {
  std::mt19937 rng(21);
  for (Named& named : AllCpuSideBackends()) {
    for (int d : {1, 5, 63, 64, 65, 150, 300}) {  // 300: more than one cpu panel of 256 rows
      for (int rows : {0, 1, 3, 70}) {
        const int classes = 4;
        const std::vector<int8_t> h = testing::RandomBytes(static_cast<size_t>(rows) * d, rng);
        const std::vector<int32_t> y = testing::RandomClasses(rows, classes, rng);
        std::unique_ptr<GramInt8Accumulator> acc = *named.backend->CreateGramInt8(d, classes);
        ASSERT_TRUE(acc->Accumulate(h, y).ok());
        GramResult expected{std::vector<int64_t>(static_cast<size_t>(d) * d, 0),
                            std::vector<int64_t>(static_cast<size_t>(d) * classes, 0)};
        testing::ReferenceGram(h, y, d, classes, expected.g, expected.q);
        ASSERT_EQ(ReadAll(*acc), expected) << named.label << " d=" << d << " rows=" << rows;
        EXPECT_EQ(acc->rows(), static_cast<uint64_t>(rows));
      }
    }
  }
}

TEST(GramInt8Test, PartitionOfRowsEqualsAllRowsOnEveryBackend) {
  std::mt19937 rng(22);
  const int d = 131, classes = 7, rows = 200;
  const std::vector<int8_t> h = testing::RandomBytes(static_cast<size_t>(rows) * d, rng);
  const std::vector<int32_t> y = testing::RandomClasses(rows, classes, rng);
  std::vector<GramResult> results;
  for (Named& named : AllCpuSideBackends()) {
    std::unique_ptr<GramInt8Accumulator> whole = *named.backend->CreateGramInt8(d, classes);
    ASSERT_TRUE(whole->Accumulate(h, y).ok());
    std::unique_ptr<GramInt8Accumulator> parts = *named.backend->CreateGramInt8(d, classes);
    const std::vector<int> cuts = {0, 1, 2, 67, 130, 199, 200};
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      const int n = cuts[k + 1] - cuts[k];
      ASSERT_TRUE(
          parts
              ->Accumulate(std::span<const int8_t>(h).subspan(static_cast<size_t>(cuts[k]) * d,
                                                              static_cast<size_t>(n) * d),
                           std::span<const int32_t>(y).subspan(cuts[k], n))
              .ok());
    }
    const GramResult all = ReadAll(*whole);
    EXPECT_EQ(ReadAll(*parts), all) << named.label;
    results.push_back(all);
  }
  for (size_t b = 1; b < results.size(); ++b) EXPECT_EQ(results[b], results[0]) << b;
}

TEST(GramInt8Test, GrowClassesKeepsStatisticsAndRejectsBadRows) {
  std::mt19937 rng(23);
  for (Named& named : AllCpuSideBackends()) {
    const int d = 9;
    std::unique_ptr<GramInt8Accumulator> acc = *named.backend->CreateGramInt8(d, 2);
    const std::vector<int8_t> h = testing::RandomBytes(4 * d, rng);
    ASSERT_TRUE(acc->Accumulate(h, std::vector<int32_t>{0, 1, -1, 1}).ok());
    const GramResult before = ReadAll(*acc);
    // Bad class: nothing added.
    EXPECT_EQ(acc->Accumulate(h, std::vector<int32_t>{0, 2, 0, 0}).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(
        acc->Accumulate(std::span<const int8_t>(h).first(d * 3), std::vector<int32_t>{0, 0, 0, 0})
            .status()
            .code(),
        absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ReadAll(*acc), before) << named.label;
    ASSERT_TRUE(acc->GrowClasses(5).ok());
    EXPECT_EQ(acc->num_classes(), 5);
    ASSERT_TRUE(acc->Accumulate(h, std::vector<int32_t>{4, 3, 0, -1}).ok());
    GramResult expected{std::vector<int64_t>(d * d, 0), std::vector<int64_t>(d * 5, 0)};
    testing::ReferenceGram(h, {0, 1, -1, 1}, d, 5, expected.g, expected.q);
    testing::ReferenceGram(h, {4, 3, 0, -1}, d, 5, expected.g, expected.q);
    EXPECT_EQ(ReadAll(*acc), expected) << named.label;
    EXPECT_EQ(acc->GrowClasses(4).code(), absl::StatusCode::kInvalidArgument);
  }
}

// A stream of new labels grows Q one class at a time. The capacity must grow geometrically (a
// re-allocation copies d x capacity sums, so growing by one column each time cost O(d C) per class,
// O(d C^2) for the stream), and the sums must stay exact across every re-allocation.
TEST(GramInt8Test, ClassesAddedOneAtATimeGrowTheCapacityGeometricallyAndStayExact) {
  std::mt19937 rng(25);
  const int d = 37, classes = 300;
  for (Named& named : AllCpuSideBackends()) {
    std::unique_ptr<GramInt8Accumulator> acc = *named.backend->CreateGramInt8(d, 0);
    EXPECT_EQ(acc->class_capacity(), 0) << named.label;
    GramResult expected{std::vector<int64_t>(static_cast<size_t>(d) * d, 0), {}};
    std::vector<int8_t> all_h;
    std::vector<int32_t> all_y;
    int reallocations = 0;
    for (int c = 0; c < classes; ++c) {
      const int before = acc->class_capacity();
      ASSERT_TRUE(acc->GrowClasses(c + 1).ok());
      ASSERT_EQ(acc->num_classes(), c + 1);
      ASSERT_GE(acc->class_capacity(), c + 1) << named.label;
      if (acc->class_capacity() != before) {
        ++reallocations;
        EXPECT_GE(acc->class_capacity(), 2 * before) << named.label << " at class " << c;
      }
      // A row of the new class and one of an earlier class, as an Update stream would send them.
      const std::vector<int8_t> h = testing::RandomBytes(2 * d, rng);
      const std::vector<int32_t> y = {c, static_cast<int32_t>(rng() % (c + 1))};
      ASSERT_TRUE(acc->Accumulate(h, y).ok());
      all_h.insert(all_h.end(), h.begin(), h.end());
      all_y.insert(all_y.end(), y.begin(), y.end());
    }
    // 0 -> 16 -> 32 -> ... -> 512: 6 re-allocations for 300 classes (one per class before).
    EXPECT_LE(reallocations, 6) << named.label;
    expected.q.assign(static_cast<size_t>(d) * classes, 0);
    testing::ReferenceGram(all_h, all_y, d, classes, expected.g, expected.q);
    EXPECT_EQ(ReadAll(*acc), expected) << named.label;
  }
}

TEST(GramInt8Test, OpCountsFollowTheShapes) {
  std::mt19937 rng(24);
  const int d = 70, classes = 3;
  const std::vector<int8_t> h = testing::RandomBytes(10 * d, rng);
  const std::vector<int32_t> y = {0, 1, 2, -1, 0, 1, -1, 2, 2, 0};  // 8 labelled
  std::unique_ptr<GramInt8Accumulator> cpu = *(*CreateBackend("cpu"))->CreateGramInt8(d, classes);
  std::unique_ptr<GramInt8Accumulator> emu = *(*CreateBackend("emu"))->CreateGramInt8(d, classes);
  const OpCounts c = *cpu->Accumulate(h, y), e = *emu->Accumulate(h, y);
  const uint64_t macs = 10u * 70 * 71 / 2 + 8u * 70;
  EXPECT_EQ(c.int8_macs, macs);
  EXPECT_EQ(c.dram_bytes, 700u + 40 + 70u * 71 / 2 * 16 + 70u * 3 * 16);
  EXPECT_EQ(e.int8_macs, macs);
  // Row tiles of 64 and 6 columns: block pairs (0,0), (1,0), (1,1) read 128 + 70 + 12 bytes per
  // row; G's lower triangle read + written once; classes read once per row tile; each labelled
  // row's slices once; Q read + written once; h and classes over PCIe (and into card DRAM).
  EXPECT_EQ(e.dram_bytes, 2100u + 39760 + 80 + 560 + 3360 + 740);
  EXPECT_EQ(e.host_to_device_bytes, 740u);
  EXPECT_EQ(e.device_to_host_bytes, 0u);
  std::vector<int64_t> g, q;
  EXPECT_EQ(emu->Read(&g, &q)->device_to_host_bytes, 70u * 70 * 8 + 70u * 3 * 8);
}

// ---- energy --------------------------------------------------------------------------------

TEST(EnergyTest, JoulesUseTheDocumentedConstants) {
  OpCounts counts;
  counts.int8_macs = 1'000'000;
  counts.fp32_macs = 1000;
  counts.dram_bytes = 8000;
  counts.host_to_device_bytes = 100;
  const EnergyTable cpu = *EnergyTableFor("cpu");
  EXPECT_DOUBLE_EQ(cpu.int8_mac_pj, 0.3);
  EXPECT_DOUBLE_EQ(cpu.fp32_mac_pj, 4.6);
  EXPECT_DOUBLE_EQ(cpu.dram_pj_per_byte, 250);
  EXPECT_NEAR(Joules(counts, cpu), (1e6 * 0.3 + 1000 * 4.6 + 8000 * 250) * 1e-12, 1e-18);
  const EnergyTable card = *EnergyTableFor("xrt");
  EXPECT_DOUBLE_EQ(card.int8_mac_pj, 1.7);
  EXPECT_NEAR(Joules(counts, card),
              (1e6 * 1.7 + 1000 * 4.6 + 8000 * 31.2 + 100 * (48 + 250)) * 1e-12, 1e-18);
  EXPECT_EQ(EnergyTableFor("emu")->int8_mac_pj, card.int8_mac_pj);
  EXPECT_FALSE(EnergyTableFor("gpu").ok());
}

// ---- registry, xrt without a card -----------------------------------------------------------

constexpr char kNoCard[] =
    "xrt backend: no FPGA card found (xrt::system::enumerate_devices() == 0); pick another "
    "device with --device=emu or --device=cpu";

TEST(RegistryTest, XrtWithoutACardFailsWithTheExactMessage) {
  absl::StatusOr<std::unique_ptr<Backend>> xrt = CreateBackend("xrt");
  ASSERT_FALSE(xrt.ok());
  EXPECT_EQ(xrt.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(xrt.status().message(), kNoCard);
}

TEST(RegistryTest, XrtWithAMissingXclbinNamesIt) {
  BackendOptions options;
  options.xclbin_path = "/nonexistent/strata.xclbin";
  absl::StatusOr<std::unique_ptr<Backend>> xrt = CreateBackend("xrt", options);
  ASSERT_FALSE(xrt.ok());
  EXPECT_EQ(xrt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(xrt.status().message().find("'/nonexistent/strata.xclbin' not found"),
            std::string::npos)
      << xrt.status();
}

TEST(RegistryTest, XrtWithAnXclbinButNoCardReportsTheCard) {
  const std::string path = std::string(STRATA_BINARY_DIR) + "/fpga_backend_test.xclbin";
  std::ofstream(path) << "not an xclbin";
  BackendOptions options;
  options.xclbin_path = path;
  absl::StatusOr<std::unique_ptr<Backend>> xrt = CreateBackend("xrt", options);
  std::remove(path.c_str());
  ASSERT_FALSE(xrt.ok());
  EXPECT_EQ(xrt.status().message(), kNoCard);
}

TEST(RegistryTest, AutoFallsBackToCpuAndKnownNamesWork) {
  BackendOptions options;
  options.xclbin_path = "/nonexistent/strata.xclbin";
  for (const BackendOptions& o : {BackendOptions{}, options}) {
    absl::StatusOr<std::unique_ptr<Backend>> chosen = CreateBackend("auto", o);
    ASSERT_TRUE(chosen.ok()) << chosen.status();
    EXPECT_EQ((*chosen)->info().name, "cpu");
    absl::StatusOr<AutoChoice> choice = ChooseAutoBackend(o);
    ASSERT_TRUE(choice.ok()) << choice.status();
    EXPECT_EQ(choice->backend->info().name, "cpu");
    EXPECT_NE(choice->reason.find("xrt is unavailable"), std::string::npos) << choice->reason;
  }
  EXPECT_EQ((*CreateBackend("cpu"))->info().name, "cpu");
  absl::StatusOr<std::unique_ptr<Backend>> unknown = CreateBackend("gpu");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("cpu, emu, xrt, auto"), std::string::npos);
}

TEST(RegistryTest, EachBackendIsRegisteredOnceWithItsFactoryProbeAndTable) {
  std::vector<std::string> names;
  for (const BackendRegistration& backend : Backends()) {
    SCOPED_TRACE(std::string(backend.name));
    names.emplace_back(backend.name);
    EXPECT_EQ(FindBackend(backend.name), &backend);
    EXPECT_EQ(EnergyTableFor(backend.name)->int8_mac_pj, backend.energy.int8_mac_pj);
    if (backend.available(BackendOptions{}).ok()) {
      absl::StatusOr<std::unique_ptr<Backend>> created = backend.create(BackendOptions{});
      ASSERT_TRUE(created.ok()) << created.status();
      EXPECT_EQ((*created)->info().name, backend.name);
    }
  }
  names.push_back("auto");
  EXPECT_EQ(BackendNames(), names);
  EXPECT_EQ(FindBackend("auto"), nullptr);
  EXPECT_TRUE(FindBackend("cpu")->available(BackendOptions{}).ok());
  EXPECT_TRUE(FindBackend("emu")->available(BackendOptions{}).ok());
}

}  // namespace
}  // namespace strata::fpga
