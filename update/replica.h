// A replica that follows the replicated update log (docs/replication.md): it absorbs every samples
// entry of the JetStream stream in sequence order, whichever replica received it, and solves and
// publishes a new model version at every refresh marker. Replicas that reached the same position
// therefore hold bit-identical statistics and serve the same version with the same readout:
//
//   * each entry is absorbed exactly as recovery absorbs a record (the same extractor, chunks of
//     `chunk_rows` rows), and with the int8 Gram kernel G and Q are exact integer sums, folded into
//     float64 only at refresh markers, the same positions on every replica;
//   * a refresh re-factors G from scratch (PublishOptions::mode kForceRefactor), so the readout is
//     a function of the statistics alone, also on a replica restored from a snapshot;
//   * versions number the refresh markers: the bundle's version (or the snapshot's) + 1 per marker;
//   * snapshots are taken only right after a refresh marker, where nothing is left to fold;
//   * a replica behind the stream (catching up) skips the solve of a marker when it has already
//     read a later marker (ModelStore::SkipPublish: the statistics fold there all the same, and
//     the version number advances), publishing at least once a second and at the last marker.
//
// A new or restarted replica first loads the newest intact snapshot from the stream's bucket
// (LoadReplicaBase), then follows the stream from the position after it. After publishing at a
// marker, a replica stores a snapshot if at least `snapshot_every_samples` samples were absorbed
// since its last one and the bucket holds none at that position or newer; it then purges the
// stream up to the older of the two snapshots kept, once that one is `trim_delay` old. A replica
// that finds entries it needs purged all the same stops following (DATA_LOSS; strata-server then
// exits, and its restart catches up from the newest snapshot).
//
// Threading: one thread follows the log and is the only writer of the store; another uploads
// snapshots. Every public method is thread-safe.
#ifndef STRATA_UPDATE_REPLICA_H_
#define STRATA_UPDATE_REPLICA_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "update/energy_meter.h"
#include "update/jetstream_update_log.h"
#include "update/log_replication.h"
#include "update/model_store.h"

namespace strata::update {

struct ReplicaOptions {
  // Rows per absorb chunk (strata-server's --max_batch). Every replica of a stream must use the
  // same value (with the float readout the float64 sums depend on the chunking).
  int chunk_rows = 1024;
  // A snapshot is stored at the first refresh marker after this many absorbed samples; 0: never.
  uint64_t snapshot_every_samples = 100000;
  // LogReplication::ack_wait. Default 10 s.
  absl::Duration ack_wait = absl::Seconds(10);
  // The stream is purged up to the older of the two kept snapshots only once that snapshot is
  // this old: a replica that started from an older base (it listed the bucket just before newer
  // snapshots appeared) has this long to catch up past it. Default 10 min.
  absl::Duration trim_delay = absl::Minutes(10);
  // Readiness (Start's on_readiness): the replica is behind, not ready, while the entry it applies
  // had more than `max_lag_entries` entries after it in the stream, or had any and was stored more
  // than `max_lag` before it was applied; ready again once neither holds. Defaults 1000, 30 s.
  uint64_t max_lag_entries = 1000;
  absl::Duration max_lag = absl::Seconds(30);
};

// Where a replica starts from.
struct ReplicaBase {
  uint64_t position = 0;       // the snapshot's log position; 0 for the bundle
  uint64_t model_version = 0;  // the version to serve the base as
  std::string snapshot;        // "log position <n> (<bytes> bytes)", or empty for the bundle
  std::vector<std::string> snapshots_skipped;  // errors of damaged snapshots skipped
};

// Loads the newest intact snapshot in `log`'s bucket onto `bundle` (its statistics and version;
// the bundle's int8 readout scales are kept); with none, the bundle is the base at position 0.
// FAILED_PRECONDITION if a snapshot's feature width differs from `extractor`'s (another model's
// stream); UNAVAILABLE if the bucket cannot be read.
absl::StatusOr<ReplicaBase> LoadReplicaBase(JetStreamUpdateLog& log,
                                            const model::FeatureExtractor& extractor,
                                            model::Bundle* bundle);

struct ReplicaCounters {
  uint64_t applied_position = 0;  // the last entry applied
  uint64_t pending_entries = 0;   // entries the stream held after it when it arrived
  uint64_t entries_applied = 0;
  uint64_t samples_absorbed = 0;
  uint64_t refreshes = 0;
  uint64_t snapshots_stored = 0;
  uint64_t prequential_samples = 0;  // samples checked against the readout before absorbing
  uint64_t prequential_errors = 0;
  bool ready = false;   // within ReplicaOptions' lag bounds of the stream's tail
  bool failed = false;  // the replica stopped following the log (see status())
};

class Replica final : public LogReplication {
 public:
  // `store` must already hold the base (ModelStore::Load with its log position); `log`, `store`
  // and `meter` are not owned and must outlive the replica. Follows entries after `position`.
  Replica(JetStreamUpdateLog* log, ModelStore* store, EnergyMeter* meter, ReplicaOptions options,
          uint64_t position);
  // Stop().
  ~Replica() override;
  Replica(const Replica&) = delete;
  Replica& operator=(const Replica&) = delete;

