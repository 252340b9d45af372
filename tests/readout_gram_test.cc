// The int8 readout of the upper tier (model/upper_tier.h, docs/upper-tier.md "Int8 readout
// features and the Gram kernel"): absorbs through a backend's GramInt8Accumulator equal the
// float64 absorb of the same dequantised rows, and the integer sums do not depend on how the rows
// are split into calls, nor on the backend. Real data: Fashion-MNIST pixel rows as features.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "fpga/backend.h"
#include "fpga/dataflow.h"
#include "gtest/gtest.h"
#include "model/upper_tier.h"

namespace strata::model {
namespace {

constexpr int kRows = 600;

struct Rows {
  MatrixF features;
  std::vector<std::string> labels;
};

Rows LoadRows(int offset, int n) {
  absl::StatusOr<data::LabeledImages> images =
      data::Load("fashion-mnist:train", {size_t(offset), size_t(n)});
  EXPECT_TRUE(images.ok()) << images.status();
  Rows rows;
  rows.features.resize(images->size(), images->image_size());
  for (size_t i = 0; i < images->size(); ++i) {
    for (size_t j = 0; j < images->image_size(); ++j) {
      // Centred pixels: signed features, like the lower tier's.
      rows.features(i, j) = images->image(i)[j] / 255.0f - 0.3f;
    }
  }
  rows.labels = images->labels;
  return rows;
}

// Absorbs `rows` in batches whose sizes cycle through `splits`; labels become classes on the way
// (so the accumulator grows its classes mid-stream).
void AbsorbInSplits(UpperTier& tier, const Rows& rows, const std::vector<int>& splits) {
  int begin = 0;
  for (size_t s = 0; begin < rows.features.rows(); ++s) {
    const int n = std::min<int>(splits[s % splits.size()], rows.features.rows() - begin);
    const std::span<const std::string> labels(rows.labels.data() + begin, n);
    ASSERT_TRUE(tier.AbsorbLabeled(rows.features.middleRows(begin, n), labels).ok());
    begin += n;
  }
}

double RelativeDifference(const MatrixD& a, const MatrixD& b) {
  const MatrixD la = a.triangularView<Eigen::Lower>(), lb = b.triangularView<Eigen::Lower>();
  return (la - lb).norm() / lb.norm();
}

class ReadoutGramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rows_ = LoadRows(0, kRows);
    absl::StatusOr<std::vector<float>> scales =
        CalibrateReadoutScales(rows_.features.topRows(200), 99.9);
    ASSERT_TRUE(scales.ok()) << scales.status();
    scales_ = *std::move(scales);
    absl::StatusOr<std::unique_ptr<fpga::Backend>> cpu = fpga::CreateBackend("cpu");
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = *std::move(cpu);
  }

  UpperTier Tier(fpga::Backend* backend) {
    UpperTier tier(rows_.features.cols(), 3.0);
    EXPECT_TRUE(tier.set_readout_scales(scales_).ok());
    if (backend != nullptr) {
      EXPECT_TRUE(tier.AttachGramBackend(backend).ok());
    }
    return tier;
  }

  Rows rows_;
  std::vector<float> scales_;
  std::unique_ptr<fpga::Backend> cpu_;
};

TEST_F(ReadoutGramTest, AccumulatorAbsorbEqualsFloat64AbsorbOfDequantisedRows) {
  UpperTier gram = Tier(cpu_.get());
  UpperTier host = Tier(nullptr);
  AbsorbInSplits(gram, rows_, {37, 1, 120});
  AbsorbInSplits(host, rows_, {37, 1, 120});
  EXPECT_GT(gram.unfolded_gram_rows(), 0u);  // the rows went to the accumulator
  EXPECT_EQ(gram.samples_seen(), static_cast<uint64_t>(kRows));
  EXPECT_LE(RelativeDifference(gram.gram(), host.gram()), 1e-12);
  EXPECT_EQ(gram.unfolded_gram_rows(), 0u);  // reading G folded them in
  EXPECT_LE((gram.cross() - host.cross()).norm() / host.cross().norm(), 1e-12);

  // The quantised rows really are what both absorbed: a float64 tier without scales fed the
  // dequantised rows directly holds the same statistics.
  UpperTier plain(rows_.features.cols(), 3.0);
  Rows dequantised = rows_;
  std::vector<int8_t> q;
  ASSERT_TRUE(gram.QuantizeFeatures(rows_.features, &q, &dequantised.features).ok());
  AbsorbInSplits(plain, dequantised, {600});
  EXPECT_LE(RelativeDifference(gram.gram(), plain.gram()), 1e-12);
  EXPECT_NE(RelativeDifference(plain.gram(),
                               [&] {
                                 UpperTier unquantised(rows_.features.cols(), 3.0);
                                 AbsorbInSplits(unquantised, rows_, {600});
                                 return unquantised.gram();
                               }()),
            0.0);  // and quantisation did change the rows

  absl::StatusOr<Readout> a = gram.Solve(), b = host.Solve();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LE((a->weights - b->weights).norm() / b->weights.norm(), 1e-9);
}

