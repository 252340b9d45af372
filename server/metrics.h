// Prometheus metrics of one strata-server: what it was asked, how it answered, what it learnt and
// what that cost. Served over HTTP (GET /metrics, Prometheus text format 0.0.4) by prometheus-cpp's
// Exposer when Serve() is called; docs/operations.md, "Metrics", lists every series.
//
// Two kinds of series:
//   - pushed, on the request path: RPC counts and latencies, batch sizes, absorbed samples,
//     refreshes. Every label combination the hot path uses is bound once (at construction, or on
//     first use of an RPC/status-code pair) and cached, so an observation allocates nothing: a
//     counter is an atomic add, a histogram a bucket search and a short critical section under its
//     own mutex (prometheus-cpp 1.0 keeps a histogram's buckets, count and sum consistent that way).
//     strata-bench-metrics measures the cost per call.
//   - pulled, at scrape time, from the StateSource the service registers: each served model's
//     version, device, and joules by tier and phase, labelled model="NAME". They are read from the
//     same place GetStats reads them, so the two always agree, and the request path pays nothing
//     for them.
//
// No singleton: the server creates one Metrics and hands a pointer to whoever reports into it
// (ServiceOptions::metrics). Thread-safe: every method may be called concurrently.
#ifndef STRATA_SERVER_METRICS_H_
#define STRATA_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/upper_tier.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace strata::server {

// The strata.v1.Strata methods, then the KServe v2 inference.GRPCInferenceService methods
// (server/kserve_service.h), as the "method" label spells them (their names do not overlap).
enum class RpcMethod {
  kPredict,
  kExtractFeatures,
  kUpdate,
  kGetModelInfo,
  kGetStats,
  kSnapshot,
  kServerLive,
  kServerReady,
  kModelReady,
  kServerMetadata,
  kModelMetadata,
  kModelInfer,
  kRepositoryIndex,
};
inline constexpr int kNumRpcMethods = 13;
const char* RpcMethodName(RpcMethod method);

// What the service reports at scrape time, for one served model.
struct ServedState {
  std::string model;           // the model's name (strata-server --model_name / --model)
  bool loaded = false;         // false: no model yet (model version and device are not exported)
  uint64_t model_version = 0;  // ModelVersion::version of the served version
  std::string device;          // ModelVersion::device: float, cpu, emu or xrt
  std::string energy_table;    // ServiceOptions::energy_table_name
  // Cumulative joules (the figures of GetStats' `energy`).
  double lower_tier_inference_joules = 0;
  double readout_inference_joules = 0;
  double absorb_joules = 0;
  double refresh_joules = 0;
};

class Metrics {
 public:
  // Latency buckets of strata_rpc_latency_seconds: 100 us to 10 s, 1-2.5-5 per decade.
  static const std::vector<double>& LatencyBuckets();
  // Buckets of the batch-size histograms: powers of two, 1 to 4096 images.
  static const std::vector<double>& BatchBuckets();

  // Registers every family. `version` is the build's version (strata_build_info).
  explicit Metrics(const std::string& version);
  // Stops the HTTP endpoint (if serving) before the registry goes.
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Starts the HTTP endpoint on `address` ("host:port"; port 0 picks a free port; IPv6 as
  // "[::1]:port") with two civetweb threads, serving GET /metrics. Returns the bound port.
  // INVALID_ARGUMENT if already serving; UNAVAILABLE if the address cannot be bound.
  absl::StatusOr<int> Serve(const std::string& address);

  // The exposition a scrape would return now (text format), without HTTP.
  std::string Scrape() const;

  // ---- pushed ----------------------------------------------------------------------------------
  // One finished RPC: strata_rpc_requests_total{method,code} += 1 and its latency, from when the
  // service's handler was entered to when it called Finish().
  void ObserveRpc(RpcMethod method, absl::StatusCode code, absl::Duration latency);
  // A Predict request's image count (strata_predict_batch_images), observed for every request that
  // reached the model, whatever its outcome.
  void ObservePredictBatch(int images);
  // Rows of one lower-tier run (strata_lower_tier_batch_rows): with dynamic batching, several
  // requests' images run as one batch; the batcher reports each batch it runs.
  void ObserveLowerTierBatch(int rows);
  // One Update message absorbed: its accepted and rejected samples.
  void AddUpdateMessage(int absorbed, int rejected);
  // One refresh (a new upper-tier version published), by the path the solve took.
  void AddRefresh(model::RefreshPath path);
  // strata_up: 1 while the server reports SERVING on its health service, else 0.
  void SetServing(bool serving);

  // ---- pulled ----------------------------------------------------------------------------------
  // One ServedState per served model (none: no model series, energy not exported either).
  using StateSource = std::function<std::vector<ServedState>()>;
  // Sets (or, with nullptr, clears) the function scrapes call for the pulled series. Clearing
  // waits for a scrape in progress, so the source's owner may be destroyed right after. The
  // source must not call into this Metrics.
  void SetStateSource(StateSource source) ABSL_LOCKS_EXCLUDED(source_mu_);

 private:
  class StateCollectable;
  friend class StateCollectable;
  std::vector<ServedState> ReadState() const ABSL_LOCKS_EXCLUDED(source_mu_);

  static constexpr int kNumCodes = 17;  // absl::StatusCode 0..16, the gRPC codes

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<StateCollectable> state_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  // requests_ bound to (method, code), created on first use: unused codes stay out of scrapes.
  std::array<std::array<std::atomic<prometheus::Counter*>, kNumCodes>, kNumRpcMethods>
      requests_by_{};
  std::array<prometheus::Histogram*, kNumRpcMethods> latency_{};
  prometheus::Histogram* predict_batch_ = nullptr;
  prometheus::Histogram* lower_tier_batch_ = nullptr;
  prometheus::Counter* samples_absorbed_ = nullptr;
  prometheus::Counter* samples_rejected_ = nullptr;
  prometheus::Counter* update_messages_ = nullptr;
  prometheus::Counter* refreshes_refactor_ = nullptr;
  prometheus::Counter* refreshes_factor_update_ = nullptr;
  prometheus::Gauge* up_ = nullptr;

  mutable absl::Mutex source_mu_;
  StateSource source_ ABSL_GUARDED_BY(source_mu_);

  absl::Mutex exposer_mu_;
  std::unique_ptr<prometheus::Exposer> exposer_ ABSL_GUARDED_BY(exposer_mu_);
};

}  // namespace strata::server

#endif  // STRATA_SERVER_METRICS_H_
