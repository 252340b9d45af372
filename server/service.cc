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
#include "server/snapshot.h"
#include "server/unary_call.h"
#include "server/update_record.h"
#include "server/validation.h"

namespace strata::server {
namespace {

// The number of rejections an UpdateSummary lists (it counts them all).
constexpr int kMaxListedRejections = 100;

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

fpga::EnergyTable ServiceOptions::CpuEnergyTable() {
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor("cpu");
  return table.ok() ? *table : fpga::EnergyTable{};
}

fpga::OpCounts ReadoutCounts(int d, int classes, int rows) {
  fpga::OpCounts counts;
  counts.fp32_macs = static_cast<uint64_t>(std::max(rows, 0)) * static_cast<uint64_t>(d) *
                     static_cast<uint64_t>(classes);
  counts.dram_bytes = 4 * static_cast<uint64_t>(std::max(rows, 0)) * static_cast<uint64_t>(classes);
  return counts;
}

int TransportMessageLimit(int max_message_bytes) {
  return static_cast<int>(std::min<int64_t>(int64_t{4} * std::max(max_message_bytes, 1), INT_MAX));
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

StrataService::StrataService(ModelStore* store, ServiceOptions options,
                             std::unique_ptr<UpdatePolicy> policy)
    : store_(store),
      options_(WithMetricsHooks(std::move(options))),
      auth_(options_.auth_token, options_.auth_all),
      meter_(options_.energy_table),
      policy_(std::move(policy)),
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
  durability_ = std::move(durability);
}

absl::Status StrataService::TakeSnapshot(v1::SnapshotInfo* info) {
  if (durability_.log == nullptr) {
    return absl::FailedPreconditionError(
        "the server has no state directory (--state_dir), so it takes no snapshots");
  }
  const absl::Time start = absl::Now();
  const uint64_t position = durability_.log->last_sequence();
  // Never snapshot a record the log could still lose: recovery relies on the log reaching at least
  // every snapshot's position.
  absl::Status status = durability_.log->Sync(position);
  if (!status.ok()) return status;
  absl::StatusOr<SnapshotFile> file = absl::InternalError("no statistics");
  uint64_t samples_seen = 0, version = 0;
  status = store_->VisitStatistics([&](const model::UpperTier& upper, uint64_t current) {
    version = current;
    samples_seen = upper.samples_seen();
    file = WriteSnapshot(durability_.env, durability_.state_dir, current, position, upper);
  });
  if (!status.ok()) return status;
  if (!file.ok()) return file.status();
  samples_since_snapshot_ = 0;
  // Keep the log from the older kept snapshot on, so start-up can fall back to it.
  absl::StatusOr<std::vector<SnapshotFile>> kept =
      ListSnapshots(durability_.env, durability_.state_dir);
  if (!kept.ok()) return kept.status();
  if (kept->size() >= static_cast<size_t>(kSnapshotsKept)) {
    status = durability_.log->DeleteSegmentsThrough(kept->back().log_position);
    if (!status.ok()) return status;
  }
  info->set_model_version(version);
  info->set_log_position(position);
  info->set_path(file->path);
  info->set_bytes(file->bytes);
  info->set_samples_seen(samples_seen);
  info->set_seconds(Seconds(absl::Now() - start));
  STRATA_LOG(INFO) << "snapshot " << file->path << ": model version " << version
                   << ", log position " << position << ", " << samples_seen << " samples seen, "
                   << file->bytes << " bytes, " << info->seconds() << " s";
  return absl::OkStatus();
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
  if (refused.ok() && !request.Valid()) {
    // No payload reached the service: gRPC's transport refused the message (over
    // TransportMessageLimit) or the call was cancelled; the client has gRPC's own status.
    refused = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "the request message did not arrive (over the transport's limit of " +
                               std::to_string(TransportMessageLimit(options_.max_message_bytes)) +
                               " bytes, or cancelled)");
  } else if (refused.ok() && request.Length() > static_cast<size_t>(options_.max_message_bytes)) {
    refused = grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("request message of ", request.Length(),
                     " bytes is over the server's message-size limit of ",
                     options_.max_message_bytes, " bytes (--max_message_bytes)"));
  } else if (refused.ok()) {
    refused = ToGrpcStatus(call->Parse(request));
  }
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
  if (const std::shared_ptr<const ModelVersion> model = store_->Current(); model != nullptr) {
    state.loaded = true;
    state.model_version = model->version;
    state.device = model->device;
  }
  state.energy_table = options_.energy_table_name;
  const std::array<PhaseEnergy, kNumEnergyPhases> totals = meter_.Totals();
  state.lower_tier_inference_joules =
      totals[static_cast<int>(EnergyPhase::kLowerTierInference)].joules;
  state.absorb_joules = totals[static_cast<int>(EnergyPhase::kAbsorb)].joules;
  state.refresh_joules = totals[static_cast<int>(EnergyPhase::kRefresh)].joules;
  absl::MutexLock lock(&stats_mu_);
  state.readout_inference_joules = readout_joules_;
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
      ReadBatch(samples, result.model->lower->input_size(), options_.max_batch);
  if (!batch.ok()) return batch.status();
  fpga::OpCounts lower_counts;
  absl::StatusOr<model::MatrixF> features = result.model->Features(*batch, &lower_counts);
  if (!features.ok()) return features.status();
  result.features = *std::move(features);
  if (options_.metrics != nullptr) {
    options_.metrics->ObserveLowerTierBatch(static_cast<int>(result.features.rows()));
  }
  energy->set_lower_tier_joules(meter_.Charge(EnergyPhase::kLowerTierInference, lower_counts,
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
  const ModelVersion& model = *lower->model;
  const model::MatrixF scores = model.readout.Scores(lower->features);
  const int rows = static_cast<int>(scores.rows());
  const double readout_joules = meter_.Estimate(ReadoutCounts(
      model.lower->feature_size(), static_cast<int>(model.readout.labels.size()), rows));
  response->mutable_energy()->set_upper_tier_joules(readout_joules);
  {
    absl::MutexLock lock(&stats_mu_);
    readout_joules_ += readout_joules;
  }
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
    batcher_->Enqueue({context, &call->request(), &call->response(), call, {}});
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

void StrataService::FinishPredict(const PredictCall& call, const grpc::Status& status) {
  // Enqueue() stamps `enqueued` as the handler hands the call over: the call's start.
  FinishUnary(call.call, RpcMethod::kPredict, status, call.enqueued);
}

void StrataService::RunPredictBatch(std::span<const PredictCall> calls, BatchScratch* scratch) {
  // One version for the whole batch, so every request in it is answered by exactly one version.
  const std::shared_ptr<const ModelVersion> model = store_->Current();
  if (model == nullptr) {
    for (const PredictCall& call : calls) FinishPredict(call, ToGrpcStatus(NotLoaded()));
    return;
  }
  const int input_size = model->lower->input_size();
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
  const double lower_joules = meter_.Charge(EnergyPhase::kLowerTierInference, lower_counts,
                                            model->lower_tier_energy_table);
  const int classes = static_cast<int>(model->readout.labels.size());
  scratch->scores.resize(rows, classes);
  scratch->scores.noalias() = *features * model->readout.weights;
  const double readout_joules =
      meter_.Estimate(ReadoutCounts(model->lower->feature_size(), classes, rows));
  {
    absl::MutexLock lock(&stats_mu_);
    readout_joules_ += readout_joules;
  }
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

// One Update stream. Reads one message at a time (as bytes); each message is parsed (sample by
// sample if it does not parse whole), validated, predicted (prequential), absorbed and offered to
// the update policy on the update queue, which then starts the next read. When the reads end, the
// reactor first tells a half-close from a broken call (OnReadDone(false) means either): it sends the
// initial metadata, which fails on a call gRPC has cancelled (a message over the transport's limit,
// a client cancel, a deadline). A half-closed stream publishes a new version under "stream-end" (if
// anything was accepted) and finishes with its summary; a broken one finishes CANCELLED and
// publishes nothing. Exactly one read, metadata send or piece of queued work is outstanding at any
// time, so the members need no lock; Finish() is called exactly once, by FinishWith().
class StrataService::UpdateReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  UpdateReactor(StrataService* service, grpc::CallbackServerContext* context,
                grpc::ByteBuffer* reply)
      : service_(service), context_(context), reply_(reply), summary_(&summary_storage_) {
    // Checked before anything is read, so an unauthenticated stream absorbs nothing.
    grpc::Status allowed = service_->auth_.Check(*context_, CallKind::kWrite);
    if (!allowed.ok()) {
      FinishWith(allowed);
      return;
    }
    model_ = service_->store_->Current();
    if (model_ == nullptr) {
      FinishWith(ToGrpcStatus(NotLoaded()));
      return;
    }
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
        // Samples already absorbed stay in the statistics; the next Publish() includes them.
        FinishWith(grpc::Status::CANCELLED);
        return;
      }
      Complete();
    });
  }

