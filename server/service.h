// The strata.v1.Strata gRPC service, on gRPC's callback API.
//
// Requests arrive as bytes: every method is registered raw (grpc::ByteBuffer in and out) and parsed
// here (server/request_parsing.h), so that a request gRPC cannot parse is INVALID_ARGUMENT naming the
// unreadable field, an unreadable Update message or sample is rejected and listed while the stream
// goes on, and a message over ServiceOptions::max_message_bytes is refused by the service itself
// (counted in GetStats like every other failure). gRPC's transport refuses only messages over
// TransportMessageLimit(), a multiple of that limit.
//
// Threading: gRPC's callback threads only parse, schedule and reply; they never run model work or
// wait on a lock held across model work. Predict runs on the PredictBatcher's workers
// (ServiceOptions::batching; server/batcher.h), or with batching off, like ExtractFeatures, on an
// inference WorkQueue (several threads); Update streams run on a single-threaded update WorkQueue, which serialises
// absorbs and solves (messages of concurrent streams interleave there, one message at a time).
// Readers take the ModelStore's current version without waiting, so a Predict never waits for an
// Update, and every request is answered by exactly one model version.
//
// Every RPC finishes exactly once. Before the store holds a model, every RPC fails with UNAVAILABLE.
//
// Models: the service serves one or more named models (NamedModel), each with its own store,
// energy meter, update pipeline and Predict batcher; the first is the default. Every request is
// routed by its `model` field (empty: the default; an unknown name: NOT_FOUND) and then runs the
// same code whatever the model's kind (image or text). The RPC counters are the service's.
//
// Deadlines: a call whose deadline passes is cancelled by gRPC; work that has not started yet checks
// context->IsCancelled() first and gives up (Predict / ExtractFeatures before computing, each Update
// message before it is validated and absorbed, Snapshot before writing), finishing with CANCELLED
// (the client sees DEADLINE_EXCEEDED). Work already running finishes: one batch is bounded by
// max_batch.
//
// Authentication: ServiceOptions::auth_token (server/auth.h) gates Update and Snapshot, and with
// auth_all every call; a refused call fails with UNAUTHENTICATED before any of its work is done.
//
// Energy: every request's model work is counted (fpga::OpCounts from the shapes) and priced by an
// EnergyMeter (update/energy_meter.h): lower-tier inference, readout inference (Predict and the
// prequential predictions of Update), absorbs and refreshes. Predict / ExtractFeatures replies and
// UpdateSummary carry their own joules; GetStats the cumulative ones.
//
// Update: the reactor is a thin adapter over the update pipeline (update/pipeline.h), which does
// the work of each message (validate, log, predict for the prequential error, absorb, ask the
// UpdatePolicy of update/update_policy.h whether to refresh) and of the stream's end. The default
// policy, "stream-end", refreshes once when a stream ends. docs/operations.md, "Energy and update
// policies".
#ifndef STRATA_SERVER_SERVICE_H_
#define STRATA_SERVER_SERVICE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fpga/energy.h"
#include "grpcpp/grpcpp.h"
#include "server/auth.h"
#include "server/batcher.h"
#include "server/inference.h"
#include "server/metrics.h"
#include "server/reports.h"
#include "server/work_queue.h"
#include "strata/v1/strata.grpc.pb.h"
#include "update/energy_meter.h"
#include "update/model_store.h"
#include "update/pipeline.h"
#include "update/replica.h"
#include "update/update_policy.h"

namespace strata::server {

struct ServiceOptions {
  // Largest request message, in bytes (strata-server --max_message_bytes). A unary request over it
  // fails with RESOURCE_EXHAUSTED; an Update message over it is rejected and listed, and the stream
  // goes on. Must be >= 1.
  int max_message_bytes = 64 << 20;
  // Largest Predict / ExtractFeatures batch; larger batches fail with RESOURCE_EXHAUSTED. Update
  // messages may be larger (only the message-size limit bounds them); they are absorbed in chunks
  // of max_batch samples. Must be >= 1.
  int max_batch = 1024;
  // Threads running Predict and ExtractFeatures. More threads answer more concurrent requests at
  // once; each request's lower tier may itself use several threads.
  int inference_threads = 2;
  // The energy table work is priced with, and its name (reported by GetStats). Default: "cpu"
  // (fpga::HostEnergyTable(): Horowitz's 45 nm figures), matching the float CPU lower tier.
  std::string energy_table_name = "cpu";
  fpga::EnergyTable energy_table = fpga::HostEnergyTable();
  // How the lower tier computes, for GetStats before a model is loaded ("float": the Eigen fp32
  // path). Once loaded, GetStats and GetModelInfo report the served version's ModelVersion::device,
  // and its lower-tier work is priced with ModelVersion::lower_tier_energy_table.
  std::string device = "float";
  // Who may call what (server/auth.h): by default nobody needs a token. With a token, Update and
  // Snapshot need it; with all_rpcs, every strata.v1.Strata call does.
  std::string auth_token;
  bool auth_all = false;
  // Dynamic batching of Predict (server/batcher.h): concurrent requests are gathered into one
  // lower-tier batch by a PredictBatcher with `batcher`'s limits instead of each running on the
  // inference queue. Default off here (strata-server turns it on, --batching); ExtractFeatures is
  // never batched.
  bool batching = false;
  BatcherOptions batcher;
  // Where the service reports its Prometheus metrics (server/metrics.h): every finished RPC with
  // its code and latency, Predict batch sizes, Update messages, samples and refreshes; model
  // version, device and joules are read from the service at scrape time. Not owned; must outlive
  // the service. Default null: no metrics.
  Metrics* metrics = nullptr;
  // The default model's name (strata-server --model_name, or the first --model): what a request's
  // `model` field names besides empty. Models added with AddModel have their own names.
  std::string model_name = "strata";
};

// One model the service serves, and what the service keeps for it. Owned by the service; the
// store is not (it must outlive the service).
struct NamedModel {
  NamedModel(std::string name, update::ModelStore* store, const ServiceOptions& options,
             std::unique_ptr<update::UpdatePolicy> policy);

