// What the update pipeline needs of a replicated update log besides UpdateLog: in replicated mode
// (update/replica.h) an Update stream only appends its records; every replica, the receiving one
// included, absorbs them by following the log, and refreshes where the log says.
#ifndef STRATA_UPDATE_LOG_REPLICATION_H_
#define STRATA_UPDATE_LOG_REPLICATION_H_

#include <cstdint>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace strata::update {

class LogReplication {
 public:
  virtual ~LogReplication() = default;

  // Appends a refresh marker: every replica solves and publishes a new version when it reaches it.
  // Returns its log position once a quorum stored it; UNAVAILABLE without quorum.
  virtual absl::StatusOr<uint64_t> AppendRefresh() = 0;

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