  void OnDone() override { delete this; }

 private:
  // Reads buffer_ into message_, then validates, predicts and absorbs its samples, lets the policy
  // decide on a refresh, then reads the next message.
  void AbsorbMessage() {
    if (context_->IsCancelled()) {
      FinishWith(grpc::Status::CANCELLED);
      return;
    }
    const absl::Time start = absl::Now();
    errors_.clear();
    new_class_ = false;
    const uint64_t accepted_before = summary_->accepted();
    const uint64_t rejected_before = summary_->rejected();
    absl::Status status = AbsorbSamples();
    if (service_->options_.metrics != nullptr) {
      service_->options_.metrics->AddUpdateMessage(
          static_cast<int>(summary_->accepted() - accepted_before),
          static_cast<int>(summary_->rejected() - rejected_before));
    }
    absorb_time_ += absl::Now() - start;
    ++message_index_;
    if (status.ok()) status = Decide();
    if (!status.ok()) {
      STRATA_LOG(ERROR) << "Update: absorbing failed: " << status;
      FinishWith(ToGrpcStatus(status));
      return;
    }
    const Durability& durability = service_->durability_;
    if (durability.log != nullptr && durability.snapshot_every_samples > 0 &&
        service_->samples_since_snapshot_ >= durability.snapshot_every_samples) {
      v1::SnapshotInfo info;
      absl::Status snapshot = service_->TakeSnapshot(&info);
      if (!snapshot.ok()) STRATA_LOG(ERROR) << "automatic snapshot failed: " << snapshot;
    }
    StartRead(&buffer_);
  }

