// The update log: where every accepted Update message is recorded before it is absorbed, and what
// recovery replays.
//
// UpdateLog is the interface the update pipeline (update/pipeline.h) writes through: append records,
// learn when they are durable, trim what a snapshot covers. FileUpdateLog is the embedded
// implementation, an append-only, checksummed, segmented log of files with group commit;
// JetStreamUpdateLog (update/jetstream_update_log.h) is the replicated one (NATS JetStream,
// acknowledged by a quorum), which unlike the file log recovers from a failed append by itself.
//
// The file format is specified in docs/update-log-format.md; the constants live here.
//
// Writing: FileUpdateLog::Open() starts a new segment; Append() writes one record (not yet durable) and
// returns its sequence number; Sync() / SyncAsync() wait until a sequence number is durable. One
// background thread does every fsync: each fsync covers all records appended before it started, so
// concurrent writers share fsyncs (group commit). After a failed write or fsync every later Append()
// and Sync() fails with that error.
//
// Reading (at start-up): ReadUpdateLog() walks the segments, hands each intact record after a given
// position to a visitor, reports a torn tail (without changing anything), and fails with DATA_LOSS
// naming the file and offset on corruption. CutTornTail() then removes the torn bytes.
#ifndef STRATA_UPDATE_UPDATE_LOG_H_
#define STRATA_UPDATE_UPDATE_LOG_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "update/env.h"

namespace strata::update {

// ---- Format constants (docs/update-log-format.md) ----
inline constexpr char kUpdateLogMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'U', 'L'};
// Version 2 added text samples (payload encoding 3); a version-1 segment holds none and reads the
// same way. The writer writes kUpdateLogFormatVersion; the reader reads every version from
// kOldestUpdateLogFormatVersion up.
inline constexpr uint32_t kUpdateLogFormatVersion = 2;
inline constexpr uint32_t kOldestUpdateLogFormatVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 24;
inline constexpr size_t kRecordHeaderBytes = 9;  // crc32c u32, length u32, type u8
inline constexpr uint32_t kMaxRecordPayloadBytes = 256u << 20;
inline constexpr uint8_t kRecordTypeUpdateMessage = 1;

// "update-<20-digit first sequence>.log"
std::string SegmentFileName(uint64_t first_sequence);
// The first sequence of a segment file name, or nullopt if `name` is not one.
std::optional<uint64_t> ParseSegmentFileName(absl::string_view name);

// What recovery cut from the end of the newest segment.
struct TornTail {
  std::string path;
  uint64_t offset = 0;         // where the torn region starts (the file keeps bytes before it)
  uint64_t bytes_dropped = 0;  // file size - offset
  bool delete_file = false;    // the segment header itself was torn: the file goes
  std::string reason;
};

struct LogScan {
  // The sequence number of the last intact record (0 if the log is empty or missing).
  uint64_t last_sequence = 0;
  // Records handed to the visitor.
  uint64_t records_visited = 0;
  uint64_t segments = 0;
  std::optional<TornTail> torn_tail;
};

// Reads the log in `dir` and calls `visit(sequence, payload)` for every intact record with sequence
// > `after`, in order. Segments that hold only records <= `after` are not read. Succeeds with a
// torn tail reported (not cut) in LogScan: a bad record in the newest segment with no valid record
// after it (every later byte offset is tried), however its length field reads. DATA_LOSS
// "update log <path>: offset <n>: <what>" on corruption: damage followed by a valid record, damage
// in an older segment, segments that do not reach back to `after` + 1; a visitor error is returned
// with the same file-and-offset prefix. An empty or missing log is fine (last_sequence 0).
absl::StatusOr<LogScan> ReadUpdateLog(
    Env* env, const std::string& dir, uint64_t after,
    absl::FunctionRef<absl::Status(uint64_t sequence, absl::string_view payload)> visit);

// Removes a torn tail reported by ReadUpdateLog (truncate + fsync, or delete + directory fsync).
absl::Status CutTornTail(Env* env, const std::string& dir, const TornTail& tail);

struct UpdateLogOptions {
  // A segment past this size is closed (fsync'd) and a new one started at the next append.
  // Default 64 MiB. Smaller segments are deleted sooner after snapshots; larger ones mean fewer files.
  uint64_t segment_bytes = uint64_t{64} << 20;
};

// An ordered log of update records. Sequence numbers start at 1 and increase by 1 per record.
// Implementations must be thread-safe. After a failed write or sync, every later Append() and Sync()
// fails with that error (the caller cannot know what became durable), unless the implementation
// can tell that later records are independent of the failed one (JetStreamUpdateLog).
class UpdateLog {
 public:
  virtual ~UpdateLog() = default;

