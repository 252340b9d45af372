// The update pipeline: everything from "these labelled samples arrived" to "this version is
// published", free of gRPC, so that the server's Update front-end, the stream benchmark and tests
// run the same code.
//
// For each message of a stream (UpdateStream::OnMessage), in this order:
//   1. validate every sample once (label; input of the model's kind: image size and finite values,
//      or text length and UTF-8); a bad one is rejected alone and listed with its reason;
//   2. with an update log: append the message's valid samples as one record (a crash leaves the
//      message wholly in the log or wholly out of it), before anything is absorbed;
//   3. convert each valid sample once, in chunks of `max_batch` rows: lower-tier features, the
//      prequential check (predict with the readout served when the message arrived), absorb into
//      the statistics (ModelStore::Absorb), charge the work to the EnergyMeter. With selective
//      absorption (UpdatePolicyOptions::absorb_margin > 0) a sample predicted correctly with a wide
//      margin, of a class with enough absorbed samples, is skipped instead of absorbed (counted);
//   4. ask the UpdatePolicy (update/update_policy.h) whether to refresh; if so (after forgetting
//      the classes the decision names, ModelStore::Forget) solve and publish a new version;
//   5. take a snapshot if enough samples were absorbed since the last one.
// When the stream ends (UpdateStream::OnStreamEnd) the policy decides once more (stream-end
// refreshes here), and the summary is handed over once every record of the stream is durable
// (group commit: the wait runs on the log's sync thread, so other streams go on meanwhile).
//
// Threading: UpdatePipeline::counters() and policy() may be read from any thread. Everything that
// absorbs or publishes (every UpdateStream method and UpdatePipeline::TakeSnapshot) must be called
// one at a time across all the pipeline's streams (the server runs them on its single update
// thread); messages of concurrent streams may interleave.
#ifndef STRATA_UPDATE_PIPELINE_H_
#define STRATA_UPDATE_PIPELINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/upper_tier.h"
#include "update/energy_meter.h"
#include "update/env.h"
#include "update/log_replication.h"
#include "update/model_store.h"
#include "update/sample.h"
#include "update/update_log.h"
#include "update/update_policy.h"

namespace strata::update {

// The number of rejections a StreamSummary lists (it counts them all).
inline constexpr int kMaxListedRejections = 100;

// Where updates are made durable.
struct Durability {
  // The update log every accepted message is appended to. Not owned; must outlive the pipeline.
  UpdateLog* log = nullptr;
  // File system and directory snapshots are written to (the state directory). Not owned.
  Env* env = nullptr;
  std::string state_dir;
  // A snapshot is taken automatically once this many samples were absorbed since the last one.
  // 0 disables automatic snapshots. Default 100,000 (about 78 MB of log as pixels).
  uint64_t snapshot_every_samples = 100000;
  // Replicated mode (update/replica.h; `log` is then the replicated log): a stream only validates
  // and appends its samples, and at its end appends a refresh marker if the policy refreshes; every
  // replica, this one included, absorbs and refreshes by following the log. Snapshots are the
  // replicas' (TakeSnapshot is FAILED_PRECONDITION). Not owned. Null: the stream absorbs itself.
  LogReplication* replication = nullptr;
};

// What one message did.
struct MessageResult {
  // Not OK: the stream cannot go on (see UpdateStream::OnMessage); the counts say what happened
  // before the error.
  absl::Status status;
  int accepted = 0;  // samples accepted: absorbed, or skipped by selective absorption
  int rejected = 0;  // samples (or unreadable parts) rejected
  // How the readout was refreshed after the message, if the policy refreshed.
  std::optional<model::RefreshPath> refresh;
};

struct Rejection {
  uint32_t message_index = 0;
  // The sample's index in its message; -1 for the message as a whole (empty, or over the
  // front-end's size limit); the sample count for the unreadable rest of a message.
  int sample_index = 0;
  std::string reason;
};

// Joules of one stream, by phase.
struct StreamEnergy {
  double lower_tier_inference = 0;
  double readout_inference = 0;  // the prequential predictions
  double absorb = 0;
  double refresh = 0;
};

// What a stream did, handed over at its end.
struct StreamSummary {
  uint64_t accepted = 0;  // absorbed, or skipped by selective absorption (see skipped)
  uint64_t rejected = 0;
  std::vector<Rejection> rejections;    // the first kMaxListedRejections, in stream order
  std::vector<std::string> new_labels;  // labels that became classes, in the order first seen
  uint64_t model_version = 0;           // the version served when the stream ended
  double absorb_seconds = 0;
  double solve_seconds = 0;
  uint64_t refreshes = 0;
  // Whether the served readout includes every sample of this stream.
  bool readout_current = false;
  uint64_t prequential_errors = 0;
  // Of the accepted samples, how many selective absorption skipped (not in the statistics).
  uint64_t skipped = 0;
  StreamEnergy energy;
  // How the readout was refreshed at the stream's end, if it was.
  std::optional<model::RefreshPath> refresh;
  // The update-log position of the stream's last entry (its refresh marker in replicated mode); 0
  // without a log or if the stream logged nothing.
  uint64_t log_position = 0;
};

// The pipeline's cumulative counters, for GetStats.
struct PipelineCounters {
  uint64_t samples_absorbed = 0;
  uint64_t samples_rejected = 0;
  uint64_t updates_applied = 0;  // versions published
  uint64_t prequential_samples = 0;
  uint64_t prequential_errors = 0;
  uint64_t pending_samples = 0;  // absorbed since the last publish
  // Accepted but skipped by selective absorption: predicted correctly with a wide margin
  // ("confident-correct", the only reason so far).
  uint64_t samples_skipped_confident = 0;
  // Absorbed, but staged for the Gram kernel's next block (a deferred absorb; folded in before
  // any refresh). 0 on the float64 host path.
  uint64_t gram_staged_samples = 0;
};

// A snapshot taken by TakeSnapshot.
struct SnapshotResult {
  uint64_t model_version = 0;
  uint64_t log_position = 0;
  std::string path;
  uint64_t bytes = 0;
  uint64_t samples_seen = 0;
  double seconds = 0;
};

class UpdateStream;

class UpdatePipeline {
 public:
  // `store` and `meter` are not owned and must outlive the pipeline; `policy` decides the
  // refreshes (UpdatePolicy::Create("stream-end", ...) for the server's default). Messages are
  // absorbed in chunks of at most `max_batch` rows (>= 1).
  UpdatePipeline(ModelStore* store, EnergyMeter* meter, std::unique_ptr<UpdatePolicy> policy,
                 int max_batch);
  UpdatePipeline(const UpdatePipeline&) = delete;
  UpdatePipeline& operator=(const UpdatePipeline&) = delete;

