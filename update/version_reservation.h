// The durable high-water mark of model versions in a state directory (docs/model-versions-format.md).
//
// The contract says versions only grow; a server with --state_dir keeps that across restarts and
// crashes by never letting a version become visible before this file covers it, and by numbering
// from above the file's mark after a restart. Versions are reserved in blocks of kVersionBlock, so
// that a publish costs an atomic file write (two fsyncs) only once per block.
//
// Thread-safe: ModelStore calls Cover() with its writer lock held; reserved() may be read anywhere.
#ifndef STRATA_UPDATE_VERSION_RESERVATION_H_
#define STRATA_UPDATE_VERSION_RESERVATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "update/env.h"

namespace strata::update {

inline constexpr uint32_t kVersionsFormatVersion = 1;
// Versions reserved per file write. A restart skips at most kVersionBlock - 1 unused numbers; a
// publish pays for a reservation once per kVersionBlock publishes (eager publishing at 100/s: one
// atomic write per second).
inline constexpr uint64_t kVersionBlock = 100;
// The file's name in the state directory.
inline constexpr char kVersionsFileName[] = "model-versions";

// The file's contents: "versions.reserved" = `reserved`. Pure.
std::string EncodeVersionsFile(uint64_t reserved);
// Parses a whole file read from `path`. DATA_LOSS naming `path` if it is damaged;
// FAILED_PRECONDITION if it is of a newer format version.
absl::StatusOr<uint64_t> DecodeVersionsFile(const std::string& path, std::string contents);

class VersionReservation {
 public:
  // Reads DIR/model-versions. A missing file (or directory) is no reservation: reserved() == 0 and
  // had_file() is false. DATA_LOSS naming the file if it is damaged (start-up must refuse: the mark
  // cannot be guessed); the Env's error otherwise. `env` is not owned and must outlive the result.
  // `block` (>= 1) is how many versions one write reserves (tests use small blocks).
  static absl::StatusOr<std::unique_ptr<VersionReservation>> Open(Env* env, const std::string& dir,
                                                                  uint64_t block = kVersionBlock);

  VersionReservation(const VersionReservation&) = delete;
  VersionReservation& operator=(const VersionReservation&) = delete;

  // R: every version that may have been visible is <= R. 0 with no reservation yet.
  uint64_t reserved() const;
  // Whether the file existed when Open() read it.
  bool had_file() const { return had_file_; }
  // The version a restarted server must serve first so as to be above every version that could
  // have been visible before: max(R + 1, `recovered`) if the file existed, else `recovered` (what
  // recovery alone chose from the snapshot or bundle and the log).
  uint64_t FirstVersion(uint64_t recovered) const;

  // Makes sure `version` is covered by a durable reservation: if version > reserved(), rewrites the
  // file atomically with reserved = version + block - 1 and returns once that is durable. On error
  // reserved() is unchanged and the error (naming the file and the failing call) is returned; a
  // later call tries again (each write replaces the whole file, so a failed one leaves nothing a
  // later one depends on).
  absl::Status Cover(uint64_t version);

 private:
  VersionReservation(Env* env, std::string path, uint64_t block, uint64_t reserved, bool had_file)
      : env_(env),
        path_(std::move(path)),
        block_(block),
        had_file_(had_file),
        reserved_(reserved) {}

  Env* const env_;
  const std::string path_;
  const uint64_t block_;
  const bool had_file_;
  mutable absl::Mutex mu_;
  uint64_t reserved_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_VERSION_RESERVATION_H_