  absl::Status AbsorbSamples() {
    const int max_bytes = service_->options_.max_message_bytes;
    if (buffer_.Length() > static_cast<size_t>(max_bytes)) {
      // Not parsed at all: its samples cannot be counted, so the message counts as one rejection.
      ++samples_received_;
      Reject(-1, absl::StrCat("message of ", buffer_.Length(),
                              " bytes is over the server's message-size limit of ", max_bytes,
                              " bytes (--max_message_bytes); send fewer samples per message"));
      buffer_.Clear();
      return absl::OkStatus();
    }
    message_ = ReadUpdateMessage(buffer_);
    buffer_.Clear();
    const v1::UpdateRequest& request = message_.request;
    const int count = request.samples_size();
    samples_received_ += count;
    if (count == 0 && message_.unreadable_rest.empty()) {
      Reject(-1, "samples: empty message, expected at least 1 sample");
      return absl::OkStatus();
    }
    if (!message_.unreadable_rest.empty()) {
      // The bytes after the last sample that could be delimited: one more rejected entry.
      ++samples_received_;
      Reject(count, message_.unreadable_rest);
    }
    if (service_->durability_.log != nullptr) {
      // Validate the whole message first and log its accepted samples as one record, so that a
      // crash leaves the message wholly in the log or wholly out of it.
      absl::Status logged = LogMessage();
      if (!logged.ok()) return logged;
    }
    // The readout every sample of this message is predicted with before it is absorbed.
    served_ = service_->store_->Current();
    const int input_size = model_->lower->input_size();
    const int chunk = std::min(count, service_->options_.max_batch);
    model::MatrixF rows(chunk, input_size);
    std::vector<std::string> labels;
    labels.reserve(chunk);
    for (int i = 0; i < count; ++i) {
      const v1::LabeledSample& sample = request.samples(i);
      if (Unreadable(i)) {
        Reject(i, message_.unreadable[i]);
        continue;
      }
      const std::string field = absl::StrCat("samples[", i, "]");
      absl::Status valid = ValidateLabel(sample.label(), absl::StrCat(field, ".label"));
      if (valid.ok()) {
        valid = ReadSample(sample.sample(), input_size, absl::StrCat(field, ".sample"),
                           rows.row(static_cast<Eigen::Index>(labels.size())).data());
      }
      if (!valid.ok()) {
        Reject(i, valid.message());
        continue;
      }
      labels.push_back(sample.label());
      if (static_cast<int>(labels.size()) == chunk) {
        absl::Status status = Absorb(rows, labels);
        if (!status.ok()) return status;
        labels.clear();
      }
    }
    if (!labels.empty()) {
      rows.conservativeResize(static_cast<Eigen::Index>(labels.size()), input_size);
      return Absorb(rows, labels);
    }
    return absl::OkStatus();
  }