  const std::string name;
  update::ModelStore* const store;
  // Prices this model's work; its totals are this model's GetStats energy. Thread-safe.
  update::EnergyMeter meter;
  // The model work of its ExtractFeatures and Predict (batched or not).
  Inference inference;
  // This model's Update path: streams, policy, log, snapshots (run on the update queue only).
  update::UpdatePipeline pipeline;
  // Null with batching off. A batch holds one model's requests (one version's lower tier).
  std::unique_ptr<PredictBatcher> batcher;
};

// Where updates are made durable (see StrataService::EnableDurability and the Update and Snapshot
// contracts in strata.proto). The log must outlive the service (its Drain()).
using update::Durability;

// The message-size limit to give gRPC's transport (grpc::ServerBuilder::SetMaxReceiveMessageSize)
// for a service limit of `max_message_bytes`: four times it, at most INT_MAX. Messages between the
// two reach the service, which refuses them with a clear reason and counts them; gRPC refuses larger
// ones itself (RESOURCE_EXHAUSTED), which bounds the memory one message can take.
int TransportMessageLimit(int max_message_bytes);

// OK if a unary request of `request`'s bytes may be parsed under a service limit of
// `max_message_bytes`; RESOURCE_EXHAUSTED naming the limit if it is over it, or if no payload
// arrived (gRPC's transport refused it, over TransportMessageLimit(), or the call was cancelled).
// Every front-end (strata.v1, KServe v2) admits its unary requests with it.
absl::Status CheckRequestSize(const grpc::ByteBuffer& request, int max_message_bytes);

// The strata.v1.Strata service with every method raw (see the top of this file).
using RawStrataService = v1::Strata::WithRawCallbackMethod_ExtractFeatures<
    v1::Strata::WithRawCallbackMethod_Predict<v1::Strata::WithRawCallbackMethod_Update<
        v1::Strata::WithRawCallbackMethod_Snapshot<v1::Strata::WithRawCallbackMethod_GetModelInfo<
            v1::Strata::WithRawCallbackMethod_GetStats<v1::Strata::Service>>>>>>;

class StrataService final : public RawStrataService {
 public:
  // Serves `store` as the default model, named options.model_name. `store` is not owned and must
  // outlive the service. The service serves whatever the store holds: UNAVAILABLE until
  // store->Load() succeeds.
  // `policy` decides the refreshes after each Update message; null selects "stream-end" (refresh
  // once when each stream ends, if it accepted anything), as UpdatePolicy::Create("stream-end").
  StrataService(update::ModelStore* store, ServiceOptions options,
                std::unique_ptr<update::UpdatePolicy> policy = nullptr);

  // Serves `store` (not owned; it must outlive the service) as the model `name`, beside the others,
  // with its own update policy (null: "stream-end"). Call before the service is registered with a
  // gRPC server: the models are read without a lock afterwards. INVALID_ARGUMENT for an empty or
  // taken name.
  absl::Status AddModel(std::string name, update::ModelStore* store,
                        std::unique_ptr<update::UpdatePolicy> policy = nullptr);

  // The model a request's `model` field names: the default for empty, NOT_FOUND naming it and the
  // served models otherwise. Thread-safe (after the models were added).
  absl::StatusOr<NamedModel*> Route(absl::string_view name) const;
  // The served models, the default first.
  const std::vector<std::unique_ptr<NamedModel>>& models() const { return models_; }
  // Drains (see Drain()).
  ~StrataService() override;

  // Makes the default model's Updates durable from now on, and enables its Snapshot RPC. Must be
  // called at most once per model, before its store is loaded (so that no Update can be absorbed
  // before it): the Update path reads these settings without a lock once it has seen a loaded
  // model. The overload names the model (NOT_FOUND if it is not served).
  void EnableDurability(Durability durability);
  absl::Status EnableDurability(absl::string_view model, Durability durability);

