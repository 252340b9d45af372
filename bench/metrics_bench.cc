// strata-bench-metrics: what the request path pays for Prometheus metrics (server/metrics.h), in
// process, without gRPC or the model: the Predict hot path's hooks (ObserveRpc + ObservePredictBatch)
// per call, from 1 and 2 threads at once (contention on the same counters and buckets), and the
// time of one scrape (exposition of every series). Compare the per-call figure with a Predict's
// time (bench/serving_bench.sh, bench/metrics_overhead.sh) to get the relative overhead.
//
//   strata-bench-metrics [--calls=2000000]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/metrics.h"

ABSL_FLAG(int64_t, calls, 2000000, "Hot-path calls per thread.");

namespace {

using strata::server::Metrics;
using strata::server::RpcMethod;

// ns per call of the Predict finish hooks, with `threads` threads each making `calls` calls.
double HotPathNanos(Metrics& metrics, int threads, int64_t calls) {
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&metrics, calls, t] {
      for (int64_t i = 0; i < calls; ++i) {
        // Latencies spread over the buckets, as real ones are.
        const absl::Duration latency = absl::Microseconds(100 + (i * 37 + t) % 20000);
        metrics.ObservePredictBatch(1 + static_cast<int>(i % 64));
        metrics.ObserveRpc(RpcMethod::kPredict, absl::StatusCode::kOk, latency);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  // Wall time of all threads together, divided by calls per thread: per-call cost as one thread
  // sees it while the others run too.
  return absl::ToDoubleNanoseconds(absl::Now() - start) / static_cast<double>(calls);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t calls = absl::GetFlag(FLAGS_calls);
  Metrics metrics("bench");
  HotPathNanos(metrics, 1, calls / 10);  // warm-up: binds the (Predict, OK) counter
  const double one = HotPathNanos(metrics, 1, calls);
  const double two = HotPathNanos(metrics, 2, calls);
  std::printf("predict finish hooks (ObserveRpc + ObservePredictBatch), %lld calls per thread:\n",
              static_cast<long long>(calls));
  std::printf("  1 thread : %.1f ns per call\n", one);
  std::printf("  2 threads: %.1f ns per call per thread (same series: contended atomics)\n", two);
  std::vector<double> scrape_ms;
  size_t bytes = 0;
  for (int i = 0; i < 50; ++i) {
    const absl::Time start = absl::Now();
    bytes = metrics.Scrape().size();
    scrape_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::sort(scrape_ms.begin(), scrape_ms.end());
  std::printf("scrape (text exposition, no HTTP): median %.3f ms, %zu bytes\n", scrape_ms[25],
              bytes);
  return 0;
}
