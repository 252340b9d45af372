// The file-system operations of the server's state directory (update log and snapshots), behind an
// interface so that tests can inject faults (LevelDB's Env pattern): a failed fsync, a failed write.
//
// Env::Default() is the real POSIX file system. Every error names the path and the failing call.
// Implementations must be thread-safe; a WritableFile is used by one thread at a time except that
// Sync() may run concurrently with Append() (the update log's sync thread fsyncs while appends go on).
#ifndef STRATA_UPDATE_ENV_H_
#define STRATA_UPDATE_ENV_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::update {

// A file open for appending.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends all of `data` (retrying short writes). On error some prefix may have been written.
  virtual absl::Status Append(absl::string_view data) = 0;
  // fsync(2): makes everything appended so far durable.
  virtual absl::Status Sync() = 0;
  // Bytes in the file (its size when opened plus everything appended since).
  virtual uint64_t Size() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The real file system. Never deleted.
  static Env* Default();

  // Opens `path` for appending, creating it (mode 0644) if missing; if `truncate`, empties it first.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> OpenAppendable(const std::string& path,
                                                                       bool truncate) = 0;
  // The whole file. NOT_FOUND if missing.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;
  // Replaces `path` atomically: PATH.tmp, fsync, rename, fsync of the directory.
  virtual absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) = 0;
  // Names (not paths) of the entries of `dir`, in no particular order.
  virtual absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) = 0;
  // Creates `dir` and missing parents; OK if it exists.
  virtual absl::Status CreateDirectories(const std::string& dir) = 0;
  virtual absl::Status DeleteFile(const std::string& path) = 0;
  // Truncates `path` to `size` bytes and fsyncs it.
  virtual absl::Status Truncate(const std::string& path, uint64_t size) = 0;
  // fsyncs the directory itself, making created, renamed and deleted entries durable.
  virtual absl::Status SyncDirectory(const std::string& dir) = 0;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_ENV_H_