  // Replicated mode (update/replica.h, docs/replication.md): Predict may wait for `replica` to
  // reach a log position (PredictRequest.min_log_position), and GetStats reports its figures and
  // `replica_id`. Call at most once, before the store is loaded; `replica` is not owned and must
  // outlive the service's Drain(). Without it, Predict refuses min_log_position > 0.
  void EnableReplication(update::Replica* replica, std::string replica_id);

  // Runs all scheduled work to completion (finishing the RPCs it belongs to) and stops the work
  // queues; RPCs arriving afterwards run their work inline. Call after grpc::Server::Shutdown() and
  // before the server is destroyed.
  void Drain();

  // The meter the default model's work is charged to (a replica charges its follower's work here).
  update::EnergyMeter* meter() { return &models_.front()->meter; }

  // The batchers' cumulative figures over every model (all 0 with batching off), for metrics.
  // Thread-safe.
  BatcherCounters batcher_counters() const;

  // Runs a Predict for another protocol front-end (KServe's ModelInfer) exactly as Predict runs
  // its own: routed by call.request->model() (an unknown name finishes it NOT_FOUND), through the
  // model's batcher (or, with batching off, the inference queue), the served version and the
  // energy meter, validating each sample as Predict does. `call.done` must be set and
  // `call.call` null; call.done->OnPredictDone() is called exactly once, and the context, request
  // and response must stay alive until then. Not counted in GetStats' RPC counters nor as a
  // strata.v1 Predict in the metrics: the front-end counts its own calls. Thread-safe.
  void SubmitPredict(PredictCall call);

  grpc::ServerUnaryReactor* ExtractFeatures(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request,
                                            grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* reply) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* Update(grpc::CallbackServerContext* context,
                                                    grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* reply) override;
  grpc::ServerUnaryReactor* Snapshot(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* reply) override;

 private:
  // Finishes a batched Predict (FinishUnary).
  void FinishPredict(const PredictCall& call, const grpc::Status& status);
  // Hands an admitted Predict to its model's batcher or the inference queue.
  void DispatchPredict(NamedModel& named, PredictUnaryCall* call, absl::Time start);
  // Dispatches the Predict once the replica serves its min_log_position (replicated mode), or
  // finishes it with the reason it cannot be.
  void DispatchPredictAtPosition(NamedModel& named, PredictUnaryCall* call, absl::Time start);
  // GetStats' replicated-mode figures (none without a replica).
  void FillReplicaStats(v1::Stats* stats) const;
  // Creates a served model (its batcher runs the model's Inference::PredictBatch).
  std::unique_ptr<NamedModel> MakeModel(std::string name, update::ModelStore* store,
                                        std::unique_ptr<update::UpdatePolicy> policy);

  // Admits a unary call of a raw method (`Call` is a UnaryCall): its bearer token, the
  // message-size limit, parsing `request` into call->request(), then routing it by its `model`
  // field. If the call may not proceed it is finished (FinishUnary: UNAUTHENTICATED,
  // RESOURCE_EXHAUSTED, INVALID_ARGUMENT or NOT_FOUND) and null is returned; else its model.
  template <typename Call>
  NamedModel* Admit(Call* call, const grpc::ByteBuffer& request, CallKind kind, RpcMethod method,
                    absl::Time start);
  // Finishes a unary call that started at `start` with `status` (OK: with its response), after
  // counting it in GetStats and the metrics (stats_). Runs at most once per call;
  // `call` is gone afterwards.
  template <typename Call>
  void FinishUnary(Call* call, RpcMethod method, grpc::Status status, absl::Time start);
  // What Metrics reads at scrape time: the default model's version, device and cumulative joules.
  std::vector<ServedState> MetricsState();

  const ServiceOptions options_;
  // Checks the bearer token of each call (a no-op without one).
  const CallAuthenticator auth_;
  const absl::Time start_time_ = absl::Now();

  // Replicated mode (EnableReplication); null otherwise. Set before the store is loaded.
  update::Replica* replica_ = nullptr;
  std::string replica_id_;

  // The RPC counters of GetStats; model_version, uptime_seconds and the update, energy and policy
  // figures are filled in when asked (from the model's pipeline and meter).
  CallStats stats_;

  // Declared last: destroyed (drained) first, while everything their work uses is still alive.
  WorkQueue update_queue_{"update", 1};
  WorkQueue inference_queue_;
  // The served models, the default first; written only before serving (AddModel). Each holds its
  // batcher, so they are destroyed before the queues (Drain() has stopped everything by then).
  std::vector<std::unique_ptr<NamedModel>> models_;
};

}  // namespace strata::server

#endif  // STRATA_SERVER_SERVICE_H_
