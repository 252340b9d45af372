// Snapshots of the upper tier's sufficient statistics at a log position (docs/snapshot-format.md).
//
// WriteSnapshot() writes one atomically (tmp, fsync, rename, directory fsync) and keeps the newest
// two; ReadSnapshot() checks one completely before returning it; ListSnapshots() finds them. All
// functions are thread-compatible: the server calls them from its update thread only.
#ifndef STRATA_UPDATE_SNAPSHOT_H_
#define STRATA_UPDATE_SNAPSHOT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/upper_tier.h"
#include "update/env.h"

namespace strata::update {

inline constexpr uint32_t kSnapshotFormatVersion = 1;
// How many snapshots the server keeps (the newest and one to fall back to).
inline constexpr int kSnapshotsKept = 2;

// "snapshot-<20-digit log position>.snap"
std::string SnapshotFileName(uint64_t log_position);
std::optional<uint64_t> ParseSnapshotFileName(absl::string_view name);

struct UpperTierSnapshot {
  uint64_t model_version = 0;
  uint64_t log_position = 0;  // last update-log record the statistics include
  model::UpperTier upper;
};

struct SnapshotFile {
  std::string path;
  uint64_t log_position = 0;
  uint64_t bytes = 0;
};

// Serialises `upper` (its G lower triangle, Q, labels, lambda, samples seen) with the version and
// log position. The caller must hold a consistent copy (the statistics exactly through
// `log_position`). Pure.
std::string EncodeSnapshot(uint64_t model_version, uint64_t log_position,
                           const model::UpperTier& upper);

// Writes the snapshot into `dir` as SnapshotFileName(log_position), atomically, then deletes all but
// the kSnapshotsKept snapshots with the highest log positions (a *.tmp left by a crash is removed
// by recovery at the next start-up, not here). Errors name
// the file and the failing call; on error no snapshot that existed before is lost.
absl::StatusOr<SnapshotFile> WriteSnapshot(Env* env, const std::string& dir, uint64_t model_version,
                                           uint64_t log_position, const model::UpperTier& upper);

// Reads and checks one snapshot. DATA_LOSS naming the file (and the byte offset for truncation or a
// checksum failure) if it is damaged; FAILED_PRECONDITION if it is of a newer format version;
// NOT_FOUND if missing.
absl::StatusOr<UpperTierSnapshot> ReadSnapshot(Env* env, const std::string& path);
// Checks and decodes a snapshot's contents (EncodeSnapshot's bytes) read from elsewhere (the
// replicated log's snapshot bucket); `name` says where, in errors. As ReadSnapshot otherwise.
absl::StatusOr<UpperTierSnapshot> DecodeSnapshot(const std::string& name, std::string contents);

// The snapshot files in `dir`, highest log position first. A missing directory has none.
absl::StatusOr<std::vector<SnapshotFile>> ListSnapshots(Env* env, const std::string& dir);

}  // namespace strata::update

#endif  // STRATA_UPDATE_SNAPSHOT_H_
