#include "server/service.h"

#include <algorithm>
#include <climits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "server/inference.h"
#include "server/request_parsing.h"
#include "server/unary_call.h"
#include "server/update_reactor.h"
#include "server/validation.h"

namespace strata::server {
namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

int TransportMessageLimit(int max_message_bytes) {
  return static_cast<int>(std::min<int64_t>(int64_t{4} * std::max(max_message_bytes, 1), INT_MAX));
}

absl::Status CheckRequestSize(const grpc::ByteBuffer& request, int max_message_bytes) {
  if (!request.Valid()) {
    // No payload reached the service: gRPC's transport refused the message (over
    // TransportMessageLimit) or the call was cancelled; the client has gRPC's own status.
    return absl::ResourceExhaustedError(
        absl::StrCat("the request message did not arrive (over the transport's limit of ",
                     TransportMessageLimit(max_message_bytes), " bytes, or cancelled)"));
  }
  if (request.Length() > static_cast<size_t>(max_message_bytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request message of ", request.Length(),
                     " bytes is over the server's message-size limit of ", max_message_bytes,
                     " bytes (--max_message_bytes)"));
  }
  return absl::OkStatus();
}

namespace {

// `options` with the batcher reporting each batch it runs to the metrics, if both are on.
ServiceOptions WithMetricsHooks(ServiceOptions options) {
  if (options.metrics != nullptr && options.batching && !options.batcher.on_batch) {
    options.batcher.on_batch = [metrics = options.metrics](int images, int /*requests*/) {
      metrics->ObserveLowerTierBatch(images);
    };
  }
  return options;
}

}  // namespace

StrataService::StrataService(update::ModelStore* store, ServiceOptions options,
                             std::unique_ptr<update::UpdatePolicy> policy)
    : store_(store),
      options_(WithMetricsHooks(std::move(options))),
      auth_(options_.auth_token, options_.auth_all),
      meter_(options_.energy_table),
      inference_(store_, &meter_, options_.max_batch, options_.metrics),
      pipeline_(store_, &meter_,
                policy != nullptr ? std::move(policy)
                                  : *update::UpdatePolicy::Create("stream-end", {}, absl::Now()),
                options_.max_batch),
      stats_(options_.metrics),
      inference_queue_("inference", std::max(1, options_.inference_threads)) {
  if (options_.metrics != nullptr) {
    options_.metrics->SetStateSource([this] { return MetricsState(); });
  }
  if (options_.batching) {
    batcher_ = std::make_unique<PredictBatcher>(
        options_.batcher, [this](std::span<const PredictCall> calls, BatchScratch* scratch) {
          inference_.PredictBatch(calls, scratch,
                                  [this](const PredictCall& call, const grpc::Status& status) {
                                    FinishPredict(call, status);
                                  });
        });
  }
}

StrataService::~StrataService() {
  // Waits for a scrape in progress: none reads this service afterwards.
  if (options_.metrics != nullptr) options_.metrics->SetStateSource(nullptr);
  Drain();
}

void StrataService::EnableDurability(Durability durability) {
  pipeline_.EnableDurability(std::move(durability));
}

void StrataService::EnableReplication(update::Replica* replica, std::string replica_id) {
  replica_ = replica;
  replica_id_ = std::move(replica_id);
}

void StrataService::Drain() {
  if (batcher_ != nullptr) batcher_->Drain();
  inference_queue_.Drain();
  update_queue_.Drain();
}

template <typename Call>
bool StrataService::Admit(Call* call, const grpc::ByteBuffer& request, CallKind kind,
                          RpcMethod method, absl::Time start) {
  grpc::Status refused = auth_.Check(*call->context(), kind);
  if (refused.ok()) refused = ToGrpcStatus(CheckRequestSize(request, options_.max_message_bytes));
  if (refused.ok()) refused = ToGrpcStatus(call->Parse(request));
  if (refused.ok()) return true;
  FinishUnary(call, method, refused, start);
  return false;
}

template <typename Call>
void StrataService::FinishUnary(Call* call, RpcMethod method, grpc::Status status,
                                absl::Time start) {
  int samples = 0;
  if constexpr (requires { call->request().samples_size(); }) {
    samples = call->request().samples_size();
  }
  status = call->Seal(status);
  stats_.Finished(method, status, samples, start);
  call->Finish(status);
}

