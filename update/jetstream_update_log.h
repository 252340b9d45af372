// The replicated update log: a NATS JetStream stream, replicated over a cluster of nats-servers
// (R3 by default) and acknowledged by a quorum, that every strata-server replica appends to and
// follows (docs/replication.md specifies the entries, the snapshot bucket and the rules).
//
// Writing: Append() publishes one update record (update/update_record.h) as one JetStream message
// and returns only once JetStream acknowledged it, i.e. once a quorum of the stream's replicas
// stored it; its stream sequence number is the record's log position. AppendRefresh() publishes a
// refresh marker: every replica that follows the log solves and publishes a new readout there.
// Every message carries a message id (Nats-Msg-Id) made of this process's replica id, a per-process
// nonce and a counter; a publish whose acknowledgement is lost is retried with the same id, and
// JetStream's de-duplication window makes the retry store nothing new. Unlike FileUpdateLog a
// failed publish does not fail the log for good: the record may or may not have been stored (it was
// not acknowledged), later appends are independent of it, so the next Append() simply tries again.
// While the stream has no quorum, Append() fails with UNAVAILABLE after `publish_timeout`.
//
// Reading: OpenReader() follows the stream in sequence order from a position, asking the stream's
// leader for each entry by its sequence (a direct message get: only committed entries, the same on
// every replica), woken by a core-NATS subscription on the stream's subject when something is
// published. (Ordered push consumers were tried first: under SIGKILLs of NATS nodes, nats.c 3.4 /
// nats-server 2.9 delivered sequences with gaps, which a log that must be read exactly cannot
// have.)
//
// Snapshots: PutSnapshot() / GetSnapshot() keep snapshot files (update/snapshot.h's format) in a
// JetStream key-value bucket replicated like the stream, in chunks under the NATS payload limit.
//
// No NATS header is included here: only jetstream_update_log.cc sees the client library.
// Thread-safe.
#ifndef STRATA_UPDATE_JETSTREAM_UPDATE_LOG_H_
#define STRATA_UPDATE_JETSTREAM_UPDATE_LOG_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "update/log_replication.h"
#include "update/update_log.h"

namespace strata::update {

struct JetStreamOptions {
  // The NATS servers to connect to ("nats://127.0.0.1:4222", ...); the client fails over between
  // them and reconnects forever. Required.
  std::vector<std::string> servers;
  // The stream's name. Its subject is "<stream>.records"; the snapshot bucket is
  // "<stream>_snapshots". Default "STRATA". Every replica of one service uses the same name.
  std::string stream = "STRATA";
  // Replicas of the stream and the bucket when this process creates them (an existing stream is
  // used as it is). Default 3: a majority (2) must store a record before it is acknowledged, so
  // one NATS node may fail without losing or blocking anything.
  int replicas = 3;
  // This replica's name (message ids, logs). Required; unique among the service's replicas.
  std::string replica_id;
  // How long one Append() keeps retrying (no stream leader, lost acknowledgements) before it fails
  // with UNAVAILABLE. Default 5 s.
  absl::Duration publish_timeout = absl::Seconds(5);
  // How long Connect() waits for the servers and the stream (a cluster electing its leaders takes
  // seconds). Default 60 s.
  absl::Duration connect_timeout = absl::Seconds(60);
  // JetStream's de-duplication window for message ids, when this process creates the stream.
  // Default 2 min: longer than any retry.
  absl::Duration duplicate_window = absl::Minutes(2);
};

// What a log entry asks the replicas to do.
enum class LogEntryKind {
  kSamples,  // absorb the samples of the payload (an update record)
  kRefresh,  // solve the readout and publish a new model version (payload: a RefreshEntry)
};

struct LogEntry {
  uint64_t sequence = 0;  // the stream sequence: the log position
  LogEntryKind kind = LogEntryKind::kSamples;
  std::string payload;
  absl::Time time;       // when the stream stored it (the stream leader's clock)
  uint64_t pending = 0;  // entries the stream held after this one when it was delivered
};

class JetStreamUpdateLog final : public UpdateLog {
 public:
  // Connects to the servers, creates the stream and the snapshot bucket if they do not exist (with
  // options.replicas replicas), and checks the stream is usable. UNAVAILABLE if that does not
  // succeed within options.connect_timeout; INVALID_ARGUMENT for missing options.
  static absl::StatusOr<std::unique_ptr<JetStreamUpdateLog>> Connect(JetStreamOptions options);
  ~JetStreamUpdateLog() override;
  JetStreamUpdateLog(const JetStreamUpdateLog&) = delete;
  JetStreamUpdateLog& operator=(const JetStreamUpdateLog&) = delete;

