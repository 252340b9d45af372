// Dynamic batching of concurrent Predict calls.
//
// Concurrent Predict requests (each of 1..max_batch images) are queued; a batch is formed when
// `max_images` images are waiting or the oldest queued request has waited `max_delay`, and is
// handed to a RunBatch function on one of the batcher's worker threads, which runs the whole batch
// through the lower tier and the readout once and finishes every call in it. Batching amortises
// what a single image pays per lower-tier call (backend dispatch, weight reads, the readout's
// GEMM), so many small concurrent requests cost close to one large one.
//
// Batch formation, exactly:
//   - Requests are taken in arrival order (FIFO); a batch is a prefix of the queue.
//   - A worker takes a batch once the queued images reach max_images, or the oldest queued request
//     has waited max_delay (max_delay 0: immediately, taking only what is already queued), or the
//     batcher is draining, or (latency_aware, the default) no company is coming: no other worker
//     is running a batch, or requests arrive less often than once per max_delay (the mean gap
//     between arrivals, an exponential moving average, is longer than max_delay). So a request
//     that reaches an idle server runs at once, and only requests that arrive while the server is
//     busy with a steady stream wait to be batched.
//   - A batch holds whole requests: requests are added while the total stays <= max_images, and a
//     batch always holds at least one request (so a request larger than max_images is a batch of
//     its own; the service bounds requests by its max_batch).
//   - When other workers are idle too, a worker takes only its share of the queued images
//     (queued / idle workers, rounded up), so that every core gets work: the others take the rest
//     by the same rules (at once when the batch was formed by the delay, since the rest's oldest
//     request has waited as long).
//
// Threading: `workers` threads take batches, so one batch is computed while the next one forms (on
// 2 cores, 2 workers keep both busy), each running its batch's lower tier on `threads_per_worker`
// OpenMP threads (default 1), or on every core when its batch is large and nothing else is waiting
// or running (`alone_threads`).
// Enqueue() only appends under a mutex and never runs model work, so it may be called from gRPC
// callback threads. The queue and each worker's batch vector keep their capacity, so a steady
// stream of requests allocates nothing in the batcher itself.
#ifndef STRATA_SERVER_BATCHER_H_
#define STRATA_SERVER_BATCHER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "model/feature_extractor.h"
#include "model/tensor.h"
#include "server/unary_call.h"
#include "strata/v1/strata.pb.h"

namespace strata::server {

struct BatcherOptions {
  // A batch is taken as soon as this many images are queued; batches hold at most this many
  // images unless a single request is larger. >= 1. Default 64: the lower tier's chunk per thread,
  // beyond which a batch no longer gets cheaper per image.
  int max_images = 64;
  // How long the oldest queued request may wait for others to join its batch. >= 0. 0: no waiting
  // (a batch is whatever is queued when a worker is free). Default 500 us: below the latency of one
  // gRPC round trip on loopback, long enough at concurrency >= 8 to gather several requests.
  absl::Duration max_delay = absl::Microseconds(500);
  // Wait for max_delay only while company is coming (see the rules above): another worker is
  // running a batch and the mean gap between arrivals is shorter than max_delay. Default true:
  // measured with bench/serving_bench.sh, concurrency 1 then pays no batching delay while
  // concurrency 32 keeps its batches (docs/operations.md, "Dynamic batching"). false: every
  // request may wait max_delay, even at an idle server.
  bool latency_aware = true;
  // Worker threads forming and running batches, >= 1. Default 2 (one per core here).
  int workers = 2;
  // OpenMP threads each worker's batch may use (omp_set_num_threads on the worker), >= 1. Default
  // 1: the workers are the parallelism. With more, every worker opens its own OpenMP team inside
  // the int8 GEMMs, the teams and gRPC's threads oversubscribe the cores, and each parallel region
  // waits for a descheduled thread: measured at concurrency 32 on 2 cores, 2 threads per worker
  // served 139 Predicts/s where 1 served 1,970 (docs/operations.md, "Dynamic batching").
  int threads_per_worker = 1;
  // OpenMP threads for a batch of at least `alone_min_images` images taken while no other request
  // is queued and every other worker is idle, >= 1; 0: every core (omp_get_num_procs()). A single
  // client sending large requests one after another would otherwise run on one core: measured in
  // the demo (256-image requests) 3,600 images/s with 1 thread against 6,000 with 2.
  int alone_threads = 0;
  int alone_min_images = 64;
  // Called on the worker thread when it takes a batch, before running it, with the batch's image
  // and request counts (for metrics). May be empty. Must be thread-safe and cheap.
  std::function<void(int images, int requests)> on_batch;
};

// One queued Predict call. Plain pointers owned by gRPC (they live until the reactor finishes), so
// queueing one copies a few words and allocates nothing.
using PredictUnaryCall = UnaryCall<v1::PredictRequest, v1::PredictResponse>;

// Told the outcome of a Predict that another protocol front-end submitted
// (StrataService::SubmitPredict; KServe's ModelInfer, server/kserve_service.h).
class PredictDone {
 public:
  // Called exactly once, on the thread that ran the Predict, when the response is filled (OK) or
  // the Predict failed. The call's request and response may be released from here on.
  virtual void OnPredictDone(const grpc::Status& status) = 0;

