// The strata.v1.Strata gRPC service, on gRPC's callback API.
//
// Threading: gRPC's callback threads only parse, schedule and reply; they never run model work or
// wait on a lock held across model work. Predict and ExtractFeatures run on an inference WorkQueue
// (several threads); Update streams run on a single-threaded update WorkQueue, which serialises
// absorbs and solves (messages of concurrent streams interleave there, one message at a time).
// Readers take the ModelStore's current version without waiting, so a Predict never waits for an
// Update, and every request is answered by exactly one model version.
//
// Every RPC finishes exactly once. Before the store holds a model, every RPC fails with UNAVAILABLE.
#ifndef STRATA_SERVER_SERVICE_H_
#define STRATA_SERVER_SERVICE_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/env.h"
#include "server/model_store.h"
#include "server/update_log.h"
#include "server/work_queue.h"
#include "strata/v1/strata.grpc.pb.h"

namespace strata::server {

struct ServiceOptions {
  // Largest Predict / ExtractFeatures batch; larger batches fail with RESOURCE_EXHAUSTED. Update
  // messages may be larger (only the message-size limit bounds them); they are absorbed in chunks
  // of max_batch samples. Must be >= 1.
  int max_batch = 1024;
  // Threads running Predict and ExtractFeatures. More threads answer more concurrent requests at
  // once; each request's lower tier may itself use several threads.
  int inference_threads = 2;
};

// Where updates are made durable (see StrataService::EnableDurability and the Update and Snapshot
// contracts in strata.proto).
struct Durability {
  // The update log every accepted Update message is appended to. Not owned; must outlive the
  // service (its Drain()).
  UpdateLog* log = nullptr;
  // File system and directory snapshots are written to (the state directory). Not owned.
  Env* env = nullptr;
  std::string state_dir;
  // A snapshot is taken automatically once this many samples were absorbed since the last one.
  // 0 disables automatic snapshots. Default 100,000 (about 78 MB of log as pixels).
  uint64_t snapshot_every_samples = 100000;
};

// Maps an absl::Status to the grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

class StrataService final : public v1::Strata::CallbackService {
 public:
  // `store` is not owned and must outlive the service. The service serves whatever the store holds:
  // UNAVAILABLE until store->Load() succeeds.
  StrataService(ModelStore* store, ServiceOptions options);
  // Drains (see Drain()).
  ~StrataService() override;

  // Makes Updates durable from now on, and enables the Snapshot RPC. Must be called at most once,
  // before the store is loaded (so that no Update can be absorbed before it): the Update path reads
  // these settings without a lock once it has seen a loaded model.
  void EnableDurability(Durability durability);

  // Runs all scheduled work to completion (finishing the RPCs it belongs to) and stops the work
  // queues; RPCs arriving afterwards run their work inline. Call after grpc::Server::Shutdown() and
  // before the server is destroyed.
  void Drain();

  grpc::ServerUnaryReactor* ExtractFeatures(grpc::CallbackServerContext* context,
                                            const v1::ExtractFeaturesRequest* request,
                                            v1::ExtractFeaturesResponse* response) override;
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const v1::PredictRequest* request,
                                    v1::PredictResponse* response) override;
  grpc::ServerReadReactor<v1::UpdateRequest>* Update(grpc::CallbackServerContext* context,
                                                     v1::UpdateSummary* summary) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::Stats* response) override;
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context,
                                     const v1::SnapshotRequest* request,
                                     v1::SnapshotInfo* response) override;

 private:
  class UpdateReactor;

  absl::Status DoExtractFeatures(const v1::ExtractFeaturesRequest& request,
                                 v1::ExtractFeaturesResponse* response);
  absl::Status DoPredict(const v1::PredictRequest& request, v1::PredictResponse* response);

  // Makes the log durable through its last record and writes a snapshot of the statistics at that
  // position; then deletes the log segments both kept snapshots cover. Runs on the update queue
  // only (so no absorb is in progress and the statistics match the log position exactly).
  absl::Status TakeSnapshot(v1::SnapshotInfo* info);

  // Adds one finished call to `count` (ok or failed by `status`).
  void CountCall(v1::RpcCount* count, const grpc::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stats_mu_);

  ModelStore* const store_;
  const ServiceOptions options_;
  const absl::Time start_time_ = absl::Now();
  // Set once by EnableDurability() before the model is loaded; log == null means not durable.
  Durability durability_;
  // Samples absorbed since the last snapshot. Used on the update queue only.
  uint64_t samples_since_snapshot_ = 0;

  absl::Mutex stats_mu_;
  // The counters of GetStats; model_version and uptime_seconds are filled in when asked.
  v1::Stats stats_ ABSL_GUARDED_BY(stats_mu_);

  // Declared last: destroyed (drained) first, while everything their work uses is still alive.
  WorkQueue update_queue_{"update", 1};
  WorkQueue inference_queue_;
};

}  // namespace strata::server

#endif  // STRATA_SERVER_SERVICE_H_