  // Publishes one update record and returns its stream sequence once a quorum stored it.
  // INVALID_ARGUMENT if the payload is over max_payload(); UNAVAILABLE if JetStream did not
  // acknowledge within publish_timeout (the record may still be stored; it was not acknowledged).
  absl::StatusOr<uint64_t> Append(absl::string_view payload) override;
  // Append() with the message id `message_id` (this process's own unique id if empty): a message
  // with an id the stream stored within its de-duplication window is not stored again, and the
  // result names the first one's sequence with `duplicate` set. Ids must be printable ASCII.
  absl::StatusOr<Appended> AppendSamples(absl::string_view payload, absl::string_view message_id);
  // Publishes a refresh entry (update_record.h's EncodeRefreshEntry), as AppendSamples().
  absl::StatusOr<Appended> AppendRefresh(absl::string_view payload, absl::string_view message_id);

  // Every record Append() returned is already durable: `done` runs inline with OK.
  void SyncAsync(uint64_t sequence, absl::AnyInvocable<void(absl::Status) &&> done) override;
  absl::Status Sync(uint64_t sequence) override;
  // Purges the stream's entries with sequence <= `position` (the oldest kept snapshot covers them).
  absl::Status Trim(uint64_t position) override;
  // The last sequence this process appended (0 if none).
  uint64_t last_sequence() const override;

  // The stream's last sequence now (its tail), asked of JetStream. UNAVAILABLE without quorum.
  absl::StatusOr<uint64_t> TailSequence();
  // The stream's first and last sequence now (first > last when empty).
  absl::StatusOr<std::pair<uint64_t, uint64_t>> SequenceRange();
  // The largest message the NATS servers accept, in bytes (their max_payload).
  int64_t max_payload() const { return max_payload_; }
  const JetStreamOptions& options() const { return options_; }

  // Follows the stream in order. Not thread-safe: one thread reads one Reader.
  class Reader {
   public:
    virtual ~Reader() = default;
    // The next entry, waiting up to `timeout`; nullopt if none arrived in that time. Errors only
    // for what cannot be retried (a malformed entry: DATA_LOSS naming its sequence).
    virtual absl::StatusOr<std::optional<LogEntry>> Next(absl::Duration timeout) = 0;
  };
  // A reader of the entries with sequence > `after`.
  absl::StatusOr<std::unique_ptr<Reader>> OpenReader(uint64_t after);

  // Stores a snapshot covering the log through `position` (its file contents) unless the bucket
  // lists one at that position or newer, lists it in the bucket's index (compare-and-set, so
  // replicas storing at once agree), and deletes every snapshot but the newest two.
  absl::Status PutSnapshot(uint64_t position, absl::string_view contents);
  // The positions of the stored snapshots (the index), newest first.
  absl::StatusOr<std::vector<uint64_t>> SnapshotPositions();
  // When the snapshot at `position` was stored (its manifest's time); NOT_FOUND if there is none.
  absl::StatusOr<absl::Time> SnapshotTime(uint64_t position);
  // The contents stored for `position`; NOT_FOUND if there is none; DATA_LOSS if a chunk is
  // missing or its checksum does not match.
  absl::StatusOr<std::string> GetSnapshot(uint64_t position);

  // The client library's handles, opaque outside jetstream_update_log.cc.
  struct Nats;

 private:
  JetStreamUpdateLog(JetStreamOptions options, std::unique_ptr<Nats> nats);
  absl::StatusOr<Appended> Publish(absl::string_view kind, absl::string_view payload,
                                   absl::string_view message_id);
  absl::Status DeleteSnapshot(uint64_t position);

  const JetStreamOptions options_;
  const std::unique_ptr<Nats> nats_;
  const std::string subject_;
  const std::string id_prefix_;  // "<replica id>-<nonce>-"
  int64_t max_payload_ = 0;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> last_sequence_{0};
  // Serialises snapshot writes (their clean-up lists the bucket).
  absl::Mutex snapshot_mu_;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_JETSTREAM_UPDATE_LOG_H_
