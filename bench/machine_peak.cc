#include "bench/machine_peak.h"

#include <immintrin.h>
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace strata::bench {
namespace {

// This thread's CPU time: the peak loops divide by it, not by wall time, so that other processes
// sharing the cores (which only take time slices away) do not lower the measured peak.
double ThreadCpuSeconds() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
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
  __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-2);
  // Opaque to the optimiser once, outside the loop. (An asm barrier on the accumulators inside
  // the loop made gcc keep them in memory: a load and a store per vpdpbusd, which measured half
  // the real peak, 140 instead of about 300 GMAC/s per core on this machine.)
  __asm__ volatile("" : "+v"(x), "+v"(w));
  const double start = ThreadCpuSeconds();
  for (int it = 0; it < kPeakIterations; ++it) {
#pragma GCC unroll 12
    for (int a = 0; a < 12; ++a) acc[a] = _mm512_dpbusd_epi32(acc[a], x, w);
  }
  const double seconds = ThreadCpuSeconds() - start;
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
  __m512 x = _mm512_set1_ps(0.999f), w = _mm512_set1_ps(1e-7f);
  __asm__ volatile("" : "+v"(x), "+v"(w));  // as in Int8PeakOneThread
  const double start = ThreadCpuSeconds();
  for (int it = 0; it < kPeakIterations; ++it) {
#pragma GCC unroll 12
    for (int a = 0; a < 12; ++a) acc[a] = _mm512_fmadd_ps(acc[a], x, w);
  }
  const double seconds = ThreadCpuSeconds() - start;
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
  // The best of a few runs: sharing the cores can only make a run slower (CPU-time accounting of
  // a preempted thread is not exact either).
  for (int run = 0; run < kPeakRuns; ++run) {
    peak.int8_one_core = std::max(peak.int8_one_core, Int8PeakOneThread());
    peak.fp32_one_core = std::max(peak.fp32_one_core, Fp32PeakOneThread());
    peak.int8_all_cores =
        std::max(peak.int8_all_cores, PeakOnThreads(Int8PeakOneThread, peak.cores));
    peak.fp32_all_cores =
        std::max(peak.fp32_all_cores, PeakOnThreads(Fp32PeakOneThread, peak.cores));
  }
  return peak;
}

void PrintMachinePeak(const MachinePeak& peak) {
  std::printf(
      "Machine peak (register-resident loops, 12 independent accumulators, %d iterations, per\n"
      "second of each thread's CPU time, so other processes sharing the cores do not lower it;\n"
      "best of %d runs):\n",
      kPeakIterations, kPeakRuns);
  std::printf("  int8  AVX-512 VNNI vpdpbusd (64 MAC/instr): %7.1f GMAC/s on 1 core, %7.1f on %d\n",
              peak.int8_one_core * 1e-9, peak.int8_all_cores * 1e-9, peak.cores);
  std::printf("  fp32  AVX-512 vfmadd231ps   (16 MAC/instr): %7.1f GMAC/s on 1 core, %7.1f on %d\n",
              peak.fp32_one_core * 1e-9, peak.fp32_all_cores * 1e-9, peak.cores);
}

}  // namespace strata::bench
