// strata-bench-lower: the whole lower tier's throughput and latency, float vs int8 on the
// backends, against this machine's measured int8 and fp32 peak (bench/machine_peak.h).
//
// The lower tier (default: specs/default.spec, conv 5x5x24 -> ... -> expand 2352 -> 4096) is fit
// on --train_limit Fashion-MNIST training images and quantised on the first 2,000 of them. Then,
// at batch 1, 16 and 64 images, each path computes features end to end (host stages included):
//   float      LowerTier::Features (Eigen fp32 GEMMs);
//   int8 cpu   QuantizedLowerTier::Features on the cpu backend (AVX-512 VNNI);
//   int8 emu   the same on the emu backend (the FPGA kernels' C simulation: slow, few calls).
// GMAC/s counts the matrix-product MACs only (LowerTier::MacsPerSample per image); "% peak" is
// against the all-core peak of the path's precision (fp32 for float, int8 for the int8 paths).
//
// Usage: strata-bench-lower [--spec=specs/default.spec] [--train_limit=5000] [--seconds=1]
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/machine_peak.h"
#include "data/dataset.h"
#include "fpga/backend.h"
#include "model/architecture.h"
#include "model/lower_tier.h"
#include "model/quantized_lower_tier.h"

ABSL_FLAG(std::string, spec, "",
          "Lower-tier spec file (empty: the built-in default, the same as specs/default.spec)");
ABSL_FLAG(size_t, train_limit, 5000, "Fashion-MNIST training images the lower tier is fit on");
ABSL_FLAG(double, seconds, 1.0, "Minimum measuring time per row of the table (emu: a third)");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "16", "64"}),
          "Batch sizes (images per Features call)");
ABSL_FLAG(std::vector<std::string>, paths, std::vector<std::string>({"float", "cpu", "emu"}),
          "Paths to measure: float, cpu, emu (e.g. --paths=cpu to profile the cpu backend)");

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The process's CPU time (every thread), in seconds.
double ProcessCpuSeconds() {
  timespec now;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

struct CallTime {
  double wall = 0;  // seconds per call
  double cpu = 0;   // CPU seconds per call, all threads
};

// Mean wall and CPU time of one call of `run`, repeated until `min_seconds` have passed (at least
// twice, after one warm-up call).
absl::StatusOr<CallTime> TimeCalls(const std::function<absl::Status()>& run, double min_seconds) {
  if (absl::Status s = run(); !s.ok()) return s;
  int calls = 0;
  const auto start = Clock::now();
  const double cpu_start = ProcessCpuSeconds();
  double elapsed = 0;
  do {
    if (absl::Status s = run(); !s.ok()) return s;
    ++calls;
    elapsed = Seconds(start, Clock::now());
  } while (elapsed < min_seconds || calls < 2);
  return CallTime{elapsed / calls, (ProcessCpuSeconds() - cpu_start) / calls};
}

// Where the int8 lower tier's time goes: each step's CPU microseconds per image (summed over the
// threads, so the column adds up to the cores' busy time) and its share, per batch size.
absl::Status PrintSteps(const model::QuantizedLowerTier& quantized, const model::MatrixF& images,
                        const std::vector<int>& batches, double min_seconds) {
  std::vector<model::QuantizedLowerTier::StepTimes> times(batches.size());
  std::vector<double> wall(batches.size(), 0.0);
  std::vector<int> calls(batches.size(), 0);
  for (size_t b = 0; b < batches.size(); ++b) {
    const model::MatrixF x = images.topRows(batches[b]);
    const auto start = Clock::now();
    do {
      absl::StatusOr<model::MatrixF> features = quantized.ProfiledFeatures(x, nullptr, &times[b]);
      if (!features.ok()) return features.status();
      ++calls[b];
      wall[b] = Seconds(start, Clock::now());
    } while (wall[b] < min_seconds);
  }
  std::printf(
      "\nWhere the int8 cpu time goes (CPU us per image, all threads; %% of the steps' "
      "total):\n%-58s",
      "step");
  for (int batch : batches) std::printf(" %9s %5d", "batch", batch);
  std::printf("\n");
  const size_t steps = times[0].names.size();
  std::vector<double> total(batches.size(), 0.0);
  for (size_t b = 0; b < batches.size(); ++b) {
    for (double seconds : times[b].seconds) total[b] += seconds;
  }
  auto per_image_us = [&](size_t b, double seconds) {
    return seconds / (static_cast<double>(calls[b]) * batches[b]) * 1e6;
  };
  for (size_t i = 0; i < steps; ++i) {
    std::printf("%-58s", times[0].names[i].substr(0, 58).c_str());
    for (size_t b = 0; b < batches.size(); ++b) {
      std::printf(" %9.1f %4.0f%%", per_image_us(b, times[b].seconds[i]),
                  100 * times[b].seconds[i] / total[b]);
    }
    std::printf("\n");
  }
  std::printf("%-58s", "all steps (CPU us per image)");
  for (size_t b = 0; b < batches.size(); ++b)
    std::printf(" %9.1f %5s", per_image_us(b, total[b]), "");
  std::printf("\n%-58s", "wall time x cores (us per image)");
  const int cores = omp_get_max_threads();
  for (size_t b = 0; b < batches.size(); ++b) {
    std::printf(" %9.1f %5s", per_image_us(b, wall[b] * cores), "");
  }
  std::printf("\n");
  return absl::OkStatus();
}

// The spec of --spec, or the built-in default.
absl::StatusOr<model::Architecture> ReadSpec() {
  const std::string spec = absl::GetFlag(FLAGS_spec);
  if (spec.empty()) return model::LowerTierSpec{}.ToArchitecture();
  absl::StatusOr<model::Architecture> read = model::ReadArchitecture(spec);
  if (!read.ok()) {
    return absl::Status(read.status().code(), absl::StrCat("--spec: ", read.status().message()));
  }
  return read;
}

absl::StatusOr<std::vector<int>> ParseBatches(Eigen::Index max_batch) {
  std::vector<int> batches;
  for (const std::string& text : absl::GetFlag(FLAGS_batches)) {
    int batch = 0;
    if (!absl::SimpleAtoi(text, &batch) || batch < 1 || batch > max_batch) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batches: ", text, " is not in 1..", max_batch));
    }
    batches.push_back(batch);
  }
  return batches;
}