 protected:
  ~PredictDone() = default;
};

struct PredictCall {
  grpc::CallbackServerContext* context = nullptr;
  const v1::PredictRequest* request = nullptr;
  v1::PredictResponse* response = nullptr;
  // Who finishes the call: a strata.v1 Predict's own call, which owns the three above and
  // finishes the RPC (server/unary_call.h), or, for another front-end's Predict, `done` (then
  // `call` is null).
  PredictUnaryCall* call = nullptr;
  PredictDone* done = nullptr;
  absl::Time enqueued;  // set by PredictBatcher::Enqueue
};

// Buffers a RunBatch function may reuse from batch to batch; one per worker (and a fresh one for
// calls run inline after Drain()). The batcher never reads them.
struct BatchScratch {
  // The batch's samples: image rows, or texts for a text model.
  model::SampleBatch inputs;
  model::MatrixF scores;
  // Per call of the batch: its first row in `inputs`, or -1 if it was finished before compute.
  std::vector<int> first_row;
};

// Cumulative figures, for GetStats and metrics. A batch is counted when it is taken, before any of
// its calls is finished.
struct BatcherCounters {
  uint64_t batches = 0;
  uint64_t requests = 0;
  uint64_t images = 0;
  // Batches that held more than one request, and the largest batch so far (images).
  uint64_t multi_request_batches = 0;
  uint64_t largest_batch_images = 0;
};

class PredictBatcher {
 public:
  // Runs one batch: must finish every call in `calls` (exactly once each), on the calling thread or
  // later. Calls are in arrival order.
  using RunBatch =
      absl::AnyInvocable<void(std::span<const PredictCall> calls, BatchScratch* scratch)>;

  // Starts options.workers threads. `options` must be valid (max_images >= 1, max_delay >= 0,
  // workers >= 1); invalid values are clamped to the nearest valid one.
  PredictBatcher(BatcherOptions options, RunBatch run);
  // Drains.
  ~PredictBatcher();
  PredictBatcher(const PredictBatcher&) = delete;
  PredictBatcher& operator=(const PredictBatcher&) = delete;

  // Queues `call` (its request must stay alive until RunBatch finished it). After Drain() started,
  // runs it inline as a batch of one instead, so no call is ever dropped. Thread-safe.
  void Enqueue(PredictCall call);

  // Runs every queued call (without waiting for max_delay), then stops and joins the workers.
  // Idempotent. Must not be called from a worker (i.e. from RunBatch).
  void Drain();

  BatcherCounters Counters() const;
  const BatcherOptions& options() const { return options_; }

 private:
  void Work();
  bool FullOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NotEmptyOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True if a batch may be taken now without waiting for max_delay: full, draining, or (with
  // latency_aware) no company coming.
  bool ReadyToTake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CompanyComing() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(int images, int requests);

  const BatcherOptions options_;
  RunBatch run_;

  mutable absl::Mutex mu_;
  std::vector<PredictCall> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_images_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Workers waiting for a batch (not running one).
  int64_t idle_workers_ ABSL_GUARDED_BY(mu_) = 0;
  // When the last request arrived, and the moving average of the gaps between arrivals (each gap
  // capped at kGapCapDelays x max_delay, so a long quiet spell is forgotten within a few
  // arrivals); infinite until two requests have arrived.
  absl::Time last_arrival_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration mean_arrival_gap_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();

  mutable absl::Mutex counters_mu_;
  BatcherCounters counters_ ABSL_GUARDED_BY(counters_mu_);

  std::vector<std::thread> workers_;  // written only by the constructor and Drain()
};

}  // namespace strata::server

#endif  // STRATA_SERVER_BATCHER_H_
