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

NamedModel::NamedModel(std::string name, update::ModelStore* store, const ServiceOptions& options,
                       std::unique_ptr<update::UpdatePolicy> policy)
    : name(std::move(name)),
      store(store),
      meter(options.energy_table),
      inference(store, &meter, options.max_batch, options.metrics),
      pipeline(store, &meter,
               policy != nullptr ? std::move(policy)
                                 : *update::UpdatePolicy::Create("stream-end", {}, absl::Now()),
               options.max_batch) {}

StrataService::StrataService(update::ModelStore* store, ServiceOptions options,
                             std::unique_ptr<update::UpdatePolicy> policy)
    : options_(WithMetricsHooks(std::move(options))),
      auth_(options_.auth_token, options_.auth_all),
      stats_(options_.metrics),
      inference_queue_("inference", std::max(1, options_.inference_threads)) {
  models_.push_back(MakeModel(options_.model_name, store, std::move(policy)));
  if (options_.metrics != nullptr) {
    options_.metrics->SetStateSource([this] { return MetricsState(); });
  }
}

std::unique_ptr<NamedModel> StrataService::MakeModel(std::string name, update::ModelStore* store,
                                                     std::unique_ptr<update::UpdatePolicy> policy) {
  auto named = std::make_unique<NamedModel>(std::move(name), store, options_, std::move(policy));
  if (options_.batching) {
    NamedModel* model = named.get();
    named->batcher = std::make_unique<PredictBatcher>(
        options_.batcher, [this, model](std::span<const PredictCall> calls, BatchScratch* scratch) {
          model->inference.PredictBatch(
              calls, scratch, [this](const PredictCall& call, const grpc::Status& status) {
                FinishPredict(call, status);
              });
        });
  }
  return named;
}

absl::Status StrataService::AddModel(std::string name, update::ModelStore* store,
                                     std::unique_ptr<update::UpdatePolicy> policy) {
  if (name.empty()) return absl::InvalidArgumentError("a served model needs a name");
  for (const auto& model : models_) {
    if (model->name == name) {
      return absl::InvalidArgumentError(absl::StrCat("model \"", name, "\" is served twice"));
    }
  }
  models_.push_back(MakeModel(std::move(name), store, std::move(policy)));
  return absl::OkStatus();
}

absl::StatusOr<NamedModel*> StrataService::Route(absl::string_view name) const {
  if (name.empty()) return models_.front().get();
  std::string served;
  for (const auto& model : models_) {
    if (model->name == name) return model.get();
    absl::StrAppend(&served, served.empty() ? "" : ", ", "\"", model->name, "\"");
  }
  return absl::NotFoundError(
      absl::StrCat("model: \"", name, "\" is not served here (served: ", served, ")"));
}

StrataService::~StrataService() {
  // Waits for a scrape in progress: none reads this service afterwards.
  if (options_.metrics != nullptr) options_.metrics->SetStateSource(nullptr);
  Drain();
}

void StrataService::EnableDurability(Durability durability) {
  models_.front()->pipeline.EnableDurability(std::move(durability));
}

absl::Status StrataService::EnableDurability(absl::string_view model, Durability durability) {
  absl::StatusOr<NamedModel*> named = Route(model);
  if (!named.ok()) return named.status();
  (*named)->pipeline.EnableDurability(std::move(durability));
  return absl::OkStatus();
}

void StrataService::EnableReplication(update::Replica* replica, std::string replica_id) {
  replica_ = replica;
  replica_id_ = std::move(replica_id);
}

void StrataService::Drain() {
  for (const auto& model : models_) {
    if (model->batcher != nullptr) model->batcher->Drain();
  }
  inference_queue_.Drain();
  update_queue_.Drain();
}