// One way of computing the features: float (no backend), or int8 on a backend.
struct Path {
  std::string name;
  std::unique_ptr<fpga::Backend> backend;  // null: float
  std::unique_ptr<model::QuantizedLowerTier> quantized;
  double min_seconds;
};

// The --paths wanted, the int8 ones quantised on `calibration`; prints each backend and, once,
// the quantisation (the same on every backend).
absl::StatusOr<std::vector<Path>> MakePaths(const std::shared_ptr<const model::LowerTier>& tier,
                                            const model::MatrixF& calibration) {
  std::vector<Path> paths;
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const std::vector<std::string> wanted = absl::GetFlag(FLAGS_paths);
  auto is_wanted = [&](const std::string& name) {
    return std::find(wanted.begin(), wanted.end(), name) != wanted.end();
  };
  if (is_wanted("float")) paths.push_back({"float", nullptr, nullptr, seconds});
  bool described = false;
  for (const std::string name : {"cpu", "emu"}) {
    if (!is_wanted(name)) continue;
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(name);
    if (!backend.ok()) return backend.status();
    absl::StatusOr<model::QuantizedLowerTier> quantized =
        model::QuantizedLowerTier::Calibrate(tier, calibration, **backend);
    if (!quantized.ok()) return quantized.status();
    std::printf("int8 on %s: %s\n", name.c_str(), (*backend)->info().description.c_str());
    if (!described) {
      described = true;
      for (const std::string& line : quantized->DescribeQuantization())
        std::printf("  %s\n", line.c_str());
    }
    const bool emu = name == "emu";
    paths.push_back({std::string("int8 ") + name, *std::move(backend),
                     std::make_unique<model::QuantizedLowerTier>(*std::move(quantized)),
                     emu ? seconds / 3 : seconds});
  }
  return paths;
}