ServedState StrataService::MetricsState() {
  ServedState state;
  if (const std::shared_ptr<const update::ModelVersion> model = store_->Current();
      model != nullptr) {
    state.loaded = true;
    state.model_version = model->version;
    state.device = model->device();
  }
  state.energy_table = options_.energy_table_name;
  const update::StreamEnergy joules = MeterTotals(meter_);
  state.lower_tier_inference_joules = joules.lower_tier_inference;
  state.readout_inference_joules = joules.readout_inference;
  state.absorb_joules = joules.absorb;
  state.refresh_joules = joules.refresh;
  return state;
}

// ---- ExtractFeatures and Predict -----------------------------------------------------------------

grpc::ServerUnaryReactor* StrataService::ExtractFeatures(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::ExtractFeaturesRequest, v1::ExtractFeaturesResponse>;
  auto* call = new Call(context, reply);
  if (!Admit(call, *request, CallKind::kRead, RpcMethod::kExtractFeatures, start)) return call;
  inference_queue_.Schedule([this, call, start] {
    const grpc::Status status =
        call->context()->IsCancelled()
            ? grpc::Status::CANCELLED
            : ToGrpcStatus(inference_.ExtractFeatures(call->request(), &call->response()));
    FinishUnary(call, RpcMethod::kExtractFeatures, status, start);
  });
  return call;
}

grpc::ServerUnaryReactor* StrataService::Predict(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  auto* call = new PredictUnaryCall(context, reply);
  if (!Admit(call, *request, CallKind::kRead, RpcMethod::kPredict, start)) return call;
  if (call->request().min_log_position() > 0) {
    DispatchPredictAtPosition(call, start);
  } else {
    DispatchPredict(call, start);
  }
  return call;
}

void StrataService::DispatchPredictAtPosition(PredictUnaryCall* call, absl::Time start) {
  if (replica_ == nullptr) {
    FinishUnary(call, RpcMethod::kPredict,
                grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                             "min_log_position needs a server in replicated mode (--nats_servers)"),
                start);
    return;
  }
  // Until the call's deadline, and never unbounded.
  const absl::Time deadline =
      std::min(absl::FromChrono(call->context()->deadline()), absl::Now() + absl::Seconds(60));
  replica_->WhenServed(call->request().min_log_position(), deadline,
                       [this, call, start](absl::Status served) {
                         if (served.ok()) {
                           DispatchPredict(call, start);
                         } else {
                           FinishUnary(call, RpcMethod::kPredict, ToGrpcStatus(served), start);
                         }
                       });
}

void StrataService::DispatchPredict(PredictUnaryCall* call, absl::Time start) {
  if (batcher_ != nullptr) {
    batcher_->Enqueue({call->context(), &call->request(), &call->response(), call, nullptr, {}});
    return;
  }
  inference_queue_.Schedule([this, call, start] {
    const grpc::Status status =
        call->context()->IsCancelled()
            ? grpc::Status::CANCELLED
            : ToGrpcStatus(inference_.Predict(call->request(), &call->response()));
    FinishUnary(call, RpcMethod::kPredict, status, start);
  });
}

BatcherCounters StrataService::batcher_counters() const {
  return batcher_ != nullptr ? batcher_->Counters() : BatcherCounters{};
}

void StrataService::SubmitPredict(PredictCall call) {
  if (batcher_ != nullptr) {
    batcher_->Enqueue(call);
    return;
  }
  inference_queue_.Schedule([this, call] {
    call.done->OnPredictDone(call.context->IsCancelled()
                                 ? grpc::Status::CANCELLED
                                 : ToGrpcStatus(inference_.Predict(*call.request, call.response)));
  });
}

void StrataService::FinishPredict(const PredictCall& call, const grpc::Status& status) {
  if (call.done != nullptr) {
    call.done->OnPredictDone(status);
    return;
  }
  // Enqueue() stamps `enqueued` as the handler hands the call over: the call's start.
  FinishUnary(call.call, RpcMethod::kPredict, status, call.enqueued);
}

// ---- Update ------------------------------------------------------------------------------------

grpc::ServerReadReactor<grpc::ByteBuffer>* StrataService::Update(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* reply) {
  const UpdateCallContext env{&auth_, &pipeline_, &update_queue_, &stats_,
                              options_.max_message_bytes};
  return StartUpdateCall(env, context, reply);
}

// ---- Snapshot ----------------------------------------------------------------------------------

