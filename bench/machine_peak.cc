#include "bench/machine_peak.h"

#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace strata::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Sum over `threads` concurrent copies of `peak` (each thread times its own loop).
template <typename F>
double PeakOnThreads(F peak, int threads) {
  std::vector<double> rates(threads);
#pragma omp parallel num_threads(threads)
  rates[omp_get_thread_num()] = peak();
  double total = 0;
  for (double r : rates) total += r;
  return total;
}

}  // namespace

#if defined(__AVX512VNNI__)
double Int8PeakOneThread() {
  __m512i acc[12];
  for (int a = 0; a < 12; ++a) acc[a] = _mm512_set1_epi32(a);
  const __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-2);
  const auto start = Clock::now();
  for (int it = 0; it < kPeakIterations; ++it) {
    for (int a = 0; a < 12; ++a) acc[a] = _mm512_dpbusd_epi32(acc[a], x, w);
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]));
  }
  const double seconds = SecondsSince(start);
  int32_t sink = 0, lanes[16];
  for (int a = 0; a < 12; ++a) {
    _mm512_storeu_si512(lanes, acc[a]);
    sink += lanes[0];
  }
  if (sink == 42) std::puts("");
  return 12.0 * 64 * kPeakIterations / seconds;  // 64 int8 MACs per vpdpbusd
}
#else
double Int8PeakOneThread() { return 0; }
#endif

#if defined(__AVX512F__)
double Fp32PeakOneThread() {
  __m512 acc[12];
  for (int a = 0; a < 12; ++a) acc[a] = _mm512_set1_ps(static_cast<float>(a));
  const __m512 x = _mm512_set1_ps(0.999f), w = _mm512_set1_ps(1e-7f);
  const auto start = Clock::now();
  for (int it = 0; it < kPeakIterations; ++it) {
    for (int a = 0; a < 12; ++a) acc[a] = _mm512_fmadd_ps(acc[a], x, w);
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]));
  }
  const double seconds = SecondsSince(start);
  float sink = 0, lanes[16];
  for (int a = 0; a < 12; ++a) {
    _mm512_storeu_ps(lanes, acc[a]);
    sink += lanes[0];
  }
  if (sink == 42.0f) std::puts("");
  return 12.0 * 16 * kPeakIterations / seconds;  // 16 fp32 MACs per vfmadd
}
#else
double Fp32PeakOneThread() { return 0; }
#endif

MachinePeak MeasureMachinePeak() {
  MachinePeak peak;
  peak.cores = omp_get_num_procs();
  peak.int8_one_core = Int8PeakOneThread();
  peak.fp32_one_core = Fp32PeakOneThread();
  peak.int8_all_cores = PeakOnThreads(Int8PeakOneThread, peak.cores);
  peak.fp32_all_cores = PeakOnThreads(Fp32PeakOneThread, peak.cores);
  return peak;
}

void PrintMachinePeak(const MachinePeak& peak) {
  std::printf("Machine peak (register-resident loops, 12 independent accumulators, %d iterations):\n",
              kPeakIterations);
  std::printf("  int8  AVX-512 VNNI vpdpbusd (64 MAC/instr): %7.1f GMAC/s on 1 core, %7.1f on %d\n",
              peak.int8_one_core * 1e-9, peak.int8_all_cores * 1e-9, peak.cores);
  std::printf("  fp32  AVX-512 vfmadd231ps   (16 MAC/instr): %7.1f GMAC/s on 1 core, %7.1f on %d\n",
              peak.fp32_one_core * 1e-9, peak.fp32_all_cores * 1e-9, peak.cores);
}

}  // namespace strata::bench
