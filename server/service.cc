#include "server/service.h"

#include <algorithm>
#include <climits>
#include <array>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "server/request_parsing.h"
#include "server/unary_call.h"
#include "server/validation.h"

namespace strata::server {
namespace {

absl::Status NotLoaded() {
  return absl::UnavailableError("the model is not loaded yet; retry later");
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }


void FillPhaseEnergy(double lower, double readout, double absorb, double refresh,
                     v1::PhaseEnergy* energy) {
  energy->set_lower_tier_inference_joules(lower);
  energy->set_readout_inference_joules(readout);
  energy->set_absorb_joules(absorb);
  energy->set_refresh_joules(refresh);
  energy->set_total_joules(lower + readout + absorb + refresh);
}

}  // namespace

int TransportMessageLimit(int max_message_bytes) {
  return static_cast<int>(std::min<int64_t>(int64_t{4} * std::max(max_message_bytes, 1), INT_MAX));
}

absl::Status CheckRequestSize(const grpc::ByteBuffer& request, int max_message_bytes) {
  if (!request.Valid()) {
    // No payload reached the service: gRPC's transport refused the message (over
    // TransportMessageLimit) or the call was cancelled; the client has gRPC's own status.
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request message did not arrive (over the transport's limit of ",
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

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
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
      pipeline_(store_, &meter_,
                policy != nullptr
                    ? std::move(policy)
                    : *update::UpdatePolicy::Create("stream-end", {}, absl::Now()),
                options_.max_batch),
      inference_queue_("inference", std::max(1, options_.inference_threads)) {
  if (options_.metrics != nullptr) {
    options_.metrics->SetStateSource([this] { return MetricsState(); });
  }
  if (options_.batching) {
    batcher_ = std::make_unique<PredictBatcher>(
        options_.batcher, [this](std::span<const PredictCall> calls, BatchScratch* scratch) {
          RunPredictBatch(calls, scratch);
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
  CountRpc(method, status, samples);
  if (options_.metrics != nullptr && method == RpcMethod::kPredict) {
    options_.metrics->ObservePredictBatch(samples);
  }
  RecordRpc(method, status, start);
  call->Finish(status);
}

void StrataService::CountRpc(RpcMethod method, const grpc::Status& status, int samples) {
  absl::MutexLock lock(&stats_mu_);
  switch (method) {
    case RpcMethod::kPredict:
      CountCall(stats_.mutable_predict(), status);
      if (status.ok()) stats_.set_samples_predicted(stats_.samples_predicted() + samples);
      break;
    case RpcMethod::kExtractFeatures:
      CountCall(stats_.mutable_extract_features(), status);
      if (status.ok()) stats_.set_samples_extracted(stats_.samples_extracted() + samples);
      break;
    case RpcMethod::kUpdate:
      CountCall(stats_.mutable_update(), status);
      break;
    case RpcMethod::kGetModelInfo:
      CountCall(stats_.mutable_get_model_info(), status);
      break;
    case RpcMethod::kGetStats:
    case RpcMethod::kSnapshot:
      break;  // Stats has no counters for them
    case RpcMethod::kServerLive:
    case RpcMethod::kServerReady:
    case RpcMethod::kModelReady:
    case RpcMethod::kServerMetadata:
    case RpcMethod::kModelMetadata:
    case RpcMethod::kModelInfer:
    case RpcMethod::kRepositoryIndex:
      break;  // KServe v2's (server/kserve_service.h): counted in the metrics only
  }
}

void StrataService::RecordRpc(RpcMethod method, const grpc::Status& status,
                              absl::Time start) const {
  if (options_.metrics == nullptr) return;
  options_.metrics->ObserveRpc(method, static_cast<absl::StatusCode>(status.error_code()),
                               absl::Now() - start);
}

ServedState StrataService::MetricsState() {
  ServedState state;
  if (const std::shared_ptr<const update::ModelVersion> model = store_->Current(); model != nullptr) {
    state.loaded = true;
    state.model_version = model->version;
    state.device = model->device();
  }
  state.energy_table = options_.energy_table_name;
  const std::array<update::PhaseEnergy, update::kNumEnergyPhases> totals = meter_.Totals();
  state.lower_tier_inference_joules =
      totals[static_cast<int>(update::EnergyPhase::kLowerTierInference)].joules;
  state.absorb_joules = totals[static_cast<int>(update::EnergyPhase::kAbsorb)].joules;
  state.refresh_joules = totals[static_cast<int>(update::EnergyPhase::kRefresh)].joules;
  state.readout_inference_joules =
      totals[static_cast<int>(update::EnergyPhase::kReadoutInference)].joules;
  return state;
}

void StrataService::CountCall(v1::RpcCount* count, const grpc::Status& status) {
  if (status.ok()) {
    count->set_ok(count->ok() + 1);
  } else {
    count->set_failed(count->failed() + 1);
  }
}

// ---- ExtractFeatures and Predict -----------------------------------------------------------------

absl::StatusOr<StrataService::LowerTierResult> StrataService::RunLowerTier(
    const google::protobuf::RepeatedPtrField<v1::Sample>& samples, v1::TierEnergy* energy) {
  LowerTierResult result;
  result.model = store_->Current();
  if (result.model == nullptr) return NotLoaded();
  absl::StatusOr<model::MatrixF> batch =
      ReadBatch(samples, result.model->extractor->input_size(), options_.max_batch);
  if (!batch.ok()) return batch.status();
  fpga::OpCounts lower_counts;
  absl::StatusOr<model::MatrixF> features = result.model->Features(*batch, &lower_counts);
  if (!features.ok()) return features.status();
  result.features = *std::move(features);
  if (options_.metrics != nullptr) {
    options_.metrics->ObserveLowerTierBatch(static_cast<int>(result.features.rows()));
  }
  energy->set_lower_tier_joules(meter_.Charge(update::EnergyPhase::kLowerTierInference, lower_counts,
                                              result.model->lower_tier_energy_table));
  return result;
}

absl::Status StrataService::DoExtractFeatures(const v1::ExtractFeaturesRequest& request,
                                              v1::ExtractFeaturesResponse* response) {
  absl::StatusOr<LowerTierResult> lower = RunLowerTier(request.samples(), response->mutable_energy());
  if (!lower.ok()) return lower.status();
  const model::MatrixF& features = lower->features;
  for (Eigen::Index i = 0; i < features.rows(); ++i) {
    auto* values = response->add_features()->mutable_values();
    values->Add(features.row(i).data(), features.row(i).data() + features.cols());
  }
  response->set_model_version(lower->model->version);
  return absl::OkStatus();
}

absl::Status StrataService::DoPredict(const v1::PredictRequest& request,
                                      v1::PredictResponse* response) {
  absl::StatusOr<LowerTierResult> lower = RunLowerTier(request.samples(), response->mutable_energy());
  if (!lower.ok()) return lower.status();
  const update::ModelVersion& model = *lower->model;
  const model::MatrixF scores = model.readout.Scores(lower->features);
  const int rows = static_cast<int>(scores.rows());
  response->mutable_energy()->set_upper_tier_joules(
      meter_.Charge(update::EnergyPhase::kReadoutInference, model.readout.Counts(rows)));
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best = 0;
    scores.row(i).maxCoeff(&best);
    v1::Prediction* prediction = response->add_predictions();
    prediction->set_label(model.readout.labels[best]);
    prediction->set_class_index(static_cast<uint32_t>(best));
    if (request.return_scores()) {
      prediction->mutable_scores()->Add(scores.row(i).data(),
                                        scores.row(i).data() + scores.cols());
    }
  }
  response->set_model_version(model.version);
  return absl::OkStatus();
}

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
            : ToGrpcStatus(DoExtractFeatures(call->request(), &call->response()));
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
  if (batcher_ != nullptr) {
    batcher_->Enqueue({context, &call->request(), &call->response(), call, nullptr, {}});
    return call;
  }
  inference_queue_.Schedule([this, call, start] {
    const grpc::Status status =
        call->context()->IsCancelled()
            ? grpc::Status::CANCELLED
            : ToGrpcStatus(DoPredict(call->request(), &call->response()));
    FinishUnary(call, RpcMethod::kPredict, status, start);
  });
  return call;
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
                                 : ToGrpcStatus(DoPredict(*call.request, call.response)));
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

void StrataService::RunPredictBatch(std::span<const PredictCall> calls, BatchScratch* scratch) {
  // One version for the whole batch, so every request in it is answered by exactly one version.
  const std::shared_ptr<const update::ModelVersion> model = store_->Current();
  if (model == nullptr) {
    for (const PredictCall& call : calls) FinishPredict(call, ToGrpcStatus(NotLoaded()));
    return;
  }
  const int input_size = model->extractor->input_size();
  int total = 0;
  for (const PredictCall& call : calls) total += call.request->samples_size();
  // Resized only when the batch's image count changes; row-major, so each image is one row.
  scratch->images.resize(std::max(total, 1), input_size);
  scratch->first_row.assign(calls.size(), -1);
  // Validation and gathering: a request that is cancelled, empty, too large or has a bad sample is
  // finished here, alone, and its rows are reused by the next request.
  int rows = 0;
  for (size_t c = 0; c < calls.size(); ++c) {
    const PredictCall& call = calls[c];
    if (call.context->IsCancelled()) {
      FinishPredict(call, grpc::Status::CANCELLED);
      continue;
    }
    const auto& samples = call.request->samples();
    absl::Status valid;
    if (samples.empty()) {
      valid = absl::InvalidArgumentError(
          absl::StrCat("samples: empty batch, expected 1..", options_.max_batch, " samples"));
    } else if (samples.size() > options_.max_batch) {
      valid = absl::ResourceExhaustedError(
          absl::StrCat("samples: batch of ", samples.size(), " samples, expected at most ",
                       options_.max_batch, " (the server's max_batch)"));
    }
    for (int i = 0; valid.ok() && i < samples.size(); ++i) {
      valid = ReadSample(samples[i], input_size, absl::StrCat("samples[", i, "]"),
                         scratch->images.row(rows + i).data());
    }
    if (!valid.ok()) {
      FinishPredict(call, ToGrpcStatus(valid));
      continue;
    }
    scratch->first_row[c] = rows;
    rows += samples.size();
  }
  if (rows == 0) return;
  // Keeps the first `rows` rows (row-major: the valid requests' images, in order).
  if (rows < scratch->images.rows()) scratch->images.conservativeResize(rows, Eigen::NoChange);

  fpga::OpCounts lower_counts;
  absl::StatusOr<model::MatrixF> features = model->Features(scratch->images, &lower_counts);
  if (!features.ok()) {
    for (size_t c = 0; c < calls.size(); ++c) {
      if (scratch->first_row[c] >= 0) FinishPredict(calls[c], ToGrpcStatus(features.status()));
    }
    return;
  }
  // The lower tier's and the readout's work are exactly proportional to the rows (TierEnergy), so
  // each request is charged its share of the batch: the same joules it would cost alone.
  const double lower_joules = meter_.Charge(update::EnergyPhase::kLowerTierInference, lower_counts,
                                            model->lower_tier_energy_table);
  const int classes = static_cast<int>(model->readout.labels.size());
  scratch->scores.resize(rows, classes);
  scratch->scores.noalias() = *features * model->readout.weights;
  const double readout_joules =
      meter_.Charge(update::EnergyPhase::kReadoutInference, model->readout.Counts(rows));
  const model::MatrixF& scores = scratch->scores;
  for (size_t c = 0; c < calls.size(); ++c) {
    const int first = scratch->first_row[c];
    if (first < 0) continue;
    const PredictCall& call = calls[c];
    const int n = call.request->samples_size();
    const double share = static_cast<double>(n) / rows;
    v1::PredictResponse* response = call.response;
    response->mutable_energy()->set_lower_tier_joules(lower_joules * share);
    response->mutable_energy()->set_upper_tier_joules(readout_joules * share);
    response->mutable_predictions()->Reserve(n);
    for (int i = first; i < first + n; ++i) {
      Eigen::Index best = 0;
      scores.row(i).maxCoeff(&best);
      v1::Prediction* prediction = response->add_predictions();
      prediction->set_label(model->readout.labels[best]);
      prediction->set_class_index(static_cast<uint32_t>(best));
      if (call.request->return_scores()) {
        prediction->mutable_scores()->Add(scores.row(i).data(),
                                          scores.row(i).data() + scores.cols());
      }
    }
    response->set_model_version(model->version);
    FinishPredict(call, grpc::Status::OK);
  }
}

// ---- Update ------------------------------------------------------------------------------------

// One Update stream: a thin adapter between gRPC and an update::UpdateStream. Reads one message
// at a time (as bytes) and parses it (sample by sample if it does not parse whole; a message over
// max_message_bytes is rejected unread); on the update queue the pipeline validates, logs,
// predicts, absorbs and offers it to the update policy, then the next read starts. When the reads
// end, the reactor first tells a half-close from a broken call (OnReadDone(false) means either): it
// sends the initial metadata, which fails on a call gRPC has cancelled (a message over the
// transport's limit, a client cancel, a deadline). A half-closed stream ends in the pipeline (which
// publishes under "stream-end" and waits for the log) and finishes with its summary; a broken one
// finishes CANCELLED and publishes nothing. Exactly one read, metadata send or piece of queued work is outstanding at
// any time, so the members need no lock; Finish() is called exactly once, by FinishWith().
class StrataService::UpdateReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  UpdateReactor(StrataService* service, grpc::CallbackServerContext* context,
                grpc::ByteBuffer* reply)
      : service_(service), context_(context), reply_(reply) {
    // Checked before anything is read, so an unauthenticated stream absorbs nothing.
    grpc::Status allowed = service_->auth_.Check(*context_, CallKind::kWrite);
    if (!allowed.ok()) {
      FinishWith(allowed);
      return;
    }
    absl::StatusOr<std::unique_ptr<update::UpdateStream>> stream =
        service_->pipeline_.StartStream();
    if (!stream.ok()) {
      FinishWith(ToGrpcStatus(stream.status()));
      return;
    }
    stream_ = *std::move(stream);
    StartRead(&buffer_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      service_->update_queue_.Schedule([this] { AbsorbMessage(); });
    } else {
      // The client half-closed, or the call is broken: the metadata send tells which.
      StartSendInitialMetadata();
    }
  }

  void OnSendInitialMetadataDone(bool ok) override {
    service_->update_queue_.Schedule([this, ok] {
      if (!ok || context_->IsCancelled()) {
        // Samples already absorbed stay in the statistics; the next publish includes them.
        FinishWith(grpc::Status::CANCELLED);
        return;
      }
      stream_->OnStreamEnd([this](absl::StatusOr<update::StreamSummary> summary) {
        if (!summary.ok()) {
          FinishWith(ToGrpcStatus(summary.status()));
          return;
        }
        if (summary->refresh.has_value()) RecordRefresh(*summary->refresh);
        FillSummary(*summary);
        FinishWith(grpc::Status::OK);
      });
    });
  }

  void OnDone() override { delete this; }

 private:
  // Parses buffer_ and hands the message to the pipeline, then reads the next one.
  void AbsorbMessage() {
    if (context_->IsCancelled()) {
      FinishWith(grpc::Status::CANCELLED);
      return;
    }
    const update::MessageResult result = HandMessageOver();
    if (service_->options_.metrics != nullptr) {
      service_->options_.metrics->AddUpdateMessage(result.accepted, result.rejected);
    }
    if (result.refresh.has_value()) RecordRefresh(*result.refresh);
    if (!result.status.ok()) {
      STRATA_LOG(ERROR) << "Update: absorbing failed: " << result.status;
      FinishWith(ToGrpcStatus(result.status));
      return;
    }
    StartRead(&buffer_);
  }

  update::MessageResult HandMessageOver() {
    const int max_bytes = service_->options_.max_message_bytes;
    if (buffer_.Length() > static_cast<size_t>(max_bytes)) {
      const size_t length = buffer_.Length();
      buffer_.Clear();
      return stream_->RejectMessage(
          absl::StrCat("message of ", length, " bytes is over the server's message-size limit of ",
                       max_bytes, " bytes (--max_message_bytes); send fewer samples per message"));
    }
    ParsedUpdateMessage message = ReadUpdateMessage(buffer_);
    buffer_.Clear();
    const v1::UpdateRequest& request = message.request;
    std::vector<update::SampleInput> samples(request.samples_size());
    for (int i = 0; i < request.samples_size(); ++i) {
      if (!message.unreadable.empty() && !message.unreadable[i].empty()) {
        samples[i].unreadable = message.unreadable[i];
        continue;
      }
      const v1::LabeledSample& sample = request.samples(i);
      samples[i].label = sample.label();
      samples[i].input = InputOf(sample.sample());
    }
    return stream_->OnMessage(samples, message.unreadable_rest);
  }

  void RecordRefresh(model::RefreshPath path) {
    if (service_->options_.metrics != nullptr) service_->options_.metrics->AddRefresh(path);
  }

  void FillSummary(const update::StreamSummary& summary) {
    summary_.set_accepted(summary.accepted);
    summary_.set_rejected(summary.rejected);
    for (const update::Rejection& rejected : summary.rejections) {
      v1::Rejection* rejection = summary_.add_rejections();
      rejection->set_message_index(rejected.message_index);
      rejection->set_sample_index(rejected.sample_index);
      rejection->set_reason(rejected.reason);
    }
    for (const std::string& label : summary.new_labels) summary_.add_new_labels(label);
    summary_.set_model_version(summary.model_version);
    summary_.set_absorb_seconds(summary.absorb_seconds);
    summary_.set_solve_seconds(summary.solve_seconds);
    summary_.set_refreshes(summary.refreshes);
    summary_.set_readout_current(summary.readout_current);
    summary_.set_prequential_errors(summary.prequential_errors);
    const update::StreamEnergy& energy = summary.energy;
    FillPhaseEnergy(energy.lower_tier_inference, energy.readout_inference, energy.absorb,
                    energy.refresh, summary_.mutable_energy());
  }

  // Finishes the call: with `status`, or for OK with the summary. Counts it first.
  void FinishWith(grpc::Status status) {
    if (status.ok()) {
      absl::Status serialized = SerializeReply(summary_, reply_);
      if (!serialized.ok()) status = ToGrpcStatus(serialized);
    }
    service_->CountRpc(RpcMethod::kUpdate, status, 0);
    service_->RecordRpc(RpcMethod::kUpdate, status, start_);
    Finish(status);
  }

  StrataService* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const reply_;
  v1::UpdateSummary summary_;
  // When the stream started: its latency runs from here to Finish().
  const absl::Time start_ = absl::Now();
  // The stream's work; null if the call was refused before it started.
  std::unique_ptr<update::UpdateStream> stream_;
  // The message being read.
  grpc::ByteBuffer buffer_;
};

grpc::ServerReadReactor<grpc::ByteBuffer>* StrataService::Update(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* reply) {
  return new UpdateReactor(this, context, reply);
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
    FinishUnary(call, RpcMethod::kSnapshot, ToGrpcStatus(NotLoaded()), start);
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
    FinishUnary(call, RpcMethod::kGetModelInfo, ToGrpcStatus(NotLoaded()), start);
    return call;
  }
  v1::ModelInfo* response = &call->response();
  // An image model (the only kind served so far): its shape.
  const model::Shape input = model->extractor->input_kind().image;
  response->set_input_height(input.height);
  response->set_input_width(input.width);
  response->set_input_channels(input.channels);
  response->set_input_size(model->extractor->input_size());
  response->set_feature_size(model->extractor->feature_size());
  for (const std::string& label : model->readout.labels) response->add_labels(label);
  response->set_model_version(model->version);
  for (std::string& stage : model->extractor->Describe()) {
    response->add_lower_tier_stages(std::move(stage));
  }
  response->set_upper_tier(absl::StrCat(
      "ridge readout: ", model->extractor->feature_size(), " features -> ",
      model->readout.labels.size(),
      " classes, solved by Cholesky from exact sufficient statistics (lambda ",
      model->ridge_lambda, ")"));
  response->set_ridge_lambda(model->ridge_lambda);
  response->set_samples_seen(model->samples_seen);
  response->set_max_batch(options_.max_batch);
  response->set_device(model->device());
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
    FinishUnary(call, RpcMethod::kGetStats, ToGrpcStatus(NotLoaded()), start);
    return call;
  }
  v1::Stats* response = &call->response();
  {
    absl::MutexLock lock(&stats_mu_);
    *response = stats_;
  }
  response->set_model_version(model->version);
  response->set_uptime_seconds(Seconds(absl::Now() - start_time_));
  FillPolicyAndEnergyStats(response);
  const BatcherCounters batches = batcher_counters();
  response->set_predict_batches(batches.batches);
  response->set_predict_batch_requests(batches.requests);
  response->set_predict_batch_samples(batches.images);
  response->set_predict_multi_request_batches(batches.multi_request_batches);
  response->set_predict_largest_batch(batches.largest_batch_images);
  FinishUnary(call, RpcMethod::kGetStats, grpc::Status::OK, start);
  return call;
}

void StrataService::FillPolicyAndEnergyStats(v1::Stats* stats) {
  const std::array<update::PhaseEnergy, update::kNumEnergyPhases> totals = meter_.Totals();
  const double lower = totals[static_cast<int>(update::EnergyPhase::kLowerTierInference)].joules;
  const double absorb = totals[static_cast<int>(update::EnergyPhase::kAbsorb)].joules;
  const double refresh = totals[static_cast<int>(update::EnergyPhase::kRefresh)].joules;
  const double readout = totals[static_cast<int>(update::EnergyPhase::kReadoutInference)].joules;
  const update::PipelineCounters updates = pipeline_.counters();
  stats->set_samples_absorbed(updates.samples_absorbed);
  stats->set_samples_rejected(updates.samples_rejected);
  stats->set_updates_applied(updates.updates_applied);
  stats->set_prequential_samples(updates.prequential_samples);
  stats->set_prequential_errors(updates.prequential_errors);
  stats->set_pending_samples(updates.pending_samples);
  FillPhaseEnergy(lower, readout, absorb, refresh, stats->mutable_energy());
  stats->mutable_energy_by_tier()->set_lower_tier_joules(lower);
  stats->mutable_energy_by_tier()->set_upper_tier_joules(readout + absorb + refresh);
  v1::EnergyTable* table = stats->mutable_energy_table();
  table->set_name(options_.energy_table_name);
  table->set_int8_mac_pj(meter_.table().int8_mac_pj);
  table->set_fp32_mac_pj(meter_.table().fp32_mac_pj);
  table->set_fp64_mac_pj(meter_.table().fp64_mac_pj);
  table->set_dram_pj_per_byte(meter_.table().dram_pj_per_byte);
  table->set_host_link_pj_per_byte(meter_.table().host_link_pj_per_byte);
  const std::shared_ptr<const update::ModelVersion> served = store_->Current();
  stats->set_device(served != nullptr ? served->device() : options_.device);

  const update::UpdatePolicy& policy = pipeline_.policy();
  const update::UpdatePolicyStats decisions = policy.Stats();
  stats->set_update_policy(std::string(policy.name()));
  for (int i = 0; i < update::kNumDecisionReasons; ++i) {
    const auto reason = static_cast<update::DecisionReason>(i);
    const uint64_t count = decisions.count(reason);
    if (count == 0) continue;
    v1::DecisionCount* decision = stats->add_decisions();
    decision->set_reason(std::string(update::DecisionReasonName(reason)));
    decision->set_applied(update::DecisionReasonApplies(reason));
    decision->set_count(count);
  }
  stats->set_drift_alarms(decisions.drift_alarms);
  if (policy.kind() == update::PolicyKind::kEnergyAware) {
    stats->set_budget_balance_joules(decisions.budget_balance_joules);
  }
}

}  // namespace strata::server