TEST_F(ReadoutGramTest, FactorUpdateAfterAccumulatorAbsorbMatchesAFreshSolve) {
  UpperTier gram = Tier(cpu_.get());
  Rows first = rows_;
  first.features = rows_.features.topRows(500);
  AbsorbInSplits(gram, first, {500});
  ASSERT_TRUE(gram.Refresh(RefreshMode::kForceRefactor).ok());
  Rows rest = rows_;
  rest.features = rows_.features.bottomRows(100);
  rest.labels.erase(rest.labels.begin(), rest.labels.begin() + 500);
  AbsorbInSplits(gram, rest, {30});
  EXPECT_EQ(gram.pending_factor_rows(), 100);
  absl::StatusOr<Readout> updated = gram.Refresh(RefreshMode::kForceFactorUpdate);
  ASSERT_TRUE(updated.ok()) << updated.status();
  absl::StatusOr<Readout> fresh = gram.Solve();
  ASSERT_TRUE(fresh.ok());
  EXPECT_LE((updated->weights - fresh->weights).norm() / fresh->weights.norm(), 1e-6);
}

TEST_F(ReadoutGramTest, AnySplitGivesBitIdenticalIntegerSums) {
  std::vector<int8_t> q;
  ASSERT_TRUE(Tier(nullptr).QuantizeFeatures(rows_.features, &q, nullptr).ok());
  const int d = rows_.features.cols();
  std::vector<int32_t> classes(kRows);
  for (int i = 0; i < kRows; ++i) classes[i] = i % 10;
  auto sums = [&](fpga::Backend& backend, const std::vector<int>& splits) {
    std::unique_ptr<fpga::GramInt8Accumulator> acc = *backend.CreateGramInt8(d, 10);
    for (int begin = 0, s = 0; begin < kRows; ++s) {
      const int n = std::min(splits[s % splits.size()], kRows - begin);
      EXPECT_TRUE(
          acc->Accumulate(std::span<const int8_t>(q).subspan(size_t(begin) * d, size_t(n) * d),
                          std::span<const int32_t>(classes).subspan(begin, n))
              .ok());
      begin += n;
    }
    std::vector<int64_t> g, c;
    EXPECT_TRUE(acc->Read(&g, &c).ok());
    return std::make_pair(g, c);
  };
  const auto whole = sums(*cpu_, {kRows});
  EXPECT_EQ(sums(*cpu_, {1, 7, 64, 250}), whole);
  EXPECT_EQ(sums(*cpu_, {33}), whole);
  absl::StatusOr<std::unique_ptr<fpga::Backend>> emu = fpga::CreateBackend("emu");
  ASSERT_TRUE(emu.ok()) << emu.status();
  EXPECT_EQ(sums(**emu, {200, 400}), whole);

  // Through the upper tier: one fold of the same integer sums gives bit-identical G and Q.
  UpperTier one = Tier(cpu_.get()), many = Tier(cpu_.get());
  AbsorbInSplits(one, rows_, {kRows});
  AbsorbInSplits(many, rows_, {5, 91, 2});
  EXPECT_TRUE(one.gram().triangularView<Eigen::Lower>().toDenseMatrix() ==
              many.gram().triangularView<Eigen::Lower>().toDenseMatrix());
  EXPECT_TRUE(one.cross() == many.cross());
}

