// C-simulation testbenches: the kernels (fpga/kernels/) against the plain references, bit for bit.
#include "fpga/kernels/kernels.h"

#include <cstdint>
#include <random>
#include <vector>

#include "fpga/kernels/fixed.h"
#include "gtest/gtest.h"
#include "reference.h"

namespace strata::fpga::kernels {
namespace {

using testing::RandomBytes;
using testing::RandomClasses;
using testing::ReferenceGram;
using testing::ReferenceRequantize;

TEST(FixedTest, SaturateToInt8Clamps) {
  EXPECT_EQ(SaturateToInt8(127), 127);
  EXPECT_EQ(SaturateToInt8(128), 127);
  EXPECT_EQ(SaturateToInt8(-128), -128);
  EXPECT_EQ(SaturateToInt8(-129), -128);
  EXPECT_EQ(SaturateToInt8(kInt32Max), 127);
  EXPECT_EQ(SaturateToInt8(kInt32Min), -128);
  EXPECT_EQ(SaturateToInt8(-5), -5);
}

TEST(FixedTest, DoublingHighMulTiesGoUpAndOverflowSaturates) {
  const int32_t half = 1 << 30;                                // multiplier 0.5 in Q0.31
  EXPECT_EQ(SaturatingRoundingDoublingHighMul(1, half), 1);    // 0.5 -> 1
  EXPECT_EQ(SaturatingRoundingDoublingHighMul(-1, half), 0);   // -0.5 -> 0
  EXPECT_EQ(SaturatingRoundingDoublingHighMul(-3, half), -1);  // -1.5 -> -1
  EXPECT_EQ(SaturatingRoundingDoublingHighMul(3, half), 2);    // 1.5 -> 2
  EXPECT_EQ(SaturatingRoundingDoublingHighMul(kInt32Min, kInt32Min), kInt32Max);
  EXPECT_EQ(SaturatingRoundingDoublingHighMul(kInt32Max, kInt32Max), kInt32Max - 1);
}

TEST(FixedTest, DivideByPowerOfTwoTiesGoAwayFromZero) {
  EXPECT_EQ(RoundingDivideByPowerOfTwo(5, 1), 3);    // 2.5
  EXPECT_EQ(RoundingDivideByPowerOfTwo(-5, 1), -3);  // -2.5
  EXPECT_EQ(RoundingDivideByPowerOfTwo(3, 1), 2);    // 1.5
  EXPECT_EQ(RoundingDivideByPowerOfTwo(-3, 1), -2);  // -1.5
  EXPECT_EQ(RoundingDivideByPowerOfTwo(-4, 1), -2);
  EXPECT_EQ(RoundingDivideByPowerOfTwo(7, 0), 7);
  EXPECT_EQ(RoundingDivideByPowerOfTwo(kInt32Min, 31), -1);
  EXPECT_EQ(RoundingDivideByPowerOfTwo(kInt32Max, 31), 1);
  EXPECT_EQ(RoundingDivideByPowerOfTwo(-(1 << 29), 30), -1);  // -0.5 -> -1
}

TEST(FixedTest, LeftShiftSaturates) {
  EXPECT_EQ(SaturatingLeftShift(1 << 30, 1), kInt32Max);
  EXPECT_EQ(SaturatingLeftShift(-(1 << 30), 1), kInt32Min);
  EXPECT_EQ(SaturatingLeftShift(-(1 << 30) - 1, 1), kInt32Min);
  EXPECT_EQ(SaturatingLeftShift(-3, 4), -48);
}

TEST(FixedTest, RequantizeMatchesExactReference) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> any(kInt32Min, kInt32Max), small(-70000, 70000),
      mult(1 << 30, kInt32Max), shift(-31, 30), right(-31, 0);
  for (int t = 0; t < 200000; ++t) {
    const int32_t acc = t % 2 ? any(rng) : small(rng);
    const int32_t m = t % 5 == 0 ? (1 << 30) : mult(rng);  // 0.5: every odd product is a tie
    const int32_t s = t % 3 ? right(rng) : shift(rng);
    ASSERT_EQ(RequantizeInt32(acc, m, s), ReferenceRequantize(acc, m, s))
        << "acc=" << acc << " m=" << m << " s=" << s;
  }
  // Ties in the final division, both signs: 0.5 * 2^-1 of +-5 -> +-2.5 -> ... exact values.
  EXPECT_EQ(RequantizeInt32(10, 1 << 30, -1), 3);    // 10 * 0.5 / 2 = 2.5 -> 3
  EXPECT_EQ(RequantizeInt32(-10, 1 << 30, -1), -3);  // -2.5 -> -3
  EXPECT_EQ(RequantizeInt32(100, 0, 0), 0);
}

struct DenseShape {
  int batch, in, out;
};

std::vector<int32_t> RunDenseKernel(const testing::DenseCase& c) {
  std::vector<int8_t> y(static_cast<size_t>(c.batch) * c.out, 99);
  std::vector<int32_t> y_raw(static_cast<size_t>(c.batch) * c.out, 99);
  const int flags = (c.relu ? kDenseFlagRelu : 0) | (c.raw ? kDenseFlagRawOutput : 0);
  strata_dense_int8(c.x.data(), c.w.data(), c.bias.data(), c.multiplier.data(), c.shift.data(),
                    y.data(), y_raw.data(), c.batch, c.in, c.out, flags);
  if (c.raw) return y_raw;
  return std::vector<int32_t>(y.begin(), y.end());
}

TEST(DenseKernelTest, MatchesReferenceOnEdgeTileShapes) {
  std::mt19937 rng(1);
  const std::vector<DenseShape> shapes = {{1, 1, 1},
                                          {1, 25, 24},
                                          {kDenseTileB, kDenseTileI, kDenseTileO},
                                          {kDenseTileB + 1, kDenseTileI + 1, kDenseTileO + 1},
                                          {kDenseTileB - 1, kDenseTileI - 1, kDenseTileO - 1},
                                          {3, 2 * kDenseTileI + 17, 70},
                                          {17, 5, 2},
                                          {1, 600, 1},
                                          {20, 1, 65}};
  for (const DenseShape& s : shapes) {
    for (int mode = 0; mode < 4; ++mode) {
      testing::DenseCase c = testing::RandomDenseCase(s.batch, s.in, s.out, rng);
      c.relu = mode & 1;
      c.raw = mode & 2;
      ASSERT_EQ(RunDenseKernel(c), testing::ReferenceDense(c))
          << "batch=" << s.batch << " in=" << s.in << " out=" << s.out << " mode=" << mode;
    }
  }
}

TEST(DenseKernelTest, SaturatesAndRectifies) {
  // One input, weights +-127 * 127 inputs: acc far beyond the int8 range both ways.
  testing::DenseCase c{1, 127, 3};
  c.x.assign(127, 127);
  c.w.assign(3 * 127, 0);
  for (int i = 0; i < 127; ++i) {
    c.w[i] = 127;         // channel 0: +16129 * 127
    c.w[127 + i] = -128;  // channel 1: very negative
  }
  c.bias = {0, 0, -1};  // channel 2: acc = -1
  c.multiplier = {1 << 30, 1 << 30, 1 << 30};
  c.shift = {0, 0, 0};
  EXPECT_EQ(RunDenseKernel(c), (std::vector<int32_t>{127, -128, 0}));  // -0.5 rounds up to 0
  c.relu = true;
  EXPECT_EQ(RunDenseKernel(c), (std::vector<int32_t>{127, 0, 0}));
  c.relu = false;
  c.raw = true;
  EXPECT_EQ(RunDenseKernel(c), (std::vector<int32_t>{127 * 127 * 127, -128 * 127 * 127, -1}));
}

TEST(DenseKernelTest, LeavesOutputsOutsideTheShapeUntouched) {
  std::mt19937 rng(3);
  testing::DenseCase c = testing::RandomDenseCase(3, 10, 5, rng);
  std::vector<int8_t> y(3 * 5 + 8, 42);
  strata_dense_int8(c.x.data(), c.w.data(), c.bias.data(), c.multiplier.data(), c.shift.data(),
                    y.data(), nullptr, 3, 10, 5, 0);
  for (int k = 15; k < 23; ++k) EXPECT_EQ(y[k], 42);
}

TEST(GramKernelTest, MatchesReferenceOnEdgeTileShapes) {
  std::mt19937 rng(2);
  for (int d : {1, 2, kGramTile - 1, kGramTile, kGramTile + 1, 2 * kGramTile + 3}) {
    for (int rows : {0, 1, 7, 150}) {
      for (int classes : {0, 1, kGramClassTile, kGramClassTile + 3}) {
        const std::vector<int8_t> h = RandomBytes(static_cast<size_t>(rows) * d, rng);
        const std::vector<int32_t> y = RandomClasses(rows, std::max(classes, 1), rng);
        // Start from nonzero statistics: the kernel adds. The strict upper triangle holds a
        // sentinel that must survive.
        std::vector<int64_t> g(static_cast<size_t>(d) * d), q(static_cast<size_t>(d) * classes);
        for (int i = 0; i < d; ++i) {
          for (int j = 0; j < d; ++j) g[static_cast<size_t>(i) * d + j] = j <= i ? i - 3 * j : -777;
        }
        for (size_t k = 0; k < q.size(); ++k) q[k] = static_cast<int64_t>(k) - 5;
        std::vector<int64_t> g_ref = g, q_ref = q;
        ReferenceGram(h, y, d, classes, g_ref, q_ref);
        strata_gram_int8(h.data(), y.data(), g.data(), q.data(), rows, d, classes);
        ASSERT_EQ(g, g_ref) << "d=" << d << " rows=" << rows << " classes=" << classes;
        ASSERT_EQ(q, q_ref) << "d=" << d << " rows=" << rows << " classes=" << classes;
      }
    }
  }
}

TEST(GramKernelTest, PartitionOfRowsIsBitIdentical) {
  std::mt19937 rng(5);
  const int d = 97, classes = 5, rows = 123;
  const std::vector<int8_t> h = RandomBytes(static_cast<size_t>(rows) * d, rng);
  const std::vector<int32_t> y = RandomClasses(rows, classes, rng);
  std::vector<int64_t> g_all(d * d), q_all(d * classes), g_parts(d * d), q_parts(d * classes);
  strata_gram_int8(h.data(), y.data(), g_all.data(), q_all.data(), rows, d, classes);
  for (int start : {0, 1, 41, 42, 100}) {
    const int end =
        start == 100 ? rows : (start == 0 ? 1 : (start == 1 ? 41 : (start == 41 ? 42 : 100)));
    strata_gram_int8(h.data() + static_cast<size_t>(start) * d, y.data() + start, g_parts.data(),
                     q_parts.data(), end - start, d, classes);
  }
  EXPECT_EQ(g_parts, g_all);
  EXPECT_EQ(q_parts, q_all);
}

// More rows than one int32 flush holds, all at the extreme -128: G = rows * 16384 > 2^31, exact.
TEST(GramKernelTest, FlushesBeforeInt32Overflow) {
  const int d = 2, rows = kGramRowsPerFlush + 5;
  const std::vector<int8_t> h(static_cast<size_t>(rows) * d, -128);
  const std::vector<int32_t> y(rows, 0);
  std::vector<int64_t> g(d * d, 0), q(d, 0);
  strata_gram_int8(h.data(), y.data(), g.data(), q.data(), rows, d, 1);
  const int64_t expected = int64_t{rows} * 16384;
  EXPECT_GT(expected, int64_t{INT32_MAX});
  EXPECT_EQ(g[0], expected);
  EXPECT_EQ(g[2], expected);
  EXPECT_EQ(g[3], expected);
  EXPECT_EQ(g[1], 0);  // strict upper triangle untouched
  EXPECT_EQ(q[0], int64_t{rows} * -128);
}

}  // namespace
}  // namespace strata::fpga::kernels
