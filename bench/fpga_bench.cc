// strata-bench-fpga: throughput and latency of the lower tier's int8 layers on the cpu and emu
// backends, against this machine's measured int8 and fp32 peak.
//
// Layers (the lower tier's shapes, docs/fpga.md): the 5x5 PCA convolution as a GEMM
// (784 positions per image x 25 inputs -> 24 filters) and the random expansion
// (2352 pooled features -> 4096). Batches of 1, 16 and 64 images.
//
// Usage: strata-bench-fpga [--quick]   (--quick: batch 1 and 16 only, shorter runs)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/machine_peak.h"
#include "fpga/backend.h"

namespace {

using Clock = std::chrono::steady_clock;
using strata::fpga::Backend;
using strata::fpga::DenseInt8Layer;
using strata::fpga::DenseInt8Spec;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ---- layers ------------------------------------------------------------------------------------
struct LayerShape {
  const char* name;
  int rows_per_image;
  int in_features;
  int out_features;
};
constexpr LayerShape kConv = {"conv 5x5 (784x25 -> 24)", 784, 25, 24};
constexpr LayerShape kExpansion = {"expansion 2352 -> 4096", 1, 2352, 4096};

DenseInt8Spec RandomSpec(const LayerShape& shape, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(-128, 127);
  DenseInt8Spec spec;
  spec.in_features = shape.in_features;
  spec.out_features = shape.out_features;
  spec.weights.resize(static_cast<size_t>(shape.in_features) * shape.out_features);
  for (int8_t& w : spec.weights) w = static_cast<int8_t>(byte(rng));
  spec.bias.assign(shape.out_features, 1000);
  spec.scales.assign(shape.out_features, {1 << 30, -10});
  spec.relu = true;
  return spec;
}

struct Timing {
  double seconds_per_call = 0;
};

Timing TimeForward(const DenseInt8Layer& layer, const std::vector<int8_t>& x, int rows,
                   std::vector<int8_t>& y, double min_seconds) {
  int calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    auto counts = layer.Forward(x, rows, y, {});
    if (!counts.ok()) {
      std::fprintf(stderr, "forward failed: %s\n", counts.status().ToString().c_str());
      std::exit(1);
    }
    ++calls;
    elapsed = Seconds(start, Clock::now());
  } while (elapsed < min_seconds);
  return {elapsed / calls};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int cores = omp_get_num_procs();
  std::printf("strata-bench-fpga: int8 lower-tier layers on the cpu and emu backends\n\n");

  const strata::bench::MachinePeak peak = strata::bench::MeasureMachinePeak();
  strata::bench::PrintMachinePeak(peak);
  std::printf("\n");
  const double int8_n = peak.int8_all_cores;

  std::mt19937 rng(1);
  const std::vector<int> batches = quick ? std::vector<int>{1, 16} : std::vector<int>{1, 16, 64};
  std::printf("%-8s %-26s %6s %12s %12s %14s %10s %8s\n", "backend", "layer", "batch", "latency ms",
              "images/s", "MAC/image", "GMAC/s", "% peak");
  struct Config {
    const char* label;
    const char* backend;
    int threads;
  };
  for (const Config& config :
       {Config{"cpu", "cpu", 0}, Config{"cpu-1t", "cpu", 1}, Config{"emu", "emu", 0}}) {
    const char* name = config.label;
    strata::fpga::BackendOptions options;
    options.cpu_threads = config.threads;
    auto backend = strata::fpga::CreateBackend(config.backend, options);
    if (!backend.ok()) {
      std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
      return 1;
    }
    for (const LayerShape& shape : {kConv, kExpansion}) {
      auto layer = (*backend)->LoadDenseInt8(RandomSpec(shape, rng));
      if (!layer.ok()) {
        std::fprintf(stderr, "%s\n", layer.status().ToString().c_str());
        return 1;
      }
      for (int batch : batches) {
        const int rows = batch * shape.rows_per_image;
        std::vector<int8_t> x(static_cast<size_t>(rows) * shape.in_features);
        std::uniform_int_distribution<int> byte(-128, 127);
        for (int8_t& v : x) v = static_cast<int8_t>(byte(rng));
        std::vector<int8_t> y(static_cast<size_t>(rows) * shape.out_features);
        const double min_seconds =
            std::string(config.backend) == "emu" ? (quick ? 0.05 : 0.3) : (quick ? 0.1 : 0.5);
        const Timing t = TimeForward(**layer, x, rows, y, min_seconds);
        const double macs_per_image =
            static_cast<double>(shape.rows_per_image) * shape.in_features * shape.out_features;
        const double gmacs = macs_per_image * batch / t.seconds_per_call * 1e-9;
        std::printf("%-8s %-26s %6d %12.3f %12.1f %14.0f %10.2f %7.1f%%\n", name, shape.name, batch,
                    t.seconds_per_call * 1e3, batch / t.seconds_per_call, macs_per_image, gmacs,
                    int8_n > 0 ? 100 * gmacs / (int8_n * 1e-9) : 0.0);
      }
    }
    std::printf("  (%s: %s)\n", name, (*backend)->info().description.c_str());
  }
  std::printf(
      "\nlatency: wall time of one Forward call for the whole batch; images/s = batch / latency;\n"
      "%% peak: against the int8 VNNI peak on all %d cores. emu is a scalar C simulation of the\n"
      "FPGA kernels: its speed says nothing about the card's.\n",
      cores);
  return 0;
}