// The cpu accumulator's sums live in host memory: the tier folds them in place and zeroes them
// (GramInt8Accumulator::host_sums, Clear) instead of copying the D x D square out (Read, what emu
// needs). Folding three times between absorbs gives G and Q bit-identical to emu's copies, and
// each in-place fold is charged one read of the integer triangle, its zeroing and G's triangle
// read and written, not Read's 2 x 8 x D^2 bytes.
TEST_F(ReadoutGramTest, InPlaceFoldOnCpuEqualsTheReadBackFoldOnEmu) {
  absl::StatusOr<std::unique_ptr<fpga::Backend>> emu = fpga::CreateBackend("emu");
  ASSERT_TRUE(emu.ok()) << emu.status();
  UpperTierOptions options;
  options.gram_block_rows = 1;  // every absorb reaches the accumulator: only the folds differ
  UpperTier on_cpu(rows_.features.cols(), 3.0, options),
      on_emu(rows_.features.cols(), 3.0, options);
  for (auto [tier, backend] : {std::pair{&on_cpu, cpu_.get()}, {&on_emu, emu->get()}}) {
    ASSERT_TRUE(tier->set_readout_scales(scales_).ok());
    ASSERT_TRUE(tier->AttachGramBackend(backend).ok());
  }
  const uint64_t d = rows_.features.cols();
  for (auto [begin, n] : {std::pair{0, 250}, {250, 100}, {350, 250}}) {
    Rows part;
    part.features = rows_.features.middleRows(begin, n);
    part.labels.assign(rows_.labels.begin() + begin, rows_.labels.begin() + begin + n);
    AbsorbInSplits(on_cpu, part, {n});
    AbsorbInSplits(on_emu, part, {n});
    fpga::OpCounts cpu_fold, emu_fold;
    ASSERT_TRUE(on_cpu.FoldGram(&cpu_fold).ok());
    ASSERT_TRUE(on_emu.FoldGram(&emu_fold).ok());
    EXPECT_EQ(on_cpu.unfolded_gram_rows(), 0u);
    const uint64_t c = on_cpu.num_classes(), triangle = d * (d + 1) / 2;
    EXPECT_EQ(cpu_fold.fp64_macs, triangle + d * c);
    EXPECT_EQ(cpu_fold.dram_bytes, 32 * triangle + 32 * d * c);
    EXPECT_EQ(emu_fold.fp64_macs, cpu_fold.fp64_macs);
    EXPECT_GT(emu_fold.device_to_host_bytes, 8 * d * d);  // emu copies the square out
  }
  EXPECT_TRUE(on_cpu.gram().triangularView<Eigen::Lower>().toDenseMatrix() ==
              on_emu.gram().triangularView<Eigen::Lower>().toDenseMatrix());
  EXPECT_TRUE(on_cpu.cross() == on_emu.cross());
}

TEST_F(ReadoutGramTest, RowsAreStagedAndAccumulatedByTheBlock) {
  UpperTierOptions options;
  options.gram_block_rows = 64;
  UpperTier staged(rows_.features.cols(), 3.0, options);
  ASSERT_TRUE(staged.set_readout_scales(scales_).ok());
  ASSERT_TRUE(staged.AttachGramBackend(cpu_.get()).ok());
  const int c = 10;
  for (int k = 0; k < c; ++k) staged.ClassIndexOrAdd(std::to_string(k));
  auto absorb = [&](int begin, int n) {
    std::vector<int> classes(n);
    for (int i = 0; i < n; ++i) classes[i] = (begin + i) % c;
    fpga::OpCounts counts;
    EXPECT_TRUE(staged.Absorb(rows_.features.middleRows(begin, n), classes, &counts).ok());
    return counts;
  };
  const int d = rows_.features.cols();
  // 40 rows: staged, no kernel work yet.
  EXPECT_EQ(absorb(0, 40), fpga::OpCounts{});
  EXPECT_EQ(staged.staged_gram_rows(), 40u);
  // 40 more complete a block: one Gram call over all 80 rows, reported by this absorb.
  EXPECT_EQ(absorb(40, 40), fpga::GramInt8CpuCounts(80, 80, d, c));
  EXPECT_EQ(staged.staged_gram_rows(), 0u);
  // 10 more stay staged; the fold accumulates them first and reports that as absorb work.
  EXPECT_EQ(absorb(80, 10), fpga::OpCounts{});
  EXPECT_EQ(staged.unfolded_gram_rows(), 90u);
  fpga::OpCounts fold, absorb_work;
  ASSERT_TRUE(staged.FoldGram(&fold, &absorb_work).ok());
  EXPECT_EQ(absorb_work, fpga::GramInt8CpuCounts(10, 10, d, c));
  EXPECT_GT(fold.fp64_macs, 0u);
  EXPECT_EQ(staged.unfolded_gram_rows(), 0u);

  // Bit-identical to one call per absorb (block of 1 row: no staging).
  options.gram_block_rows = 1;
  UpperTier unstaged(rows_.features.cols(), 3.0, options);
  ASSERT_TRUE(unstaged.set_readout_scales(scales_).ok());
  ASSERT_TRUE(unstaged.AttachGramBackend(cpu_.get()).ok());
  for (int k = 0; k < c; ++k) unstaged.ClassIndexOrAdd(std::to_string(k));
  for (auto [begin, n] : {std::pair{0, 40}, {40, 40}, {80, 10}}) {
    std::vector<int> classes(n);
    for (int i = 0; i < n; ++i) classes[i] = (begin + i) % c;
    fpga::OpCounts counts;
    ASSERT_TRUE(unstaged.Absorb(rows_.features.middleRows(begin, n), classes, &counts).ok());
    EXPECT_EQ(counts, fpga::GramInt8CpuCounts(n, n, d, c));
  }
  EXPECT_TRUE(staged.gram().triangularView<Eigen::Lower>().toDenseMatrix() ==
              unstaged.gram().triangularView<Eigen::Lower>().toDenseMatrix());
  EXPECT_TRUE(staged.cross() == unstaged.cross());
}