  // True if sample `i` of message_ could not be parsed.
  bool Unreadable(int i) const {
    return !message_.unreadable.empty() && !message_.unreadable[i].empty();
  }

  // Appends the message's valid samples to the update log (one record). Invalid samples are left
  // to AbsorbSamples() to reject.
  absl::Status LogMessage() {
    const int input_size = model_->lower->input_size();
    UpdateRecordBuilder record(input_size);
    std::vector<float> scratch(input_size);
    for (int i = 0; i < message_.request.samples_size(); ++i) {
      const v1::LabeledSample& sample = message_.request.samples(i);
      if (Unreadable(i) || !ValidateLabel(sample.label(), "label").ok() ||
          !ReadSample(sample.sample(), input_size, "sample", scratch.data()).ok()) {
        continue;
      }
      if (sample.sample().input_case() == v1::Sample::kPixels) {
        record.AddPixels(sample.label(), sample.sample().pixels());
      } else {
        record.AddValues(sample.label(), scratch.data());
      }
    }
    if (record.count() == 0) return absl::OkStatus();
    absl::StatusOr<uint64_t> sequence = service_->durability_.log->Append(record.Finish());
    if (!sequence.ok()) {
      STRATA_LOG(ERROR) << "Update: the update log failed: " << sequence.status();
      return absl::Status(sequence.status().code(),
                          absl::StrCat("update log: ", sequence.status().message(),
                                       " (updates are refused until the server restarts)"));
    }
    last_sequence_ = *sequence;
    return absl::OkStatus();
  }

  // Computes the rows' features, predicts them with served_ (prequential errors into errors_),
  // absorbs them, and charges the work.
  absl::Status Absorb(const model::MatrixF& rows, const std::vector<std::string>& labels) {
    const model::LowerTier& lower = *model_->lower;
    const int n = static_cast<int>(labels.size());
    fpga::OpCounts lower_counts;
    absl::StatusOr<model::MatrixF> computed = model_->Features(rows, &lower_counts);
    if (!computed.ok()) return computed.status();
    const model::MatrixF& features = *computed;
    EnergyMeter& meter = service_->meter_;
    meter.Charge(EnergyPhase::kLowerTierInference, lower_counts,
                 model_->lower_tier_energy_table, &energy_);

    const model::Readout& readout = served_->readout;
    const model::MatrixF scores = readout.Scores(features);
    const double readout_joules = meter.Estimate(
        ReadoutCounts(lower.feature_size(), static_cast<int>(readout.labels.size()), n));
    readout_joules_ += readout_joules;
    uint64_t errors = 0;
    for (int i = 0; i < n; ++i) {
      Eigen::Index best = 0;
      scores.row(i).maxCoeff(&best);
      // A label the readout has no column for is never predicted: an error.
      const bool error = readout.labels.empty() || readout.labels[best] != labels[i];
      errors_.push_back(error ? 1 : 0);
      errors += error ? 1 : 0;
    }
    prequential_errors_ += errors;

    int classes = 0;
    fpga::OpCounts gram_counts;
    bool on_gram_backend = false;
    absl::StatusOr<std::vector<std::string>> new_labels =
        service_->store_->Absorb(features, labels, &classes, &gram_counts, &on_gram_backend);
    if (!new_labels.ok()) return new_labels.status();
    if (on_gram_backend) {
      // int8 readout: the backend's Gram kernel did the work (int8 MACs), priced by its table.
      meter.Charge(EnergyPhase::kAbsorb, gram_counts, model_->lower_tier_energy_table, &energy_);
    } else {
      meter.Charge(EnergyPhase::kAbsorb, AbsorbCounts(lower.feature_size(), classes, n),
                   &energy_);
    }
    last_absorb_ = ++service_->absorbs_;
    if (!new_labels->empty()) new_class_ = true;
    for (std::string& label : *new_labels) summary_->add_new_labels(std::move(label));
    summary_->set_accepted(summary_->accepted() + labels.size());
    service_->samples_since_snapshot_ += labels.size();
    absl::MutexLock lock(&service_->stats_mu_);
    service_->stats_.set_samples_absorbed(service_->stats_.samples_absorbed() + labels.size());
    service_->readout_joules_ += readout_joules;
    service_->prequential_samples_ += n;
    service_->prequential_errors_ += errors;
    service_->pending_samples_ += n;
    return absl::OkStatus();
  }

