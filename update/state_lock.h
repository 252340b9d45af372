// The state directory's lock: one strata-server per --state_dir.
//
// Two servers recovering and appending to the same update log would interleave records and
// overwrite each other's snapshots and model-versions mark. The first server to start holds an
// exclusive flock(2) on <dir>/LOCK for its whole life (the kernel releases it when the process
// ends, however it ends: kill -9 included, so a crash never leaves a stale lock); a second server
// fails at start-up, naming the holder's pid (written into the file). Not part of update::Env: a
// lock is held by the process, not a file operation to inject faults into.
#ifndef STRATA_UPDATE_STATE_LOCK_H_
#define STRATA_UPDATE_STATE_LOCK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace strata::update {

class StateDirLock {
 public:
  // Takes the lock of `dir` (created if missing). FAILED_PRECONDITION "... is in use by another
  // strata-server (pid N)" if another process holds it; the OS's error (naming the path) if the
  // file cannot be opened.
  static absl::StatusOr<std::unique_ptr<StateDirLock>> Acquire(const std::string& dir);

  // Releases the lock.
  ~StateDirLock();
  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  StateDirLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  const std::string path_;
  const int fd_;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_STATE_LOCK_H_