  // Appends one record (an update-record payload, update/update_record.h) and returns its sequence
  // number. The record is not yet durable. INVALID_ARGUMENT if the payload is over
  // kMaxRecordPayloadBytes; the log's failure if it has failed.
  virtual absl::StatusOr<uint64_t> Append(absl::string_view payload) = 0;

  // Calls `done` once every record with sequence <= `sequence` is durable (OK), or with the error
  // that failed the log. `done` may run on another thread (or inline if already durable / failed);
  // it must not block for long.
  virtual void SyncAsync(uint64_t sequence, absl::AnyInvocable<void(absl::Status) &&> done) = 0;
  // Blocking SyncAsync.
  virtual absl::Status Sync(uint64_t sequence) = 0;

  // Records with sequence <= `position` are no longer needed (the snapshots recovery falls back to
  // cover them): the log may delete them. It may keep some.
  virtual absl::Status Trim(uint64_t position) = 0;

  // The last appended sequence number (0 if none).
  virtual uint64_t last_sequence() const = 0;
};

// The update log in files: segments in a directory, fsync'd by one background thread (group
// commit). The format is docs/update-log-format.md.
class FileUpdateLog final : public UpdateLog {
 public:
  // Opens the log in `dir` for appending: creates a new segment whose first record will be
  // `next_sequence` (>= 1), replacing a segment file of that name (recovery guarantees it holds no
  // record), fsyncs it and the directory, and starts the sync thread. `env` is not owned and must
  // outlive the log. The log must have been recovered first (ReadUpdateLog + CutTornTail).
  static absl::StatusOr<std::unique_ptr<FileUpdateLog>> Open(Env* env, std::string dir,
                                                             uint64_t next_sequence,
                                                             UpdateLogOptions options = {});
  // Completes pending waiters (after a last fsync), stops the sync thread.
  ~FileUpdateLog() override;
  FileUpdateLog(const FileUpdateLog&) = delete;
  FileUpdateLog& operator=(const FileUpdateLog&) = delete;

  // Appends one record of type kRecordTypeUpdateMessage and returns its sequence number. The record
  // is written to the file but not yet durable. Rolls to a new segment first if the current one is
  // full. INVALID_ARGUMENT if the payload is over kMaxRecordPayloadBytes; the log's failure if it
  // has failed; a write error fails the log. Thread-safe.
  absl::StatusOr<uint64_t> Append(absl::string_view payload) override;

  // Calls `done` once every record with sequence <= `sequence` is durable (OK), or with the error
  // that failed the log. `done` runs on the sync thread (or inline if already durable / failed); it
  // must not block for long. Thread-safe.
  void SyncAsync(uint64_t sequence, absl::AnyInvocable<void(absl::Status) &&> done) override;
  // Blocking SyncAsync. Thread-safe.
  absl::Status Sync(uint64_t sequence) override;

  // Deletes every segment (except the current one) whose records all have sequence <= `position`,
  // then fsyncs the directory. Thread-safe.
  absl::Status DeleteSegmentsThrough(uint64_t position);
  // DeleteSegmentsThrough.
  absl::Status Trim(uint64_t position) override;

  // The last appended sequence number (next_sequence - 1 right after Open()).
  uint64_t last_sequence() const override;

  struct Counters {
    uint64_t records = 0;  // appended by this process
    uint64_t bytes = 0;
    uint64_t fsyncs = 0;  // of record data (group commits and segment rolls)
    uint64_t segments_created = 0;
    uint64_t segments_deleted = 0;
  };
  Counters counters() const;

 private:
  struct Waiter {
    uint64_t sequence;
    absl::AnyInvocable<void(absl::Status) &&> done;
  };

  FileUpdateLog(Env* env, std::string dir, UpdateLogOptions options);
  // Creates the segment file for `first_sequence` and makes it current.
  absl::Status StartSegment(uint64_t first_sequence) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SyncLoop();
  bool SyncWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Env* const env_;
  const std::string dir_;
  const UpdateLogOptions options_;

  mutable absl::Mutex mu_;
  // The current segment. A shared_ptr so the sync thread can fsync it without holding mu_ while an
  // Append rolls to a new segment.
  std::shared_ptr<WritableFile> file_ ABSL_GUARDED_BY(mu_);
  uint64_t file_first_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::string> segments_ ABSL_GUARDED_BY(mu_);  // first sequence -> path
  uint64_t last_appended_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_synced_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  std::deque<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Counters counters_ ABSL_GUARDED_BY(mu_);

  std::thread sync_thread_;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_UPDATE_LOG_H_