grpc::ServerUnaryReactor* StrataService::Snapshot(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::SnapshotRequest, v1::SnapshotInfo>;
  auto* call = new Call(context, reply);
  if (!Admit(call, *request, CallKind::kWrite, RpcMethod::kSnapshot, start)) return call;
  if (store_->Current() == nullptr) {
    FinishUnary(call, RpcMethod::kSnapshot, ToGrpcStatus(NotLoadedError()), start);
    return call;
  }
  // On the update queue: between two Update messages, so the statistics match the log position.
  update_queue_.Schedule([this, call, start] {
    // A call whose deadline passed while it waited is cancelled: skip the snapshot's work.
    if (call->context()->IsCancelled()) {
      FinishUnary(call, RpcMethod::kSnapshot, grpc::Status::CANCELLED, start);
      return;
    }
    absl::StatusOr<update::SnapshotResult> snapshot = pipeline_.TakeSnapshot();
    if (!snapshot.ok()) {
      if (!absl::IsFailedPrecondition(snapshot.status())) {
        STRATA_LOG(ERROR) << "Snapshot failed: " << snapshot.status();
      }
      FinishUnary(call, RpcMethod::kSnapshot, ToGrpcStatus(snapshot.status()), start);
      return;
    }
    v1::SnapshotInfo* info = &call->response();
    info->set_model_version(snapshot->model_version);
    info->set_log_position(snapshot->log_position);
    info->set_path(snapshot->path);
    info->set_bytes(snapshot->bytes);
    info->set_samples_seen(snapshot->samples_seen);
    info->set_seconds(snapshot->seconds);
    FinishUnary(call, RpcMethod::kSnapshot, grpc::Status::OK, start);
  });
  return call;
}

// ---- GetModelInfo and GetStats -----------------------------------------------------------------

grpc::ServerUnaryReactor* StrataService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::GetModelInfoRequest, v1::ModelInfo>;
  auto* call = new Call(context, reply);
  if (!Admit(call, *request, CallKind::kRead, RpcMethod::kGetModelInfo, start)) return call;
  std::shared_ptr<const update::ModelVersion> model = store_->Current();
  if (model == nullptr) {
    FinishUnary(call, RpcMethod::kGetModelInfo, ToGrpcStatus(NotLoadedError()), start);
    return call;
  }
  FillModelInfo(*model, options_.max_batch, &call->response());
  FinishUnary(call, RpcMethod::kGetModelInfo, grpc::Status::OK, start);
  return call;
}

grpc::ServerUnaryReactor* StrataService::GetStats(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::GetStatsRequest, v1::Stats>;
  auto* call = new Call(context, reply);
  if (!Admit(call, *request, CallKind::kRead, RpcMethod::kGetStats, start)) return call;
  std::shared_ptr<const update::ModelVersion> model = store_->Current();
  if (model == nullptr) {
    FinishUnary(call, RpcMethod::kGetStats, ToGrpcStatus(NotLoadedError()), start);
    return call;
  }
  v1::Stats* response = &call->response();
  *response = stats_.Counters();
  response->set_model_version(model->version);
  response->set_uptime_seconds(Seconds(absl::Now() - start_time_));
  response->set_device(model->device());
  FillUpdateStats(pipeline_, response);
  FillEnergyStats(meter_, options_.energy_table_name, response);
  const BatcherCounters batches = batcher_counters();
  response->set_predict_batches(batches.batches);
  response->set_predict_batch_requests(batches.requests);
  response->set_predict_batch_samples(batches.images);
  response->set_predict_multi_request_batches(batches.multi_request_batches);
  response->set_predict_largest_batch(batches.largest_batch_images);
  response->set_log_position(model->log_position);
  response->set_statistics_digest(model->statistics_digest);
  FillReplicaStats(response);
  FinishUnary(call, RpcMethod::kGetStats, grpc::Status::OK, start);
  return call;
}

void StrataService::FillReplicaStats(v1::Stats* stats) const {
  if (replica_ == nullptr) return;
  const update::ReplicaCounters replica = replica_->counters();
  stats->set_log_applied_position(replica.applied_position);
  stats->set_log_pending_entries(replica.pending_entries);
  stats->set_replica_id(replica_id_);
  stats->set_replica_samples_absorbed(replica.samples_absorbed);
  stats->set_replica_refreshes(replica.refreshes);
  stats->set_replica_snapshots_stored(replica.snapshots_stored);
}

}  // namespace strata::server
