// What the update pipeline needs of a replicated update log besides UpdateLog: in replicated mode
// (update/replica.h) an Update stream only appends its records; every replica, the receiving one
// included, absorbs them by following the log, and refreshes where the log says. The update policy
// of the replica that received a stream decides the refreshes (from what its own follower found at
// each entry) and records them as refresh entries, so every replica applies them at the same place.
#ifndef STRATA_UPDATE_LOG_REPLICATION_H_
#define STRATA_UPDATE_LOG_REPLICATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "update/update_record.h"

namespace strata::update {

// An entry appended to the replicated log.
struct Appended {
  uint64_t position = 0;  // its log position (the first copy's, for a duplicate)
  // The log already held a message with this id (a client's retry of a stream, recognised by its
  // stream_id): nothing new was stored.
  bool duplicate = false;
};

// What following a samples entry found, for the receiving replica's update policy: the
// prequential check of each sample against the readout this replica served when it applied the
// entry, and whether the entry added a class. Only the decision taken from it is in the log.
struct AppliedEntry {
  std::vector<uint8_t> prequential_errors;  // one per sample: 1 if mispredicted
  std::vector<std::string> labels;          // the samples' labels, same order
  bool new_class = false;
};

class LogReplication {
 public:
  virtual ~LogReplication() = default;

  // Appends an update record (the samples of one Update message) with the message id `key`
  // (empty: a fresh unique id), once a quorum stored it; UNAVAILABLE without quorum.
  virtual absl::StatusOr<Appended> AppendSamples(absl::string_view payload,
                                                 absl::string_view key) = 0;

  // Appends a refresh entry (update_record.h): every replica forgets what it names, then solves and
  // publishes a new version when it reaches it. As AppendSamples.
  virtual absl::StatusOr<Appended> AppendRefresh(const RefreshEntry& refresh,
                                                 absl::string_view key) = 0;

  // What this replica found following the samples entry at `position`, once it applied it (waiting
  // up to `timeout`: DEADLINE_EXCEEDED). NOT_FOUND if the entry is not a samples entry or is too
  // far behind (only recent entries are kept); UNAVAILABLE if the replica stopped following.
  virtual absl::StatusOr<AppliedEntry> AwaitApplied(uint64_t position, absl::Duration timeout) = 0;

  // Calls `done` once this replica serves a version that includes every log entry up to
  // `position` (ModelVersion::log_position >= position): OK; or DEADLINE_EXCEEDED at `deadline`;
  // or UNAVAILABLE if this replica stopped following the log. `done` runs inline (already there)
  // or on the replica's thread, and must not block.
  virtual void WhenServed(uint64_t position, absl::Time deadline,
                          absl::AnyInvocable<void(absl::Status) &&> done) = 0;

  // How long an Update stream's acknowledgement waits for this replica to serve the stream's
  // records (its summary then names the version that includes them) before it is sent anyway
  // (UpdateSummary.readout_current false). The records are durable either way.
  virtual absl::Duration ack_wait() const = 0;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_LOG_REPLICATION_H_