  // Makes updates durable from now on and enables TakeSnapshot. Call at most once, before the first
  // stream starts.
  void EnableDurability(Durability durability);
  bool durable() const { return durability_.log != nullptr; }

  // A stream over the version served now (its frozen lower tier computes the stream's features).
  // UNAVAILABLE if the store holds no model yet.
  absl::StatusOr<std::unique_ptr<UpdateStream>> StartStream();

  // Makes the log durable through its last record and writes a snapshot of the statistics at that
  // position; then lets the log trim what both kept snapshots cover. FAILED_PRECONDITION without
  // durability. Serialised with the streams (see the top of this file), so the statistics match
  // the log position exactly.
  absl::StatusOr<SnapshotResult> TakeSnapshot();

  PipelineCounters counters() const ABSL_LOCKS_EXCLUDED(mu_);
  const UpdatePolicy& policy() const { return *policy_; }

 private:
  friend class UpdateStream;

  // Solves and publishes a new version; charges the refresh to the meter and `energy`. `reason`
  // names the decision (for the log line).
  absl::StatusOr<model::RefreshPath> Refresh(absl::string_view reason, const ModelVersion& model,
                                             RequestEnergy* energy, absl::Duration* solve_time);

  ModelStore* const store_;
  EnergyMeter* const meter_;
  const std::unique_ptr<UpdatePolicy> policy_;
  const int max_batch_;
  // Set once by EnableDurability(); log == null means not durable.
  Durability durability_;
  // Used by the serialised calls only (see the top of this file): absorb calls so far, and the
  // value it had when the last publish ran (a stream whose last absorb has a number <=
  // published_absorbs_ is reflected in the served readout); samples absorbed since the last
  // snapshot.
  uint64_t absorbs_ = 0;
  uint64_t published_absorbs_ = 0;
  uint64_t samples_since_snapshot_ = 0;
  // Selective absorption's guard: samples absorbed per label since start-up (recovery and the
  // bundle's samples are not counted, which only makes the guard stricter).
  absl::flat_hash_map<std::string, int64_t> absorbed_by_label_;

