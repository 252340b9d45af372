// Plain, obviously-correct references for the FPGA kernels' arithmetic, written from the contracts
// in fpga/kernels/kernels.h and fixed.h (not from the kernels' code).
#ifndef STRATA_TESTS_FPGA_REFERENCE_H_
#define STRATA_TESTS_FPGA_REFERENCE_H_

#include <cstdint>
#include <random>
#include <vector>

namespace strata::fpga::testing {

// round(numerator / 2^bits) to nearest, ties away from zero, in exact 128-bit arithmetic.
inline __int128 RoundHalfAwayDivPow2(__int128 numerator, int bits) {
  const __int128 denominator = static_cast<__int128>(1) << bits;
  const __int128 magnitude = numerator < 0 ? -numerator : numerator;
  const __int128 rounded = (2 * magnitude + denominator) / (2 * denominator);
  return numerator < 0 ? -rounded : rounded;
}

// The documented requantisation: saturating left shift, then floor((x * M + 2^30) / 2^31)
// (round half up), then round(. / 2^right) with ties away from zero.
inline int32_t ReferenceRequantize(int32_t acc, int32_t multiplier, int32_t shift) {
  __int128 x = acc;
  if (shift > 0) {
    x *= static_cast<__int128>(1) << shift;
    if (x > INT32_MAX) x = INT32_MAX;
    if (x < INT32_MIN) x = INT32_MIN;
  }
  const __int128 scaled = x * multiplier + (static_cast<__int128>(1) << 30);
  __int128 high =
      scaled >= 0 ? scaled >> 31 : -((-scaled + (static_cast<__int128>(1) << 31) - 1) >> 31);
  if (high > INT32_MAX) high = INT32_MAX;
  const int right = shift > 0 ? 0 : -shift;
  return static_cast<int32_t>(RoundHalfAwayDivPow2(high, right));
}

struct DenseCase {
  int batch = 0, in = 0, out = 0;
  std::vector<int8_t> x = {}, w = {};
  std::vector<int32_t> bias = {}, multiplier = {}, shift = {};
  bool relu = false, raw = false;
};

inline DenseCase RandomDenseCase(int batch, int in, int out, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(-128, 127), bias(-200000, 200000),
      mult((1 << 30), INT32_MAX), shift(-16, 1);
  DenseCase c{batch, in, out};
  c.x.resize(static_cast<size_t>(batch) * in);
  c.w.resize(static_cast<size_t>(out) * in);
  for (int8_t& v : c.x) v = static_cast<int8_t>(byte(rng));
  for (int8_t& v : c.w) v = static_cast<int8_t>(byte(rng));
  for (int o = 0; o < out; ++o) {
    c.bias.push_back(bias(rng));
    c.multiplier.push_back(mult(rng));
    c.shift.push_back(shift(rng));
  }
  return c;
}

// Outputs as int32 (int8 values widened unless raw).
inline std::vector<int32_t> ReferenceDense(const DenseCase& c) {
  std::vector<int32_t> y(static_cast<size_t>(c.batch) * c.out);
  for (int b = 0; b < c.batch; ++b) {
    for (int o = 0; o < c.out; ++o) {
      int64_t acc = c.bias[o];
      for (int i = 0; i < c.in; ++i) {
        acc += int64_t{c.x[static_cast<size_t>(b) * c.in + i]} *
               c.w[static_cast<size_t>(o) * c.in + i];
      }
      int64_t v =
          c.raw ? acc : ReferenceRequantize(static_cast<int32_t>(acc), c.multiplier[o], c.shift[o]);
      if (c.relu && v < 0) v = 0;
      if (!c.raw) v = v > 127 ? 127 : (v < -128 ? -128 : v);
      y[static_cast<size_t>(b) * c.out + o] = static_cast<int32_t>(v);
    }
  }
  return y;
}

// G (lower triangle) and Q added to `g` and `q` from rows of h with classes (-1: G only).
inline void ReferenceGram(const std::vector<int8_t>& h, const std::vector<int32_t>& y, int d,
                          int classes, std::vector<int64_t>& g, std::vector<int64_t>& q) {
  const int rows = static_cast<int>(y.size());
  for (int n = 0; n < rows; ++n) {
    for (int i = 0; i < d; ++i) {
      const int64_t hi = h[static_cast<size_t>(n) * d + i];
      for (int j = 0; j <= i; ++j)
        g[static_cast<size_t>(i) * d + j] += hi * h[static_cast<size_t>(n) * d + j];
      if (y[n] >= 0 && y[n] < classes) q[static_cast<size_t>(i) * classes + y[n]] += hi;
    }
  }
}

inline std::vector<int8_t> RandomBytes(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(-128, 127);
  std::vector<int8_t> v(n);
  for (int8_t& x : v) x = static_cast<int8_t>(byte(rng));
  return v;
}

inline std::vector<int32_t> RandomClasses(int rows, int classes, std::mt19937& rng) {
  std::uniform_int_distribution<int> label(-1, classes - 1);
  std::vector<int32_t> y(rows);
  for (int32_t& c : y) c = label(rng);
  return y;
}

}  // namespace strata::fpga::testing

#endif  // STRATA_TESTS_FPGA_REFERENCE_H_