// The table: each path at each batch size, against the peak of its precision.
absl::Status PrintTable(const std::vector<Path>& paths, const model::LowerTier& tier,
                        const model::MatrixF& images, const std::vector<int>& batches,
                        const bench::MachinePeak& peak) {
  const double macs_per_image = static_cast<double>(tier.MacsPerSample());
  std::printf("\n%-10s %6s %12s %12s %14s %10s %8s %9s %10s\n", "path", "batch", "latency ms",
              "images/s", "MAC/image", "GMAC/s", "% peak", "CPU ms", "% peak/CPU");
  for (const Path& path : paths) {
    for (int batch : batches) {
      const model::MatrixF x = images.topRows(batch);
      absl::StatusOr<CallTime> latency = TimeCalls(
          [&]() -> absl::Status {
            if (path.quantized == nullptr) {
              const model::MatrixF features = tier.Features(x);
              if (features.rows() != batch) return absl::InternalError("wrong feature rows");
              return absl::OkStatus();
            }
            return path.quantized->Features(x).status();
          },
          path.min_seconds);
      if (!latency.ok()) return latency.status();
      const double gmacs = macs_per_image * batch / latency->wall * 1e-9;
      const double peak_rate =
          path.quantized == nullptr ? peak.fp32_all_cores : peak.int8_all_cores;
      // Per CPU-second against one core's peak: what the cores did while they ran this path, as
      // if the machine were idle (other processes' time slices are not in it).
      const double per_cpu_second = macs_per_image * batch / latency->cpu;
      std::printf("%-10s %6d %12.3f %12.1f %14.0f %10.2f %7.1f%% %9.3f %9.1f%%\n",
                  path.name.c_str(), batch, latency->wall * 1e3, batch / latency->wall,
                  macs_per_image, gmacs, peak_rate > 0 ? 100 * gmacs / (peak_rate * 1e-9) : 0.0,
                  latency->cpu * 1e3,
                  peak_rate > 0 ? 100 * per_cpu_second / (peak_rate / peak.cores) : 0.0);
    }
  }
  return absl::OkStatus();
}

absl::Status Run() {
  absl::StatusOr<model::Architecture> architecture = ReadSpec();
  if (!architecture.ok()) return architecture.status();
  absl::StatusOr<data::LabeledImages> train =
      data::Load("fashion-mnist:train", {0, absl::GetFlag(FLAGS_train_limit)});
  if (!train.ok()) return train.status();
  const model::MatrixF images = model::PixelsToMatrix(train->pixels, train->image_size());
  absl::StatusOr<std::vector<int>> batches = ParseBatches(images.rows());
  if (!batches.ok()) return batches.status();

  std::printf("strata-bench-lower: the lower tier end to end, float vs int8 backends\n\n");
  const bench::MachinePeak peak = bench::MeasureMachinePeak();
  bench::PrintMachinePeak(peak);

  const auto fit_start = Clock::now();
  absl::StatusOr<model::LowerTier> fitted = model::LowerTier::Fit(*architecture, images);
  if (!fitted.ok()) return fitted.status();
  const auto tier = std::make_shared<const model::LowerTier>(*std::move(fitted));
  std::printf("\nLower tier (fit on %td images in %.1f s):\n", images.rows(),
              Seconds(fit_start, Clock::now()));
  for (const std::string& line : tier->Describe()) std::printf("  %s\n", line.c_str());

  absl::StatusOr<std::vector<Path>> paths =
      MakePaths(tier, images.topRows(std::min<Eigen::Index>(2000, images.rows())));
  if (!paths.ok()) return paths.status();
  if (absl::Status s = PrintTable(*paths, *tier, images, *batches, peak); !s.ok()) return s;
  for (const Path& path : *paths) {
    if (path.name == "int8 cpu") {
      if (absl::Status s =
              PrintSteps(*path.quantized, images, *batches, absl::GetFlag(FLAGS_seconds));
          !s.ok()) {
        return s;
      }
    }
  }
  std::printf(
      "\nlatency: wall time of one Features call for the whole batch, host stages and int8\n"
      "(de)quantisation included; images/s = batch / latency. GMAC/s counts the matrix products\n"
      "only; %% peak is against the all-core peak (%d cores) of the path's precision. CPU ms: the\n"
      "process's CPU time per call (all threads); %% peak/CPU: MACs per CPU-second against one\n"
      "core's peak, i.e. %% peak as if the cores had not been shared (run with\n"
      "OMP_WAIT_POLICY=PASSIVE, or OpenMP's spinning counts as work). emu is a scalar C\n"
      "simulation of the FPGA kernels: its speed says nothing about the card's.\n",
      peak.cores);
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Lower-tier throughput and latency: float vs int8 on the cpu and emu backends.");
  absl::ParseCommandLine(argc, argv);
  if (const absl::Status status = strata::Run(); !status.ok()) {
    std::fprintf(stderr, "strata-bench-lower: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