// Every row a new label, absorbed one at a time straight into a live accumulator (blocks of one
// row), on cpu and emu: the tier's Q and the accumulator's Q grow class by class, geometrically,
// and the folded statistics equal a batch fit's bit for bit (integer sums, one fold each).
TEST_F(ReadoutGramTest, NewClassesOneAtATimeOnALiveAccumulatorEqualTheBatchFit) {
  Rows rows = rows_;
  for (int i = 0; i < kRows; ++i) rows.labels[i] = "new" + std::to_string(i);
  absl::StatusOr<std::unique_ptr<fpga::Backend>> emu = fpga::CreateBackend("emu");
  ASSERT_TRUE(emu.ok()) << emu.status();
  UpperTierOptions options;
  options.gram_block_rows = 1;
  for (fpga::Backend* backend : {cpu_.get(), emu->get()}) {
    UpperTier stream(rows.features.cols(), 3.0, options);
    ASSERT_TRUE(stream.set_readout_scales(scales_).ok());
    ASSERT_TRUE(stream.AttachGramBackend(backend).ok());
    AbsorbInSplits(stream, rows, {1});
    EXPECT_EQ(stream.unfolded_gram_rows(), static_cast<uint64_t>(kRows));
    EXPECT_EQ(stream.num_classes(), kRows);
    EXPECT_LE(stream.class_reallocations(), 7);  // 16, 32, ..., 1024

    UpperTier batch = Tier(backend);
    AbsorbInSplits(batch, rows, {kRows});
    EXPECT_TRUE(stream.gram().triangularView<Eigen::Lower>().toDenseMatrix() ==
                batch.gram().triangularView<Eigen::Lower>().toDenseMatrix())
        << backend->info().name;
    EXPECT_TRUE(stream.cross() == batch.cross()) << backend->info().name;
    absl::StatusOr<Readout> a = stream.Solve(), b = batch.Solve();
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(a->weights == b->weights) << backend->info().name;
  }
}

TEST_F(ReadoutGramTest, ForgettingFallsBackToTheFloat64PathOfTheSameRows) {
  UpperTier gram = Tier(cpu_.get());
  UpperTier host = Tier(nullptr);
  ASSERT_TRUE(gram.set_forgetting(0.9).ok());
  ASSERT_TRUE(host.set_forgetting(0.9).ok());
  AbsorbInSplits(gram, rows_, {100});
  AbsorbInSplits(host, rows_, {100});
  EXPECT_EQ(gram.unfolded_gram_rows(), 0u);
  EXPECT_LE(RelativeDifference(gram.gram(), host.gram()), 1e-12);
}

TEST_F(ReadoutGramTest, ScalesAreValidatedAndRoundedTo16Bits) {
  UpperTier tier(4, 1.0);
  EXPECT_EQ(tier.set_readout_scales({1, 2, 3}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.set_readout_scales({1, 0, 3, 4}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.AttachGramBackend(cpu_.get()).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(tier.set_readout_scales({0.1f, 1e-3f, 7.0f, 0.3333333f}).ok());
  for (float s : tier.readout_scales()) {
    // s * q exact in float for |q| <= 127: the significand has at most 16 bits.
    for (int q = -127; q <= 127; ++q) {
      EXPECT_EQ(static_cast<double>(s * static_cast<float>(q)), static_cast<double>(s) * q);
    }
  }
  EXPECT_NEAR(tier.readout_scales()[3], 0.3333333f, 1e-5);
}

}  // namespace
}  // namespace strata::model