  mutable absl::Mutex mu_;
  PipelineCounters counters_ ABSL_GUARDED_BY(mu_);
};

// One Update stream's work. Created by UpdatePipeline::StartStream; see the top of this file for
// the order of the work and the threading.
class UpdateStream {
 public:
  UpdateStream(const UpdateStream&) = delete;
  UpdateStream& operator=(const UpdateStream&) = delete;

  // Validates, logs, predicts, absorbs `samples` (one message, in message order), lets the policy
  // decide, and takes an automatic snapshot if one is due. Invalid samples are rejected and listed;
  // `unreadable_rest` non-empty rejects the part of the message after the last sample the
  // front-end could delimit (one more rejection, at index samples.size()). A message with neither
  // samples nor an unreadable rest is rejected as empty. An error (the log failed, the lower tier's
  // backend, a solve) in MessageResult::status means the stream cannot go on: the caller ends it
  // with that status; samples absorbed before stay in the statistics.
  MessageResult OnMessage(std::span<const SampleInput> samples,
                          absl::string_view unreadable_rest = {});

  // Rejects a message the front-end could not read at all (e.g. over its size limit), as one
  // rejection with sample index -1.
  MessageResult RejectMessage(absl::string_view reason);

  // The stream ended normally (not broken or cancelled: then just destroy the stream). INVALID_
  // ARGUMENT if it carried no samples at all; else the policy's stream-end decision (refreshing
  // if it applies), and `done` receives the summary once every record the stream logged is durable,
  // or the log's error. `done` runs exactly once: inline, or on the log's sync thread.
  void OnStreamEnd(absl::AnyInvocable<void(absl::StatusOr<StreamSummary>) &&> done);

 private:
  friend class UpdatePipeline;
  UpdateStream(UpdatePipeline* pipeline, std::shared_ptr<const ModelVersion> model);

  void Reject(int sample_index, absl::string_view reason);
  // Appends the valid samples (valid[i]) to the update log as one record.
  absl::Status LogMessage(std::span<const SampleInput> samples, const std::vector<bool>& valid);
  // Validates, logs, converts and absorbs the message's samples.
  absl::Status AbsorbSamples(std::span<const SampleInput> samples,
                             absl::string_view unreadable_rest);
  // Features, prequential predictions, absorb and charges for a chunk of converted samples.
  absl::Status Absorb(const model::SampleBatch& inputs, const std::vector<std::string>& labels);
  // Converts the valid samples (valid[i]) in chunks of max_batch and absorbs each chunk.
  absl::Status AbsorbValid(std::span<const SampleInput> samples, const std::vector<bool>& valid);
  // Selective absorption: the indices of the rows to absorb (all of them when it is off).
  std::vector<int> RowsToAbsorb(const model::MatrixF& scores, const model::Readout& readout,
                                const std::vector<std::string>& labels) const;
  // Absorbs the chosen rows into the statistics and charges the work.
  absl::Status AbsorbRows(const model::MatrixF& features, const std::vector<std::string>& labels);
  // Forgets the classes a decision names (ModelStore::Forget) and charges the work.
  absl::Status Forget(const Decision& decision);
  // After a message (read or rejected whole): counts it, lets the policy decide (refreshing if the
  // decision applies), then takes an automatic snapshot if one is due.
  void FinishMessage(MessageResult* result);
  // The policy's decision, and the refresh if it applies.
  absl::Status Decide(MessageResult* result);
  // OnStreamEnd in replicated mode (Durability::replication).
  void EndReplicatedStream(absl::AnyInvocable<void(absl::StatusOr<StreamSummary>) &&> done);

  UpdatePipeline* const pipeline_;
  // The version whose (frozen) lower tier computes this stream's features.
  const std::shared_ptr<const ModelVersion> model_;
  // The version current when the message being absorbed arrived: its readout makes the message's
  // prequential predictions.
  std::shared_ptr<const ModelVersion> served_;
  StreamSummary summary_;
  uint32_t message_index_ = 0;
  uint64_t samples_received_ = 0;
  // The update-log sequence number of this stream's last record (0: none yet).
  uint64_t last_sequence_ = 0;
  absl::Duration absorb_time_;
  absl::Duration solve_time_;
  // The current message's prequential errors (one per absorbed sample) and whether it brought a
  // new class.
  std::vector<uint8_t> errors_;
  std::vector<std::string> labels_;  // the label of each entry of errors_
  bool new_class_ = false;
  // Joules by meter phase and the number (UpdatePipeline::absorbs_) of the last absorb (0: none).
  RequestEnergy energy_;
  uint64_t last_absorb_ = 0;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_PIPELINE_H_