template <typename Call>
NamedModel* StrataService::Admit(Call* call, const grpc::ByteBuffer& request, CallKind kind,
                                 RpcMethod method, absl::Time start) {
  grpc::Status refused = auth_.Check(*call->context(), kind);
  if (refused.ok()) refused = ToGrpcStatus(CheckRequestSize(request, options_.max_message_bytes));
  if (refused.ok()) refused = ToGrpcStatus(call->Parse(request));
  if (refused.ok()) {
    absl::StatusOr<NamedModel*> model = Route(call->request().model());
    if (model.ok()) return *model;
    refused = ToGrpcStatus(model.status());
  }
  FinishUnary(call, method, refused, start);
  return nullptr;
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

std::vector<ServedState> StrataService::MetricsState() {
  std::vector<ServedState> states;
  for (const std::unique_ptr<NamedModel>& named : models_) {
    ServedState& state = states.emplace_back();
    state.model = named->name;
    if (const std::shared_ptr<const update::ModelVersion> model = named->store->Current();
        model != nullptr) {
      state.loaded = true;
      state.model_version = model->version;
      state.device = model->device();
    }
    state.energy_table = options_.energy_table_name;
    const update::StreamEnergy joules = MeterTotals(named->meter);
    state.lower_tier_inference_joules = joules.lower_tier_inference;
    state.readout_inference_joules = joules.readout_inference;
    state.absorb_joules = joules.absorb;
    state.refresh_joules = joules.refresh;
  }
  return states;
}

// ---- ExtractFeatures and Predict -----------------------------------------------------------------

grpc::ServerUnaryReactor* StrataService::ExtractFeatures(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::ExtractFeaturesRequest, v1::ExtractFeaturesResponse>;
  auto* call = new Call(context, reply);
  NamedModel* named = Admit(call, *request, CallKind::kRead, RpcMethod::kExtractFeatures, start);
  if (named == nullptr) return call;
  inference_queue_.Schedule([this, named, call, start] {
    const grpc::Status status =
        call->context()->IsCancelled()
            ? grpc::Status::CANCELLED
            : ToGrpcStatus(named->inference.ExtractFeatures(call->request(), &call->response()));
    FinishUnary(call, RpcMethod::kExtractFeatures, status, start);
  });
  return call;
}

grpc::ServerUnaryReactor* StrataService::Predict(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  auto* call = new PredictUnaryCall(context, reply);
  NamedModel* named = Admit(call, *request, CallKind::kRead, RpcMethod::kPredict, start);
  if (named == nullptr) return call;
  if (call->request().min_log_position() > 0) {
    DispatchPredictAtPosition(*named, call, start);
  } else {
    DispatchPredict(*named, call, start);
  }
  return call;
}

void StrataService::DispatchPredictAtPosition(NamedModel& named, PredictUnaryCall* call,
                                              absl::Time start) {
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
                       [this, &named, call, start](absl::Status served) {
                         if (served.ok()) {
                           DispatchPredict(named, call, start);
                         } else {
                           FinishUnary(call, RpcMethod::kPredict, ToGrpcStatus(served), start);
                         }
                       });
}

void StrataService::DispatchPredict(NamedModel& named, PredictUnaryCall* call, absl::Time start) {
  if (named.batcher != nullptr) {
    named.batcher->Enqueue(
        {call->context(), &call->request(), &call->response(), call, nullptr, {}});
    return;
  }
  inference_queue_.Schedule([this, &named, call, start] {
    const grpc::Status status =
        call->context()->IsCancelled()
            ? grpc::Status::CANCELLED
            : ToGrpcStatus(named.inference.Predict(call->request(), &call->response()));
    FinishUnary(call, RpcMethod::kPredict, status, start);
  });
}

BatcherCounters StrataService::batcher_counters() const {
  BatcherCounters total;
  for (const auto& model : models_) {
    if (model->batcher == nullptr) continue;
    const BatcherCounters counters = model->batcher->Counters();
    total.batches += counters.batches;
    total.requests += counters.requests;
    total.images += counters.images;
    total.multi_request_batches += counters.multi_request_batches;
    total.largest_batch_images =
        std::max(total.largest_batch_images, counters.largest_batch_images);
  }
  return total;
}