  // After a message: asks the policy whether to refresh, and refreshes if so. Under "stream-end"
  // only counts the deferral.
  absl::Status Decide() {
    UpdatePolicy* policy = service_->policy_.get();
    if (policy == nullptr) {
      const StreamEndReason reason =
          errors_.empty() ? StreamEndReason::kNoSamples : StreamEndReason::kUntilStreamEnd;
      absl::MutexLock lock(&service_->stats_mu_);
      ++service_->stream_end_decisions_[static_cast<int>(reason)];
      return absl::OkStatus();
    }
    double refresh_joules = 0;
    if (!errors_.empty()) {
      absl::StatusOr<ModelStore::RefreshPlan> plan = service_->store_->PlanRefresh();
      if (!plan.ok()) return plan.status();
      refresh_joules = service_->meter_.Estimate(
          RefreshReportCounts(plan->report, plan->feature_size, plan->num_classes));
    }
    const Decision decision = policy->OnMessage({errors_, new_class_, refresh_joules, absl::Now()});
    if (!decision.apply) return absl::OkStatus();
    return Refresh(DecisionReasonName(decision.reason));
  }

  // Publishes a new version from the statistics and charges the refresh.
  absl::Status Refresh(absl::string_view reason) {
    const absl::Time start = absl::Now();
    ModelStore::RefreshPlan done;
    absl::StatusOr<std::shared_ptr<const ModelVersion>> published =
        service_->store_->Publish(&done);
    solve_time_ += absl::Now() - start;
    if (!published.ok()) {
      STRATA_LOG(ERROR) << "Update: solving the readout failed: " << published.status();
      return published.status();
    }
    service_->published_absorbs_ = service_->absorbs_;
    service_->meter_.Charge(EnergyPhase::kRefresh,
                            RefreshReportCounts(done.report, done.feature_size, done.num_classes),
                            &energy_);
    if (done.absorb_counts.int8_macs > 0) {
      // Rows absorbed earlier but staged for the Gram kernel's next block, accumulated just now.
      service_->meter_.Charge(EnergyPhase::kAbsorb, done.absorb_counts,
                              model_->lower_tier_energy_table, &energy_);
    }
    if (done.fold_counts.fp64_macs > 0) {
      // Folding the Gram accumulator's integer sums into G, Q (read-back from the device + D^2/2
      // fp64 MACs on the host), priced with the device's table like the absorbs.
      service_->meter_.Charge(EnergyPhase::kRefresh, done.fold_counts,
                              model_->lower_tier_energy_table, &energy_);
    }
    ++refreshes_;
    if (service_->options_.metrics != nullptr) {
      service_->options_.metrics->AddRefresh(done.report.path);
    }
    {
      absl::MutexLock lock(&service_->stats_mu_);
      service_->stats_.set_updates_applied(service_->stats_.updates_applied() + 1);
      service_->pending_samples_ = 0;
    }
    if (service_->policy_ == nullptr || reason != "every-message") {
      STRATA_LOG(INFO) << "Update: published model version " << (*published)->version << " ("
                       << reason << "; " << (*published)->readout.labels.size() << " classes, "
                       << (*published)->samples_seen << " samples seen; "
                       << (done.report.path == model::RefreshPath::kRefactor ? "re-factor"
                                                                              : "factor update")
                       << ", " << Seconds(absl::Now() - start) << " s)";
    }
    return absl::OkStatus();
  }

  void Reject(int sample_index, absl::string_view reason) {
    if (summary_->rejections_size() < kMaxListedRejections) {
      v1::Rejection* rejection = summary_->add_rejections();
      rejection->set_message_index(message_index_);
      rejection->set_sample_index(sample_index);
      rejection->set_reason(std::string(reason));
    }
    summary_->set_rejected(summary_->rejected() + 1);
    absl::MutexLock lock(&service_->stats_mu_);
    service_->stats_.set_samples_rejected(service_->stats_.samples_rejected() + 1);
  }

