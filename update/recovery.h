// Start-up recovery of a state directory: bundle + newest valid snapshot + replay of the update log
// after it. The rules are those of docs/operations.md ("Durability: start-up and recovery"):
//
//   0. Before all of this, the temporary files of atomic writes that a crash interrupted
//      (snapshot-<P>.snap.tmp, snapshot-<P>.snap.damaged.tmp) are deleted: nothing reads them, and
//      a snapshot's is as large as the snapshot. Other *.tmp files are left alone.
//   1. Snapshots are tried newest first. A damaged one (DATA_LOSS) is skipped, with its file and
//      offset reported, and the next older one is tried; with none left, the bundle's own statistics
//      (log position 0) are the base.
//   2. From the chosen base, the log must be intact up to its end: every record after the base's
//      position is replayed. A torn tail of the newest segment is cut and reported. Any other damage
//      in the log refuses recovery (DATA_LOSS naming the file and offset): no older base could
//      avoid it, since the log from any older base contains it too. A base whose records the log no
//      longer holds (deleted segments) refuses recovery likewise.
//   3. A snapshot whose feature width differs from the bundle's refuses recovery
//      (FAILED_PRECONDITION): the state directory belongs to another model.
//   4. The version to serve is above every version that may have been visible before the restart:
//      the model-versions file's mark + 1 (docs/model-versions-format.md), unless recovery's own
//      choice (snapshot or bundle version, + 1 if the log replayed anything) is larger. A damaged
//      model-versions file refuses recovery (DATA_LOSS naming it).
//
// Thread-compatible; called once, before serving.
#ifndef STRATA_UPDATE_RECOVERY_H_
#define STRATA_UPDATE_RECOVERY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "model/upper_tier.h"
#include "update/env.h"
#include "update/update_log.h"
#include "update/update_record.h"
#include "update/version_reservation.h"

namespace strata::update {

struct RecoveryReport {
  std::string snapshot_path;  // the snapshot used; empty if the bundle was the base
  std::vector<std::string> snapshots_skipped;        // "<error>" for each damaged snapshot skipped
  std::vector<std::string> temporary_files_removed;  // paths of interrupted writes' *.tmp files
  uint64_t base_position = 0;                        // log position of the base (snapshot's, or 0)
  uint64_t log_position = 0;  // last record now included (next append is log_position + 1)
  uint64_t records_replayed = 0;
  uint64_t samples_replayed = 0;
  std::optional<TornTail> torn_tail;  // what was cut, if anything
  uint64_t model_version = 0;         // the version to publish the recovered statistics as
  // The state directory's version reservation, read back: the server hands it to ModelStore::Load,
  // which reserves model_version before serving it. Never null on success.
  std::unique_ptr<VersionReservation> versions;
  uint64_t versions_reserved = 0;  // its mark as found (0: no model-versions file)
};

// Recovers the state in `dir` (created if missing) onto `bundle`: on success bundle->upper holds the
// recovered statistics and bundle->version the version to serve them as (rule 4 above; not yet
// reserved); the torn tail, if any, has been cut, and stale temporary files removed (the only
// changes on success besides moving damaged snapshots aside). Replay absorbs each record's samples
// in chunks of `chunk_rows` (the server's --max_batch, as the live path does). On error `bundle` may be partly changed and nothing on disk
// was modified except the removal of stale temporary files (and damaged snapshots moved aside);
// the message names the file and offset of the damage.
// Replayed samples' features come from `extractor`: the one built from bundle->lower that will
// serve (model::MakeLowerTierExtractor), so replay computes what the live Update path computed.
absl::StatusOr<RecoveryReport> Recover(Env* env, const std::string& dir, int chunk_rows,
                                       const model::FeatureExtractor& extractor,
                                       model::Bundle* bundle);

// Absorbs one decoded update record into `upper`, in chunks of `chunk_rows` rows, computing features
// with `extractor`: exactly what the live Update path does with the same samples on the same
// extractor. Returns the labels that became new classes.
absl::StatusOr<std::vector<std::string>> AbsorbUpdateRecord(
    const model::FeatureExtractor& extractor, const UpdateRecord& record, int chunk_rows,
    model::UpperTier& upper);

}  // namespace strata::update

#endif  // STRATA_UPDATE_RECOVERY_H_