  // Starts following. `on_failure` (may be null) is called once, on the replica's thread, if it
  // stops following for good (a malformed entry, entries purged before it could read them).
  // `on_readiness` (may be null) is called on the replica's thread whenever the replica becomes
  // ready or falls behind (ReplicaOptions::max_lag_entries, max_lag); it starts out not ready.
  absl::Status Start(std::function<void(const absl::Status&)> on_failure,
                     std::function<void(bool ready)> on_readiness = nullptr);

  // Stops following and uploading (an upload in progress finishes first) and completes every
  // WhenServed waiter with UNAVAILABLE. Idempotent; the store keeps the last published version.
  void Stop();

  // Blocks until every entry up to `position` is applied: OK; DEADLINE_EXCEEDED after `timeout`;
  // the failure if the replica stopped following.
  absl::Status WaitApplied(uint64_t position, absl::Duration timeout);

  ReplicaCounters counters() const;
  absl::Status status() const;

  // LogReplication.
  absl::StatusOr<Appended> AppendSamples(absl::string_view payload,
                                         absl::string_view key) override {
    return log_->AppendSamples(payload, key);
  }
  absl::StatusOr<Appended> AppendRefresh(const RefreshEntry& refresh,
                                         absl::string_view key) override {
    return log_->AppendRefresh(EncodeRefreshEntry(refresh), key);
  }
  absl::StatusOr<AppliedEntry> AwaitApplied(uint64_t position, absl::Duration timeout) override;
  void WhenServed(uint64_t position, absl::Time deadline,
                  absl::AnyInvocable<void(absl::Status) &&> done) override;
  absl::Duration ack_wait() const override { return options_.ack_wait; }

 private:
  struct Waiter {
    absl::Time deadline;
    absl::AnyInvocable<void(absl::Status) &&> done;
  };

  void Run();
  // Reads entries that are in the stream already into ahead_ (waiting for one if it is empty).
  absl::Status ReadAhead();
  absl::Status Apply(const LogEntry& entry);
  // Absorbs a samples entry's record; `applied` receives its prequential check.
  absl::Status AbsorbEntry(const LogEntry& entry, AppliedEntry* applied);
  // The prequential check of `features` against `readout`, appended to `applied`.
  void CheckPrequential(const model::Readout& readout, const model::MatrixF& features,
                        std::span<const std::string> labels, AppliedEntry* applied);
  // A refresh entry: forgets what it names, then solves (or, catching up, skips the solve).
  absl::Status RefreshEntryAt(const LogEntry& entry);
  void RefreshAt(uint64_t position);
  // Ready or behind after applying an entry `pending` entries behind the tail, stored `age` ago.
  void UpdateReadiness(uint64_t pending, absl::Duration age);
  // Hands a snapshot at `position` to the uploader if one is due.
  void MaybeSnapshot(uint64_t position);
  void UploadLoop();
  absl::Status Upload(uint64_t position, const std::string& contents);
  // Completes the waiters the served version satisfies and those past their deadline.
  void CompleteWaiters();
  void Fail(absl::Status status);

  JetStreamUpdateLog* const log_;
  ModelStore* const store_;
  EnergyMeter* const meter_;
  const ReplicaOptions options_;
  std::function<void(const absl::Status&)> on_failure_;
  std::function<void(bool)> on_readiness_;
  std::unique_ptr<JetStreamUpdateLog::Reader> reader_;
  // Used by the following thread only.
  uint64_t samples_since_snapshot_ = 0;
  absl::Time last_publish_ = absl::Now();
  std::deque<LogEntry> ahead_;  // read, not yet applied
  int markers_ahead_ = 0;       // refresh markers in ahead_

  mutable absl::Mutex mu_;
  ReplicaCounters counters_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::multimap<uint64_t, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // The recent samples entries' prequential checks, by log position (AwaitApplied), oldest first.
  std::map<uint64_t, AppliedEntry> applied_ ABSL_GUARDED_BY(mu_);
  // The next snapshot to upload (position, contents); a newer one replaces it.
  std::optional<std::pair<uint64_t, std::string>> upload_ ABSL_GUARDED_BY(mu_);

  std::thread follower_;
  std::thread uploader_;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_REPLICA_H_