  // The stream ended: refresh under "stream-end" (if anything was accepted), then reply.
  void Complete() {
    if (samples_received_ == 0) {
      FinishWith(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("Update stream carried no samples (", message_index_,
                                           " messages), expected at least 1 labelled sample")));
      return;
    }
    if (service_->policy_ == nullptr && summary_->accepted() > 0) {
      {
        absl::MutexLock lock(&service_->stats_mu_);
        ++service_->stream_end_decisions_[static_cast<int>(StreamEndReason::kStreamEnd)];
      }
      absl::Status refreshed = Refresh("stream-end");
      if (!refreshed.ok()) {
        FinishWith(ToGrpcStatus(refreshed));
        return;
      }
    }
    summary_->set_model_version(service_->store_->Current()->version);
    summary_->set_absorb_seconds(Seconds(absorb_time_));
    summary_->set_solve_seconds(Seconds(solve_time_));
    summary_->set_refreshes(refreshes_);
    summary_->set_readout_current(last_absorb_ <= service_->published_absorbs_);
    summary_->set_prequential_errors(prequential_errors_);
    FillPhaseEnergy(energy_.of(EnergyPhase::kLowerTierInference), readout_joules_,
                    energy_.of(EnergyPhase::kAbsorb), energy_.of(EnergyPhase::kRefresh),
                    summary_->mutable_energy());
    if (service_->policy_ != nullptr) {
      STRATA_LOG(INFO) << "Update: stream ended: " << summary_->accepted() << " samples accepted, "
                       << summary_->rejected() << " rejected, " << refreshes_
                       << " refreshes, model version " << summary_->model_version()
                       << (summary_->readout_current() ? "" : " (refresh deferred)");
    }
    if (service_->durability_.log == nullptr || last_sequence_ == 0) {
      FinishWith(grpc::Status::OK);
      return;
    }
    // Acknowledge only once every record of this stream is durable. The wait happens on the log's
    // sync thread, so the update queue goes on absorbing other streams meanwhile and their records
    // share the same fsync (group commit).
    service_->durability_.log->SyncAsync(last_sequence_, [this](absl::Status synced) {
      if (!synced.ok()) {
        STRATA_LOG(ERROR) << "Update: the update log could not be made durable: " << synced;
        FinishWith(ToGrpcStatus(absl::Status(
            synced.code(), absl::StrCat("update log: ", synced.message(),
                                        " (the update is not acknowledged; updates are refused "
                                        "until the server restarts)"))));
        return;
      }
      FinishWith(grpc::Status::OK);
    });
  }

  // Finishes the call: with `status`, or for OK with the summary. Counts it first.
  void FinishWith(grpc::Status status) {
    if (status.ok()) {
      absl::Status serialized = SerializeReply(*summary_, reply_);
      if (!serialized.ok()) status = ToGrpcStatus(serialized);
    }
    service_->CountRpc(RpcMethod::kUpdate, status, 0);
    service_->RecordRpc(RpcMethod::kUpdate, status, start_);
    Finish(status);
  }

  StrataService* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const reply_;
  v1::UpdateSummary summary_storage_;
  v1::UpdateSummary* const summary_;
  // When the stream started: its latency runs from here to Finish().
  const absl::Time start_ = absl::Now();
  // The version whose (frozen) lower tier computes this stream's features.
  std::shared_ptr<const ModelVersion> model_;
  // The version current when the message being absorbed arrived: its readout makes the message's
  // prequential predictions.
  std::shared_ptr<const ModelVersion> served_;
  // The message being read (bytes), and the same message parsed.
  grpc::ByteBuffer buffer_;
  ParsedUpdateMessage message_;
  uint32_t message_index_ = 0;  // index of the message in the stream
  uint64_t samples_received_ = 0;
  // The update-log sequence number of this stream's last record (0: none yet).
  uint64_t last_sequence_ = 0;
  absl::Duration absorb_time_;
  absl::Duration solve_time_;
  // The current message's prequential errors (one per accepted sample) and whether it brought a
  // new class.
  std::vector<uint8_t> errors_;
  bool new_class_ = false;
  // The stream's totals: joules by meter phase, readout joules, prequential errors, refreshes, and
  // the number (StrataService::absorbs_) of its last absorb (0: none).
  RequestEnergy energy_;
  double readout_joules_ = 0;
  uint64_t prequential_errors_ = 0;
  uint64_t refreshes_ = 0;
  uint64_t last_absorb_ = 0;
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
    absl::Status status = TakeSnapshot(&call->response());
    if (!status.ok() && !absl::IsFailedPrecondition(status)) {
      STRATA_LOG(ERROR) << "Snapshot failed: " << status;
    }
    FinishUnary(call, RpcMethod::kSnapshot, ToGrpcStatus(status), start);
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
  std::shared_ptr<const ModelVersion> model = store_->Current();
  if (model == nullptr) {
    FinishUnary(call, RpcMethod::kGetModelInfo, ToGrpcStatus(NotLoaded()), start);
    return call;
  }
  v1::ModelInfo* response = &call->response();
  const model::Shape& input = model->lower->input_shape();
  response->set_input_height(input.height);
  response->set_input_width(input.width);
  response->set_input_channels(input.channels);
  response->set_input_size(model->lower->input_size());
  response->set_feature_size(model->lower->feature_size());
  for (const std::string& label : model->readout.labels) response->add_labels(label);
  response->set_model_version(model->version);
  for (std::string& stage : model->lower->Describe()) {
    response->add_lower_tier_stages(std::move(stage));
  }
  response->set_upper_tier(absl::StrCat(
      "ridge readout: ", model->lower->feature_size(), " features -> ",
      model->readout.labels.size(),
      " classes, solved by Cholesky from exact sufficient statistics (lambda ",
      model->ridge_lambda, ")"));
  response->set_ridge_lambda(model->ridge_lambda);
  response->set_samples_seen(model->samples_seen);
  response->set_max_batch(options_.max_batch);
  response->set_device(model->device);
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
  std::shared_ptr<const ModelVersion> model = store_->Current();
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
  const std::array<PhaseEnergy, kNumEnergyPhases> totals = meter_.Totals();
  const double lower = totals[static_cast<int>(EnergyPhase::kLowerTierInference)].joules;
  const double absorb = totals[static_cast<int>(EnergyPhase::kAbsorb)].joules;
  const double refresh = totals[static_cast<int>(EnergyPhase::kRefresh)].joules;
  double readout = 0;
  std::array<uint64_t, kNumStreamEndReasons> stream_end{};
  {
    absl::MutexLock lock(&stats_mu_);
    readout = readout_joules_;
    std::copy(std::begin(stream_end_decisions_), std::end(stream_end_decisions_),
              stream_end.begin());
    stats->set_prequential_samples(prequential_samples_);
    stats->set_prequential_errors(prequential_errors_);
    stats->set_pending_samples(pending_samples_);
  }
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
  const std::shared_ptr<const ModelVersion> served = store_->Current();
  stats->set_device(served != nullptr ? served->device : options_.device);

  auto add = [stats](absl::string_view reason, bool applied, uint64_t count) {
    if (count == 0) return;
    v1::DecisionCount* decision = stats->add_decisions();
    decision->set_reason(std::string(reason));
    decision->set_applied(applied);
    decision->set_count(count);
  };
  if (policy_ == nullptr) {
    stats->set_update_policy("stream-end");
    add("stream-end", true, stream_end[static_cast<int>(StreamEndReason::kStreamEnd)]);
    add("until-stream-end", false,
        stream_end[static_cast<int>(StreamEndReason::kUntilStreamEnd)]);
    add("no-samples", false, stream_end[static_cast<int>(StreamEndReason::kNoSamples)]);
    return;
  }
  const UpdatePolicyStats policy = policy_->Stats();
  stats->set_update_policy(std::string(policy_->name()));
  for (int i = 0; i < kNumDecisionReasons; ++i) {
    const auto reason = static_cast<DecisionReason>(i);
    // DecisionReason lists the applying reasons first (update_policy.h).
    add(DecisionReasonName(reason), i < static_cast<int>(DecisionReason::kNoSamples),
        policy.count(reason));
  }
  stats->set_drift_alarms(policy.drift_alarms);
  if (policy_->kind() == PolicyKind::kEnergyAware) {
    stats->set_budget_balance_joules(policy.budget_balance_joules);
  }
}

}  // namespace strata::server
