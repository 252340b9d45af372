// Integer fixed-point arithmetic shared by the HLS kernels and their C simulation.
//
// Everything here is plain integer C++ that Vitis HLS synthesises as written (int8_t, int32_t and
// int64_t map to 8-, 32- and 64-bit datapaths), and that g++ compiles to the same bits, so the
// C simulation IS the hardware's arithmetic. No ap_int: Debian has no Vitis headers, and standard
// fixed-width integers are exactly what the kernels need.
//
// Requantisation follows TFLite / gemmlowp (MultiplyByQuantizedMultiplier):
//
//   real_scale ~= multiplier * 2^(shift - 31),  multiplier in [2^30, 2^31) (or 0), shift in [-31, 30]
//   RequantizeInt32(acc) = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(
//                              SaturatingLeftShift(acc, max(shift, 0)), multiplier),
//                          max(-shift, 0))
//
// Both steps round to nearest, with gemmlowp's tie rules, reproduced exactly:
//   the doubling high multiply rounds ties UP (toward +infinity): 0.5 -> 1, -0.5 -> 0, -1.5 -> -1;
//   the division by 2^right rounds ties AWAY FROM ZERO: 2.5 -> 3, -2.5 -> -3.
// The one deviation from TFLite: a positive (left) shift saturates to int32 instead of
// overflowing (TFLite leaves that overflow undefined); with |acc| < 2^31 and shift <= 0, which is
// every case a scale < 1 produces, the results are identical to TFLite's.
#ifndef STRATA_FPGA_KERNELS_FIXED_H_
#define STRATA_FPGA_KERNELS_FIXED_H_

#include <cstdint>

namespace strata::fpga::kernels {

inline constexpr int32_t kInt32Max = 2147483647;
inline constexpr int32_t kInt32Min = -2147483647 - 1;

// The value clamped to [lo, hi].
inline constexpr int32_t ClampInt32(int32_t value, int32_t lo, int32_t hi) {
  return value < lo ? lo : (value > hi ? hi : value);
}

// The value saturated to int8: values above 127 become 127, below -128 become -128.
inline constexpr int8_t SaturateToInt8(int32_t value) {
  return static_cast<int8_t>(ClampInt32(value, -128, 127));
}

// round(a * b / 2^31) with ties toward +infinity, saturating the single overflow case
// a == b == INT32_MIN to INT32_MAX. gemmlowp's SaturatingRoundingDoublingHighMul.
inline constexpr int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == kInt32Min && b == kInt32Min) return kInt32Max;
  const int64_t product = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = product >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  // C++ division truncates toward zero; with this nudge the result is floor((a*b + 2^30) / 2^31),
  // i.e. ties go up, for both signs.
  return static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));
}

// round(x / 2^exponent) with ties away from zero, for exponent in [0, 31].
// gemmlowp's RoundingDivideByPOT.
inline constexpr int32_t RoundingDivideByPowerOfTwo(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  // Arithmetic right shift of a negative value: defined (floor) since C++20.
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * 2^shift saturated to int32, for shift in [0, 31].
inline constexpr int32_t SaturatingLeftShift(int32_t x, int shift) {
  const int64_t shifted = static_cast<int64_t>(x) * (int64_t{1} << shift);
  if (shifted > kInt32Max) return kInt32Max;
  if (shifted < kInt32Min) return kInt32Min;
  return static_cast<int32_t>(shifted);
}

// A real scale in fixed point: real ~= multiplier * 2^(shift - 31).
struct FixedPointMultiplier {
  int32_t multiplier = 0;  // Q0.31; [2^30, 2^31) for a normalised nonzero scale, 0 for scale 0
  int32_t shift = 0;       // [-31, 30]; negative shifts right (scale < 0.5), positive shifts left
};

// acc * real_scale rounded as described at the top of this file. `shift` must be in [-31, 30].
inline constexpr int32_t RequantizeInt32(int32_t acc, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return RoundingDivideByPowerOfTwo(
      SaturatingRoundingDoublingHighMul(SaturatingLeftShift(acc, left), multiplier), right);
}

}  // namespace strata::fpga::kernels

#endif  // STRATA_FPGA_KERNELS_FIXED_H_
