// This machine's peak multiply-accumulate rates, measured with register-resident SIMD loops, for
// the benchmarks that report "% of peak" (strata-bench-fpga, strata-bench-lower).
//
// How: 12 independent accumulator registers (enough to cover the instruction latency on every
// AVX-512 core we know), each updated 20,000,000 times, no memory traffic; int8 uses AVX-512 VNNI
// vpdpbusd (64 int8 MACs per instruction), fp32 uses vfmadd231ps on zmm (16 MACs). The all-core
// figure runs one loop per core concurrently (OpenMP) and sums the per-thread rates. Rates are per
// second of the thread's own CPU time, so on a shared machine they are still the cores' peak
// (other processes take time slices, not the rate within one). Thread-compatible (call from one
// thread; the all-core measurement starts its own threads).
#ifndef STRATA_BENCH_MACHINE_PEAK_H_
#define STRATA_BENCH_MACHINE_PEAK_H_

namespace strata::bench {

inline constexpr int kPeakIterations = 20'000'000;
inline constexpr int kPeakRuns = 3;  // MeasureMachinePeak keeps the best

// MAC/s of one thread; 0 if the build lacks the instruction set (AVX-512 VNNI, AVX-512F).
double Int8PeakOneThread();
double Fp32PeakOneThread();

struct MachinePeak {
  int cores = 0;             // omp_get_num_procs()
  double int8_one_core = 0;  // MAC/s
  double int8_all_cores = 0;
  double fp32_one_core = 0;
  double fp32_all_cores = 0;
};

// Runs the four measurements (a few seconds).
MachinePeak MeasureMachinePeak();

// Prints the measurement and how it was made (three lines).
void PrintMachinePeak(const MachinePeak& peak);

}  // namespace strata::bench

#endif  // STRATA_BENCH_MACHINE_PEAK_H_
