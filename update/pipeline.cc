#include "update/pipeline.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "update/snapshot.h"
#include "update/update_record.h"

namespace strata::update {
namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

// ---- UpdatePipeline -----------------------------------------------------------------------------

UpdatePipeline::UpdatePipeline(ModelStore* store, EnergyMeter* meter,
                               std::unique_ptr<UpdatePolicy> policy, int max_batch)
    : store_(store),
      meter_(meter),
      policy_(std::move(policy)),
      max_batch_(std::max(max_batch, 1)) {}

void UpdatePipeline::EnableDurability(Durability durability) {
  durability_ = std::move(durability);
}

absl::StatusOr<std::unique_ptr<UpdateStream>> UpdatePipeline::StartStream() {
  std::shared_ptr<const ModelVersion> model = store_->Current();
  if (model == nullptr) {
    return absl::UnavailableError("the model is not loaded yet; retry later");
  }
  return std::unique_ptr<UpdateStream>(new UpdateStream(this, std::move(model)));
}

PipelineCounters UpdatePipeline::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

absl::StatusOr<SnapshotResult> UpdatePipeline::TakeSnapshot() {
  if (durability_.log == nullptr) {
    return absl::FailedPreconditionError(
        "the server has no state directory (--state_dir), so it takes no snapshots");
  }
  if (durability_.replication != nullptr) {
    return absl::FailedPreconditionError(
        "a replicated server stores snapshots in the stream's bucket by itself, at refresh "
        "markers (--snapshot_every_samples)");
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
    status = durability_.log->Trim(kept->back().log_position);
    if (!status.ok()) return status;
  }
  SnapshotResult result;
  result.model_version = version;
  result.log_position = position;
  result.path = file->path;
  result.bytes = file->bytes;
  result.samples_seen = samples_seen;
  result.seconds = Seconds(absl::Now() - start);
  STRATA_LOG(INFO) << "snapshot " << file->path << ": model version " << version
                   << ", log position " << position << ", " << samples_seen << " samples seen, "
                   << file->bytes << " bytes, " << result.seconds << " s";
  return result;
}

absl::StatusOr<model::RefreshPath> UpdatePipeline::Refresh(absl::string_view reason,
                                                           const ModelVersion& model,
                                                           RequestEnergy* energy,
                                                           absl::Duration* solve_time) {
  const absl::Time start = absl::Now();
  ModelStore::RefreshPlan done;
  absl::StatusOr<std::shared_ptr<const ModelVersion>> published = store_->Publish(&done);
  *solve_time += absl::Now() - start;
  if (!published.ok()) {
    STRATA_LOG(ERROR) << "Update: solving the readout failed: " << published.status();
    return published.status();
  }
  published_absorbs_ = absorbs_;
  meter_->Charge(EnergyPhase::kRefresh,
                 model::RefreshReportCounts(done.report, done.feature_size, done.num_classes),
                 energy);
  if (done.absorb_counts.int8_macs > 0) {
    // Rows absorbed earlier but staged for the Gram kernel's next block, accumulated just now.
    meter_->Charge(EnergyPhase::kAbsorb, done.absorb_counts, model.lower_tier_energy_table, energy);
  }
  if (done.fold_counts.fp64_macs > 0) {
    // Folding the Gram accumulator's integer sums into G, Q (read-back from the device + D^2/2
    // fp64 MACs on the host), priced with the device's table like the absorbs.
    meter_->Charge(EnergyPhase::kRefresh, done.fold_counts, model.lower_tier_energy_table, energy);
  }
  {
    absl::MutexLock lock(&mu_);
    counters_.updates_applied += 1;
    counters_.pending_samples = 0;
    counters_.gram_staged_samples = store_->staged_gram_rows();
  }
  // Eager publishes after every message: its versions are counted, not logged one by one.
  if (reason != DecisionReasonName(DecisionReason::kEveryMessage)) {
    STRATA_LOG(INFO) << "Update: published model version " << (*published)->version << " ("
                     << reason << "; " << (*published)->readout.labels.size() << " classes, "
                     << (*published)->samples_seen << " samples seen; "
                     << (done.report.path == model::RefreshPath::kRefactor ? "re-factor"
                                                                           : "factor update")
                     << ", " << Seconds(absl::Now() - start) << " s)";
  }
  return done.report.path;
}

// ---- UpdateStream -------------------------------------------------------------------------------

UpdateStream::UpdateStream(UpdatePipeline* pipeline, std::shared_ptr<const ModelVersion> model)
    : pipeline_(pipeline), model_(std::move(model)) {}

void UpdateStream::Reject(int sample_index, absl::string_view reason) {
  if (summary_.rejections.size() < static_cast<size_t>(kMaxListedRejections)) {
    summary_.rejections.push_back(Rejection{message_index_, sample_index, std::string(reason)});
  }
  summary_.rejected += 1;
  absl::MutexLock lock(&pipeline_->mu_);
  pipeline_->counters_.samples_rejected += 1;
}

MessageResult UpdateStream::RejectMessage(absl::string_view reason) {
  const absl::Time start = absl::Now();
  // Not read at all: its samples cannot be counted, so the message counts as one rejection.
  ++samples_received_;
  Reject(-1, reason);
  MessageResult result;
  result.rejected = 1;
  absorb_time_ += absl::Now() - start;
  FinishMessage(&result);
  return result;
}

MessageResult UpdateStream::OnMessage(std::span<const SampleInput> samples,
                                      absl::string_view unreadable_rest) {
  const absl::Time start = absl::Now();
  const uint64_t accepted_before = summary_.accepted;
  const uint64_t rejected_before = summary_.rejected;
  MessageResult result;
  result.status = AbsorbSamples(samples, unreadable_rest);
  result.accepted = static_cast<int>(summary_.accepted - accepted_before);
  result.rejected = static_cast<int>(summary_.rejected - rejected_before);
  absorb_time_ += absl::Now() - start;
  FinishMessage(&result);
  return result;
}

void UpdateStream::FinishMessage(MessageResult* result) {
  ++message_index_;
  if (result->status.ok()) result->status = Decide(result);
  errors_.clear();
  labels_.clear();
  new_class_ = false;
  if (!result->status.ok()) return;
  const Durability& durability = pipeline_->durability_;
  if (durability.log != nullptr && durability.snapshot_every_samples > 0 &&
      pipeline_->samples_since_snapshot_ >= durability.snapshot_every_samples) {
    absl::StatusOr<SnapshotResult> snapshot = pipeline_->TakeSnapshot();
    if (!snapshot.ok()) STRATA_LOG(ERROR) << "automatic snapshot failed: " << snapshot.status();
  }
}

absl::Status UpdateStream::AbsorbSamples(std::span<const SampleInput> samples,
                                         absl::string_view unreadable_rest) {
  const int count = static_cast<int>(samples.size());
  samples_received_ += count;
  if (count == 0 && unreadable_rest.empty()) {
    Reject(-1, "samples: empty message, expected at least 1 sample");
    return absl::OkStatus();
  }
  if (!unreadable_rest.empty()) {
    // The bytes after the last sample that could be delimited: one more rejected entry.
    ++samples_received_;
    Reject(count, unreadable_rest);
  }
  // Every sample is validated once, here, before anything is logged or absorbed.
  const model::InputKind kind = model_->extractor->input_kind();
  std::vector<bool> valid(count, false);
  int valid_count = 0;
  for (int i = 0; i < count; ++i) {
    const SampleInput& sample = samples[i];
    if (!sample.unreadable.empty()) {
      Reject(i, sample.unreadable);
      continue;
    }
    const std::string field = absl::StrCat("samples[", i, "]");
    absl::Status status = ValidateLabel(sample.label, absl::StrCat(field, ".label"));
    if (status.ok()) {
      status = ValidateInput(sample.input, kind, absl::StrCat(field, ".sample"));
    }
    if (!status.ok()) {
      Reject(i, status.message());
      continue;
    }
    valid[i] = true;
    ++valid_count;
  }
  if (pipeline_->durability_.log != nullptr && valid_count > 0) {
    // The whole message's accepted samples as one record, so that a crash leaves the message
    // wholly in the log or wholly out of it.
    absl::Status logged = LogMessage(samples, valid);
    if (!logged.ok()) return logged;
  }
  if (pipeline_->durability_.replication != nullptr) {
    // Replicated: every replica absorbs the record by following the log.
    summary_.accepted += valid_count;
    return absl::OkStatus();
  }
  // The readout every sample of this message is predicted with before it is absorbed.
  served_ = pipeline_->store_->Current();
  return AbsorbValid(samples, valid);
}

absl::Status UpdateStream::AbsorbValid(std::span<const SampleInput> samples,
                                       const std::vector<bool>& valid) {
  // Each valid sample is converted once, into the chunk it is absorbed with.
  const int count = static_cast<int>(samples.size());
  const int input_size = model_->extractor->input_size();
  const int chunk = std::min(count, pipeline_->max_batch_);
  model::SampleBatch inputs;
  inputs.values.resize(input_size > 0 ? chunk : 0, input_size);
  std::vector<std::string> labels;
  labels.reserve(chunk);
  for (int i = 0; i < count; ++i) {
    if (!valid[i]) continue;
    if (samples[i].input.kind == InputView::Kind::kText) {
      inputs.texts.emplace_back(samples[i].input.text);
    } else {
      ConvertInput(samples[i].input,
                   inputs.values.row(static_cast<Eigen::Index>(labels.size())).data());
    }
    labels.emplace_back(samples[i].label);
    if (static_cast<int>(labels.size()) == chunk) {
      absl::Status status = Absorb(inputs, labels);
      if (!status.ok()) return status;
      labels.clear();
      inputs.texts.clear();
    }
  }
  if (!labels.empty()) {
    if (input_size > 0) {
      inputs.values.conservativeResize(static_cast<Eigen::Index>(labels.size()), input_size);
    }
    return Absorb(inputs, labels);
  }
  return absl::OkStatus();
}

absl::Status UpdateStream::LogMessage(std::span<const SampleInput> samples,
                                      const std::vector<bool>& valid) {
  UpdateRecordBuilder record(model_->extractor->input_size());
  for (size_t i = 0; i < samples.size(); ++i) {
    if (!valid[i]) continue;
    const SampleInput& sample = samples[i];
    if (sample.input.kind == InputView::Kind::kPixels) {
      record.AddPixels(sample.label, sample.input.pixels);
    } else if (sample.input.kind == InputView::Kind::kText) {
      record.AddText(sample.label, sample.input.text);
    } else {
      record.AddValues(sample.label, sample.input.values.data());
    }
  }
  absl::StatusOr<uint64_t> sequence = pipeline_->durability_.log->Append(record.Finish());
  if (!sequence.ok()) {
    STRATA_LOG(ERROR) << "Update: the update log failed: " << sequence.status();
    // A replicated log recovers by itself (jetstream_update_log.h); the file log does not.
    const bool replicated = pipeline_->durability_.replication != nullptr;
    return absl::Status(
        sequence.status().code(),
        absl::StrCat("update log: ", sequence.status().message(),
                     replicated ? "" : " (updates are refused until the server restarts)"));
  }
  last_sequence_ = *sequence;
  return absl::OkStatus();
}

absl::Status UpdateStream::Absorb(const model::SampleBatch& inputs,
                                  const std::vector<std::string>& labels) {
  const int n = static_cast<int>(labels.size());
  fpga::OpCounts lower_counts;
  absl::StatusOr<model::MatrixF> computed = model_->Features(inputs, &lower_counts);
  if (!computed.ok()) return computed.status();
  const model::MatrixF& features = *computed;
  EnergyMeter& meter = *pipeline_->meter_;
  meter.Charge(EnergyPhase::kLowerTierInference, lower_counts, model_->lower_tier_energy_table,
               &energy_);

  const model::Readout& readout = served_->readout;
  const model::MatrixF scores = readout.Scores(features);
  meter.Charge(EnergyPhase::kReadoutInference, readout.Counts(n), &energy_);
  uint64_t errors = 0;
  for (int i = 0; i < n; ++i) {
    Eigen::Index best = 0;
    if (!readout.labels.empty()) scores.row(i).maxCoeff(&best);
    // A label the readout has no column for is never predicted: an error.
    const bool error = readout.labels.empty() || readout.labels[best] != labels[i];
    errors_.push_back(error ? 1 : 0);
    labels_.push_back(labels[i]);
    errors += error ? 1 : 0;
  }
  summary_.prequential_errors += errors;

  const std::vector<int> keep = RowsToAbsorb(scores, readout, labels);
  absl::Status absorbed = absl::OkStatus();
  if (static_cast<int>(keep.size()) == n) {
    absorbed = AbsorbRows(features, labels);
  } else if (!keep.empty()) {
    model::MatrixF kept(static_cast<Eigen::Index>(keep.size()), features.cols());
    std::vector<std::string> kept_labels;
    kept_labels.reserve(keep.size());
    for (size_t k = 0; k < keep.size(); ++k) {
      kept.row(static_cast<Eigen::Index>(k)) = features.row(keep[k]);
      kept_labels.push_back(labels[keep[k]]);
    }
    absorbed = AbsorbRows(kept, kept_labels);
  }
  if (!absorbed.ok()) return absorbed;
  const uint64_t skipped = static_cast<uint64_t>(n) - keep.size();
  summary_.accepted += n;
  summary_.skipped += skipped;
  pipeline_->samples_since_snapshot_ += keep.size();
  absl::MutexLock lock(&pipeline_->mu_);
  PipelineCounters& counters = pipeline_->counters_;
  counters.samples_absorbed += keep.size();
  counters.samples_skipped_confident += skipped;
  counters.prequential_samples += n;
  counters.prequential_errors += errors;
  counters.pending_samples += keep.size();
  counters.gram_staged_samples = pipeline_->store_->staged_gram_rows();
  return absl::OkStatus();
}

std::vector<int> UpdateStream::RowsToAbsorb(const model::MatrixF& scores,
                                            const model::Readout& readout,
                                            const std::vector<std::string>& labels) const {
  const UpdatePolicyOptions& options = pipeline_->policy_->options();
  const int n = static_cast<int>(labels.size());
  std::vector<int> keep;
  keep.reserve(n);
  for (int i = 0; i < n; ++i) {
    bool skip = false;
    // A margin needs a runner-up; a class still being learnt is always absorbed.
    if (options.absorb_margin > 0 && readout.labels.size() >= 2) {
      auto absorbed = pipeline_->absorbed_by_label_.find(labels[i]);
      if (absorbed != pipeline_->absorbed_by_label_.end() &&
          absorbed->second >= options.absorb_min_class_samples) {
        Eigen::Index best = 0;
        const float top = scores.row(i).maxCoeff(&best);
        float second = -std::numeric_limits<float>::infinity();
        for (Eigen::Index c = 0; c < scores.cols(); ++c) {
          if (c != best) second = std::max(second, scores(i, c));
        }
        skip = readout.labels[best] == labels[i] && top - second >= options.absorb_margin;
      }
    }
    if (!skip) keep.push_back(i);
  }
  return keep;
}

absl::Status UpdateStream::AbsorbRows(const model::MatrixF& features,
                                      const std::vector<std::string>& labels) {
  int classes = 0;
  fpga::OpCounts gram_counts;
  bool on_gram_backend = false;
  absl::StatusOr<std::vector<std::string>> new_labels =
      pipeline_->store_->Absorb(features, labels, &classes, &gram_counts, &on_gram_backend);
  if (!new_labels.ok()) return new_labels.status();
  EnergyMeter& meter = *pipeline_->meter_;
  if (on_gram_backend) {
    // int8 readout: the backend's Gram kernel did the work (int8 MACs), priced by its table.
    meter.Charge(EnergyPhase::kAbsorb, gram_counts, model_->lower_tier_energy_table, &energy_);
  } else {
    meter.Charge(EnergyPhase::kAbsorb,
                 model::AbsorbCounts(model_->extractor->feature_size(), classes,
                                     static_cast<int>(labels.size())),
                 &energy_);
  }
  last_absorb_ = ++pipeline_->absorbs_;
  if (!new_labels->empty()) new_class_ = true;
  for (std::string& label : *new_labels) summary_.new_labels.push_back(std::move(label));
  for (const std::string& label : labels) ++pipeline_->absorbed_by_label_[label];
  return absl::OkStatus();
}

absl::Status UpdateStream::Forget(const Decision& decision) {
  absl::StatusOr<fpga::OpCounts> work =
      pipeline_->store_->Forget(decision.forget_labels, decision.forget_decay);
  if (!work.ok()) return work.status();
  // Charged as refresh work: it is part of re-solving the readout after the drift.
  pipeline_->meter_->Charge(EnergyPhase::kRefresh, *work, &energy_);
  STRATA_LOG(INFO) << "Update: drift: forgot the classes "
                   << absl::StrJoin(decision.forget_labels, ", ")
                   << " (their Q columns zeroed; statistics decayed by " << decision.forget_decay
                   << ")";
  return absl::OkStatus();
}

absl::Status UpdateStream::Decide(MessageResult* result) {
  UpdatePolicy& policy = *pipeline_->policy_;
  double refresh_joules = 0;
  // Priced only when the policy might take the refresh and there is something new to solve for.
  if (policy.decides_per_message() && !errors_.empty()) {
    absl::StatusOr<ModelStore::RefreshPlan> plan = pipeline_->store_->PlanRefresh();
    if (!plan.ok()) return plan.status();
    refresh_joules = pipeline_->meter_->Estimate(
        model::RefreshReportCounts(plan->report, plan->feature_size, plan->num_classes));
  }
  const Decision decision =
      policy.OnMessage({errors_, new_class_, refresh_joules, absl::Now(), labels_});
  if (!decision.apply) return absl::OkStatus();
  if (!decision.forget_labels.empty()) {
    if (absl::Status forgot = Forget(decision); !forgot.ok()) return forgot;
  }
  absl::StatusOr<model::RefreshPath> refreshed =
      pipeline_->Refresh(DecisionReasonName(decision.reason), *model_, &energy_, &solve_time_);
  if (!refreshed.ok()) return refreshed.status();
  result->refresh = *refreshed;
  ++summary_.refreshes;
  return absl::OkStatus();
}

void UpdateStream::OnStreamEnd(absl::AnyInvocable<void(absl::StatusOr<StreamSummary>) &&> done) {
  if (samples_received_ == 0) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("Update stream carried no samples (", message_index_,
                     " messages), expected at least 1 labelled sample")));
    return;
  }
  if (pipeline_->durability_.replication != nullptr) {
    EndReplicatedStream(std::move(done));
    return;
  }
  UpdatePolicy& policy = *pipeline_->policy_;
  if (std::optional<Decision> decision = policy.OnStreamEnd(summary_.accepted, absl::Now());
      decision.has_value() && decision->apply) {
    absl::StatusOr<model::RefreshPath> refreshed =
        pipeline_->Refresh(DecisionReasonName(decision->reason), *model_, &energy_, &solve_time_);
    if (!refreshed.ok()) {
      std::move(done)(refreshed.status());
      return;
    }
    summary_.refresh = *refreshed;
    ++summary_.refreshes;
  }
  summary_.model_version = pipeline_->store_->Current()->version;
  summary_.absorb_seconds = Seconds(absorb_time_);
  summary_.solve_seconds = Seconds(solve_time_);
  summary_.readout_current = last_absorb_ <= pipeline_->published_absorbs_;
  summary_.energy.lower_tier_inference = energy_.of(EnergyPhase::kLowerTierInference);
  summary_.energy.absorb = energy_.of(EnergyPhase::kAbsorb);
  summary_.energy.refresh = energy_.of(EnergyPhase::kRefresh);
  summary_.energy.readout_inference = energy_.of(EnergyPhase::kReadoutInference);
  if (policy.decides_per_message()) {
    // Under stream-end the publish's own line already says what the stream did.
    STRATA_LOG(INFO) << "Update: stream ended: " << summary_.accepted << " samples accepted, "
                     << summary_.rejected << " rejected, " << summary_.refreshes
                     << " refreshes, model version " << summary_.model_version
                     << (summary_.readout_current ? "" : " (refresh deferred)");
  }
  summary_.log_position = last_sequence_;
  UpdateLog* log = pipeline_->durability_.log;
  if (log == nullptr || last_sequence_ == 0) {
    std::move(done)(summary_);
    return;
  }
  // Acknowledge only once every record of this stream is durable. The wait happens on the log's
  // sync thread, so the update thread goes on absorbing other streams meanwhile and their records
  // share the same fsync (group commit).
  log->SyncAsync(
      last_sequence_, [summary = summary_, done = std::move(done)](absl::Status synced) mutable {
        if (!synced.ok()) {
          STRATA_LOG(ERROR) << "Update: the update log could not be made durable: " << synced;
          std::move(done)(absl::Status(
              synced.code(), absl::StrCat("update log: ", synced.message(),
                                          " (the update is not acknowledged; updates are refused "
                                          "until the server restarts)")));
          return;
        }
        std::move(done)(std::move(summary));
      });
}

void UpdateStream::EndReplicatedStream(
    absl::AnyInvocable<void(absl::StatusOr<StreamSummary>) &&> done) {
  LogReplication& replication = *pipeline_->durability_.replication;
  summary_.log_position = last_sequence_;
  if (std::optional<Decision> decision =
          pipeline_->policy_->OnStreamEnd(summary_.accepted, absl::Now());
      decision.has_value() && decision->apply) {
    absl::StatusOr<uint64_t> marker = replication.AppendRefresh();
    if (!marker.ok()) {
      std::move(done)(absl::Status(marker.status().code(),
                                   absl::StrCat("update log: ", marker.status().message())));
      return;
    }
    summary_.log_position = *marker;
    ++summary_.refreshes;
  }
  // Every entry is acknowledged by a quorum already (Append returns then). The summary waits a
  // little for this replica to serve them, so that it names the version that includes them.
  ModelStore* store = pipeline_->store_;
  replication.WhenServed(
      summary_.log_position, absl::Now() + replication.ack_wait(),
      [summary = summary_, store, done = std::move(done)](absl::Status served) mutable {
        summary.model_version = store->Current()->version;
        summary.readout_current = served.ok();
        std::move(done)(std::move(summary));
      });
}

}  // namespace strata::update
