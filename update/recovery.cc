#include "update/recovery.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/log.h"
#include "update/snapshot.h"

namespace strata::update {

absl::StatusOr<std::vector<std::string>> AbsorbUpdateRecord(
    const model::FeatureExtractor& extractor, const UpdateRecord& record, int chunk_rows,
    model::UpperTier& upper) {
  std::vector<std::string> new_labels;
  const Eigen::Index rows = record.inputs.size();
  for (Eigen::Index begin = 0; begin < rows; begin += chunk_rows) {
    const Eigen::Index n = std::min<Eigen::Index>(chunk_rows, rows - begin);
    absl::StatusOr<model::MatrixF> features =
        extractor.BatchFeatures(record.inputs.Slice(begin, n));
    if (!features.ok()) return features.status();
    absl::StatusOr<std::vector<std::string>> added = upper.AbsorbLabeled(
        *features, std::span<const std::string>(record.labels).subspan(begin, n));
    if (!added.ok()) return added.status();
    for (std::string& label : *added) new_labels.push_back(std::move(label));
  }
  return new_labels;
}

namespace {

// Renames `path` to `path`.damaged (a copy written atomically, then the original deleted: Env has
// no rename), so that nothing that lists snapshots sees it again.
absl::Status QuarantineFile(Env* env, const std::string& path) {
  absl::StatusOr<std::string> contents = env->ReadFile(path);
  if (!contents.ok()) return contents.status();
  const std::string target = absl::StrCat(path, ".damaged");
  if (absl::Status s = env->WriteFileAtomically(target, *contents); !s.ok()) return s;
  if (absl::Status s = env->DeleteFile(path); !s.ok()) return s;
  STRATA_LOG(WARNING) << "recovery: moved the damaged snapshot to " << target;
  return absl::OkStatus();
}

// Whether `name` is the temporary file of an atomic write (Env::WriteFileAtomically's NAME.tmp)
// that this directory's writers make: a snapshot, a damaged snapshot moved aside, or the
// model-versions mark.
bool IsStateTemporaryFile(absl::string_view name) {
  if (!absl::ConsumeSuffix(&name, ".tmp")) return false;
  if (name == kVersionsFileName) return true;
  absl::ConsumeSuffix(&name, ".damaged");
  return ParseSnapshotFileName(name).has_value();
}

// Deletes the temporary files that writes interrupted by a crash left in `dir`: no reader looks at
// them and the next write of the same name would only overwrite one, so without this a snapshot's
// (tens of MB) stays for good. Only called before anything writes to `dir`.
absl::Status RemoveStaleTemporaryFiles(Env* env, const std::string& dir,
                                       std::vector<std::string>* removed) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDirectory(dir);
  if (!names.ok()) return names.status();
  std::sort(names->begin(), names->end());
  for (const std::string& name : *names) {
    if (!IsStateTemporaryFile(name)) continue;
    const std::string path = absl::StrCat(dir, "/", name);
    absl::Status deleted = env->DeleteFile(path);
    if (!deleted.ok() && !absl::IsNotFound(deleted)) return deleted;
    STRATA_LOG(WARNING) << "recovery: removed the temporary file of an interrupted write: " << path;
    removed->push_back(path);
  }
  // Not strictly needed (a tmp file that comes back after a power loss is removed again), but it
  // keeps what start-up reported true on disk.
  return removed->empty() ? absl::OkStatus() : env->SyncDirectory(dir);
}

// The newest snapshot in `dir` that reads back intact, if any; damaged ones are moved aside and
// listed in report->snapshots_skipped. FAILED_PRECONDITION if it was written for another model.
absl::StatusOr<std::optional<UpperTierSnapshot>> NewestIntactSnapshot(
    Env* env, const std::string& dir, const model::FeatureExtractor& extractor,
    RecoveryReport* report) {
  absl::StatusOr<std::vector<SnapshotFile>> snapshots = ListSnapshots(env, dir);
  if (!snapshots.ok()) return snapshots.status();
  for (const SnapshotFile& file : *snapshots) {
    absl::StatusOr<UpperTierSnapshot> snapshot = ReadSnapshot(env, file.path);
    if (absl::IsDataLoss(snapshot.status())) {
      STRATA_LOG(WARNING) << "recovery: skipping damaged snapshot: " << snapshot.status().message();
      report->snapshots_skipped.push_back(std::string(snapshot.status().message()));
      // Move it out of the way (kept for inspection as <name>.damaged): left under its own name it
      // would still count among the kSnapshotsKept newest, and the next WriteSnapshot would prune
      // the intact older snapshot this recovery falls back to instead of it.
      absl::Status quarantined = QuarantineFile(env, file.path);
      if (!quarantined.ok()) return quarantined;
      continue;
    }
    if (!snapshot.ok()) return snapshot.status();
    if (snapshot->upper.feature_size() != extractor.feature_size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot ", file.path, " holds statistics over ", snapshot->upper.feature_size(),
          " features but the bundle's lower tier makes ", extractor.feature_size(),
          ": the state directory belongs to another model"));
    }
    report->snapshot_path = file.path;
    return std::optional<UpperTierSnapshot>(*std::move(snapshot));
  }
  return std::optional<UpperTierSnapshot>();
}