void StrataService::SubmitPredict(PredictCall call) {
  absl::StatusOr<NamedModel*> routed = Route(call.request->model());
  if (!routed.ok()) {
    call.done->OnPredictDone(ToGrpcStatus(routed.status()));
    return;
  }
  NamedModel& named = **routed;
  if (named.batcher != nullptr) {
    named.batcher->Enqueue(call);
    return;
  }
  inference_queue_.Schedule([&named, call] {
    call.done->OnPredictDone(call.context->IsCancelled() ? grpc::Status::CANCELLED
                                                         : ToGrpcStatus(named.inference.Predict(
                                                               *call.request, call.response)));
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
  UpdateCallContext env;
  env.auth = &auth_;
  env.route = [this](absl::string_view name) -> absl::StatusOr<update::UpdatePipeline*> {
    absl::StatusOr<NamedModel*> model = Route(name);
    if (!model.ok()) return model.status();
    return &(*model)->pipeline;
  };
  env.update_queue = &update_queue_;
  env.stats = &stats_;
  env.max_message_bytes = options_.max_message_bytes;
  return StartUpdateCall(std::move(env), context, reply);
}

// ---- Snapshot ----------------------------------------------------------------------------------

grpc::ServerUnaryReactor* StrataService::Snapshot(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::SnapshotRequest, v1::SnapshotInfo>;
  auto* call = new Call(context, reply);
  NamedModel* named = Admit(call, *request, CallKind::kWrite, RpcMethod::kSnapshot, start);
  if (named == nullptr) return call;
  if (named->store->Current() == nullptr) {
    FinishUnary(call, RpcMethod::kSnapshot, ToGrpcStatus(NotLoadedError()), start);
    return call;
  }
  // On the update queue: between two Update messages, so the statistics match the log position.
  update_queue_.Schedule([this, named, call, start] {
    // A call whose deadline passed while it waited is cancelled: skip the snapshot's work.
    if (call->context()->IsCancelled()) {
      FinishUnary(call, RpcMethod::kSnapshot, grpc::Status::CANCELLED, start);
      return;
    }
    absl::StatusOr<update::SnapshotResult> snapshot = named->pipeline.TakeSnapshot();
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
  const NamedModel* named = Admit(call, *request, CallKind::kRead, RpcMethod::kGetModelInfo, start);
  if (named == nullptr) return call;
  std::shared_ptr<const update::ModelVersion> model = named->store->Current();
  if (model == nullptr) {
    FinishUnary(call, RpcMethod::kGetModelInfo, ToGrpcStatus(NotLoadedError()), start);
    return call;
  }
  FillModelInfo(*model, options_.max_batch, &call->response());
  call->response().set_name(named->name);
  for (const auto& served : models_) call->response().add_served_models(served->name);
  FinishUnary(call, RpcMethod::kGetModelInfo, grpc::Status::OK, start);
  return call;
}

grpc::ServerUnaryReactor* StrataService::GetStats(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* reply) {
  const absl::Time start = absl::Now();
  using Call = UnaryCall<v1::GetStatsRequest, v1::Stats>;
  auto* call = new Call(context, reply);
  const NamedModel* named = Admit(call, *request, CallKind::kRead, RpcMethod::kGetStats, start);
  if (named == nullptr) return call;
  std::shared_ptr<const update::ModelVersion> model = named->store->Current();
  if (model == nullptr) {
    FinishUnary(call, RpcMethod::kGetStats, ToGrpcStatus(NotLoadedError()), start);
    return call;
  }
  v1::Stats* response = &call->response();
  *response = stats_.Counters();
  response->set_model_version(model->version);
  response->set_uptime_seconds(Seconds(absl::Now() - start_time_));
  response->set_device(model->device());
  FillUpdateStats(named->pipeline, response);
  FillEnergyStats(named->meter, options_.energy_table_name, response);
  const BatcherCounters batches =
      named->batcher != nullptr ? named->batcher->Counters() : BatcherCounters{};
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
