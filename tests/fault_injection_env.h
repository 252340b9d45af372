// A fault-injecting Env for durability tests (LevelDB's db/fault_injection_test.cc is the model):
// the real file system (Env::Default()), plus a record of what an fsync made durable, so that a test
// can "lose power" and see only what a real disk would be guaranteed to keep, and switches that make
// writes, fsyncs or everything after a chosen operation fail.
//
// What it models (the strict POSIX reading, which is what the update log and snapshots rely on):
//   - File data: a file's bytes are durable up to the size it had when a WritableFile::Sync() of it
//     last started and returned OK (Env::Truncate() fsyncs, so its result is durable too). Bytes
//     appended after that are lost at power loss: DropUnsyncedData() truncates the file to that size.
//     Open-with-truncate empties the file durably at once (a simplification: a real file system may
//     bring the old bytes back until an fsync; the log only truncates files that hold no record).
//   - Directory entries: a create (OpenAppendable of a missing file, the PATH.tmp of
//     WriteFileAtomically), a rename (WriteFileAtomically's PATH.tmp -> PATH) and a delete are
//     durable only once SyncDirectory() of their directory returned OK. DropUnsyncedData() undoes the
//     unsynced ones, newest first: a created file disappears, a renamed file goes back to its old
//     name (and the file it replaced comes back), a deleted file comes back with the bytes that were
//     durable when it was deleted. Entries made durable are never undone. A file's data and its
//     entry are independent: a synced file whose create was not synced vanishes.
//   - Not modelled: directory creation (CreateDirectories is durable at once), reordering of writes
//     inside the synced prefix, torn sectors inside it, and files changed behind the Env's back.
//     Paths must be real (it wraps the POSIX Env and renames with rename(2)).
//
// Faults:
//   - fail_writes / fail_sync: every Append (and WriteFileAtomically's write) / every WritableFile
//     Sync and SyncDirectory fails with an error mentioning "injected", changing nothing.
//   - skip_file_syncs: WritableFile::Sync returns OK but makes nothing durable, as if the code under
//     test had left out its fsync. Only for proving that a test notices lost acknowledged data.
//   - CrashAfter(n): the next n mutating operations (see operations()) run; the one after is the
//     crash. A crashing Append writes the first half of its bytes and fails (a torn write); any other
//     crashing operation does nothing and fails. Every later mutating operation fails too, as if the
//     process were gone: the program under test may go on running, but the disk no longer changes.
//     Reads still work.
//   - DropUnsyncedData(): power loss and reboot, as above; afterwards the Env is healthy again (no
//     crash, nothing unsynced) and can be used for recovery.
//
// Thread-safe, like every Env. A test hook, not a production Env.
#ifndef STRATA_TESTS_FAULT_INJECTION_ENV_H_
#define STRATA_TESTS_FAULT_INJECTION_ENV_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "update/env.h"

namespace strata::update {

class FaultInjectionEnv final : public Env {
 public:
  FaultInjectionEnv() = default;

  // Fault switches; may be flipped at any time from any thread.
  std::atomic<bool> fail_writes{false};
  std::atomic<bool> fail_sync{false};
  std::atomic<bool> skip_file_syncs{false};
  // WritableFile::Sync() calls so far (failed ones included).
  std::atomic<int> syncs{0};
  // While set, WriteFileAtomically() fails before touching any file, as when the disk is full;
  // `atomic_writes` counts its calls (failed ones included).
  std::atomic<bool> fail_atomic_writes{false};
  std::atomic<int> atomic_writes{0};

  // The operation after the next `operations` mutating ones crashes (see the file comment).
  // Negative: never (the default).
  void CrashAfter(int64_t operations);
  // Whether the crash has happened, and which operation it hit ("write PATH", "rename PATH.tmp",
  // "fsync directory DIR", ...; empty before the crash).
  bool crashed() const;
  std::string crashed_operation() const;
  // Mutating operations so far: OpenAppendable, Append, WritableFile::Sync, DeleteFile, Truncate,
  // SyncDirectory; WriteFileAtomically counts as its five steps (create PATH.tmp, write, fsync,
  // rename, directory fsync). Counts the crashed operation, not those refused after it.
  int64_t operations() const;

  // Power loss, then reboot: truncates every file to its durable size and undoes every directory
  // entry change not made durable (see the file comment). Clears the crash. Errors name the path.
  absl::Status DropUnsyncedData();

  // Env.
  absl::StatusOr<std::unique_ptr<WritableFile>> OpenAppendable(const std::string& path,
                                                               bool truncate) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path) override;
  absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) override;
  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) override;
  absl::Status CreateDirectories(const std::string& dir) override;
  absl::Status DeleteFile(const std::string& path) override;
  absl::Status Truncate(const std::string& path, uint64_t size) override;
  absl::Status SyncDirectory(const std::string& dir) override;

 private:
  class File;

  struct FileState {
    uint64_t size = 0;    // bytes written through the Env
    uint64_t synced = 0;  // bytes an OK fsync covered
  };
  // An unsynced change to a directory entry, with what undoing it needs.
  struct EntryChange {
    enum Kind { kCreate, kRename, kDelete } kind;
    std::string path;  // created / renamed-to / deleted
    std::string from;  // kRename: the old name
    // kRename: the durable bytes of the file the rename replaced (none: there was none).
    // kDelete: the durable bytes of the deleted file.
    std::optional<std::string> bytes;
  };

  // Counts one mutating operation: OK to go ahead, or the crash error (for this operation or any
  // after it). `torn` is set when this very operation is the crash (an Append then writes half).
  absl::Status BeginOperation(absl::string_view what, const std::string& path, bool* torn = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The bytes of `path` a power loss would keep (its synced prefix if tracked; untracked files
  // existed before the Env saw them and count as durable). nullopt if missing.
  std::optional<std::string> DurableBytes(const std::string& path)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteFileAtomicallySteps(const std::string& path, const std::string& tmp,
                                        absl::string_view contents);

  Env* const base_ = Env::Default();
  mutable absl::Mutex mu_;
  int64_t operations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t crash_at_ ABSL_GUARDED_BY(mu_) = -1;  // the operations_ value that crashes; -1: none
  bool crashed_ ABSL_GUARDED_BY(mu_) = false;
  std::string crashed_operation_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
  // Directory -> its unsynced entry changes, oldest first.
  std::map<std::string, std::vector<EntryChange>> unsynced_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::update

#endif  // STRATA_TESTS_FAULT_INJECTION_ENV_H_