// Replays the log records after report->base_position into bundle->upper, cuts a torn tail and
// sets the report's log figures.
absl::Status ReplayLog(Env* env, const std::string& dir, int chunk_rows,
                       const model::FeatureExtractor& extractor, model::Bundle* bundle,
                       RecoveryReport* report) {
  const int input_size = extractor.input_size();
  absl::StatusOr<LogScan> scan = ReadUpdateLog(
      env, dir, report->base_position, [&](uint64_t, absl::string_view payload) -> absl::Status {
        absl::StatusOr<UpdateRecord> record = DecodeUpdateRecord(payload, input_size);
        if (!record.ok()) return record.status();
        absl::StatusOr<std::vector<std::string>> absorbed =
            AbsorbUpdateRecord(extractor, *record, chunk_rows, bundle->upper);
        if (!absorbed.ok()) return absorbed.status();
        ++report->records_replayed;
        report->samples_replayed += record->labels.size();
        return absl::OkStatus();
      });
  if (!scan.ok()) {
    std::string context;
    if (!report->snapshots_skipped.empty()) {
      context = absl::StrCat(" (after skipping ", report->snapshots_skipped.size(),
                             " damaged snapshot(s): ", report->snapshots_skipped.front(), ")");
    }
    return absl::Status(scan.status().code(), absl::StrCat(scan.status().message(), context));
  }
  report->log_position = scan->last_sequence;
  if (scan->torn_tail.has_value()) {
    absl::Status cut = CutTornTail(env, dir, *scan->torn_tail);
    if (!cut.ok()) return cut;
    report->torn_tail = scan->torn_tail;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RecoveryReport> Recover(Env* env, const std::string& dir, int chunk_rows,
                                       const model::FeatureExtractor& extractor,
                                       model::Bundle* bundle) {
  absl::Status created = env->CreateDirectories(dir);
  if (!created.ok()) return created;
  RecoveryReport report;
  // Read first: a damaged mark refuses recovery before anything on disk is touched.
  absl::StatusOr<std::unique_ptr<VersionReservation>> versions = VersionReservation::Open(env, dir);
  if (!versions.ok()) return versions.status();
  report.versions = *std::move(versions);

  // 0. Leftovers of interrupted atomic writes.
  absl::Status cleaned = RemoveStaleTemporaryFiles(env, dir, &report.temporary_files_removed);
  if (!cleaned.ok()) return cleaned;

  // 1. The base: the newest snapshot that reads back intact, else the bundle.
  absl::StatusOr<std::optional<UpperTierSnapshot>> base =
      NewestIntactSnapshot(env, dir, extractor, &report);
  if (!base.ok()) return base.status();
  uint64_t version = bundle->version;
  if (base->has_value()) {
    UpperTierSnapshot& snapshot = **base;
    report.base_position = snapshot.log_position;
    version = std::max(version, snapshot.model_version);
    // A snapshot holds G and Q only; the int8 readout scales come with the bundle.
    std::vector<float> scales = bundle->upper.readout_scales();
    bundle->upper = std::move(snapshot.upper);
    if (absl::Status s = bundle->upper.set_readout_scales(std::move(scales)); !s.ok()) return s;
  }

  // 2. Replay the log after the base.
  if (absl::Status replayed = ReplayLog(env, dir, chunk_rows, extractor, bundle, &report);
      !replayed.ok()) {
    return replayed;
  }
  // Anything absorbed since the bundle gets a version of its own, above the base's. That alone is
  // not above every version served before the crash (those published after the base are recorded
  // nowhere else): the reservation's mark is.
  report.versions_reserved = report.versions->reserved();
  report.model_version =
      report.versions->FirstVersion(report.log_position > 0 ? version + 1 : version);
  bundle->version = report.model_version;
  return report;
}

}  // namespace strata::update
