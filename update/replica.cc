#include "update/replica.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "update/snapshot.h"
#include "update/update_record.h"

namespace strata::update {
namespace {

// How long the following thread waits for an entry before it looks at deadlines again.
constexpr absl::Duration kPollInterval = absl::Milliseconds(100);
// A replica behind the stream skips the solves of refresh markers with a later marker read
// already, but publishes at least this often.
constexpr absl::Duration kMaxPublishGap = absl::Seconds(1);
// How far the following thread reads ahead of what it applies.
constexpr size_t kReadAheadEntries = 256;
constexpr size_t kReadAheadBytes = size_t{32} << 20;

}  // namespace

absl::StatusOr<ReplicaBase> LoadReplicaBase(JetStreamUpdateLog& log,
                                            const model::FeatureExtractor& extractor,
                                            model::Bundle* bundle) {
  ReplicaBase base;
  base.model_version = bundle->version;
  absl::StatusOr<std::vector<uint64_t>> positions = log.SnapshotPositions();
  if (!positions.ok()) return positions.status();
  if (positions->empty()) {
    // A purged stream means snapshots exist: an empty index is then the bucket answering
    // before its leader is back, not the truth (the caller retries UNAVAILABLE).
    absl::StatusOr<std::pair<uint64_t, uint64_t>> range = log.SequenceRange();
    if (!range.ok()) return range.status();
    if (range->first > 1) {
      return absl::UnavailableError(
          "the stream was purged after a snapshot, but the snapshot bucket lists none yet");
    }
  }
  for (uint64_t position : *positions) {
    const std::string name = absl::StrCat("snapshot at log position ", position);
    absl::StatusOr<std::string> contents = log.GetSnapshot(position);
    absl::StatusOr<UpperTierSnapshot> snapshot =
        contents.ok() ? DecodeSnapshot(name, *contents) : contents.status();
    if (absl::IsDataLoss(snapshot.status()) || absl::IsNotFound(snapshot.status())) {
      // NOT_FOUND: deleted by a newer snapshot's clean-up between listing and reading.
      STRATA_LOG(WARNING) << "replica: skipping " << name << ": " << snapshot.status();
      base.snapshots_skipped.push_back(std::string(snapshot.status().message()));
      continue;
    }
    if (!snapshot.ok()) return snapshot.status();
    if (snapshot->upper.feature_size() != extractor.feature_size()) {
      return absl::FailedPreconditionError(
          absl::StrCat(name, " holds statistics over ", snapshot->upper.feature_size(),
                       " features but the bundle's lower tier makes ", extractor.feature_size(),
                       ": the stream belongs to another model"));
    }
    // A snapshot holds G and Q only; the int8 readout scales come with the bundle.
    std::vector<float> scales = bundle->upper.readout_scales();
    bundle->upper = std::move(snapshot->upper);
    if (absl::Status s = bundle->upper.set_readout_scales(std::move(scales)); !s.ok()) return s;
    bundle->version = snapshot->model_version;
    base.position = snapshot->log_position;
    base.model_version = snapshot->model_version;
    base.snapshot = absl::StrCat("log position ", position, " (", contents->size(), " bytes)");
    return base;
  }
  return base;
}

Replica::Replica(JetStreamUpdateLog* log, ModelStore* store, EnergyMeter* meter,
                 ReplicaOptions options, uint64_t position)
    : log_(log), store_(store), meter_(meter), options_(options) {
  counters_.applied_position = position;
}

Replica::~Replica() { Stop(); }

void Replica::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (follower_.joinable()) follower_.join();
  if (uploader_.joinable()) uploader_.join();
  // Whoever still waits hears that this replica is gone (outside mu_: `done` may call back).
  std::multimap<uint64_t, Waiter> waiters;
  {
    absl::MutexLock lock(&mu_);
    waiters.swap(waiters_);
  }
  for (auto& [position, waiter] : waiters) {
    std::move(waiter.done)(absl::UnavailableError("the server is shutting down"));
  }
}

absl::Status Replica::Start(std::function<void(const absl::Status&)> on_failure) {
  on_failure_ = std::move(on_failure);
  absl::StatusOr<std::unique_ptr<JetStreamUpdateLog::Reader>> reader =
      log_->OpenReader(counters().applied_position);
  if (!reader.ok()) return reader.status();
  reader_ = *std::move(reader);
  follower_ = std::thread([this] { Run(); });
  uploader_ = std::thread([this] { UploadLoop(); });
  return absl::OkStatus();
}

absl::Status Replica::ReadAhead() {
  size_t bytes = 0;
  for (const LogEntry& entry : ahead_) bytes += entry.payload.size();
  // Waits for the next entry only when there is nothing to apply.
  absl::Duration wait = ahead_.empty() ? kPollInterval : absl::ZeroDuration();
  while (ahead_.size() < kReadAheadEntries && bytes < kReadAheadBytes) {
    absl::StatusOr<std::optional<LogEntry>> entry = reader_->Next(wait);
    if (!entry.ok()) return entry.status();
    if (!entry->has_value()) break;
    bytes += (*entry)->payload.size();
    if ((*entry)->kind == LogEntryKind::kRefresh) ++markers_ahead_;
    ahead_.push_back(**std::move(entry));
    wait = absl::ZeroDuration();
  }
  return absl::OkStatus();
}

void Replica::Run() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    CompleteWaiters();
    absl::Status status = ReadAhead();
    if (status.ok() && !ahead_.empty()) {
      const LogEntry entry = std::move(ahead_.front());
      ahead_.pop_front();
      if (entry.kind == LogEntryKind::kRefresh) --markers_ahead_;
      status = Apply(entry);
    }
    if (!status.ok()) {
      Fail(status);
      return;
    }
  }
}

absl::Status Replica::Apply(const LogEntry& entry) {
  if (entry.kind == LogEntryKind::kSamples) {
    absl::Status absorbed = AbsorbEntry(entry);
    if (!absorbed.ok()) {
      return absl::Status(absorbed.code(), absl::StrCat("update log entry ", entry.sequence, ": ",
                                                        absorbed.message()));
    }
  } else if (markers_ahead_ > 0 && absl::Now() - last_publish_ < kMaxPublishGap) {
    // Catching up: a later marker is already read. Counted and folded, not solved: the last
    // marker of the backlog publishes (with the version number the skipped ones advanced).
    if (absl::Status skipped = store_->SkipPublish(); !skipped.ok()) return skipped;
  } else {
    RefreshAt(entry.sequence);
  }
  {
    absl::MutexLock lock(&mu_);
    counters_.applied_position = entry.sequence;
    counters_.pending_entries = entry.pending;
    counters_.entries_applied += 1;
  }
  return absl::OkStatus();
}

absl::Status Replica::AbsorbEntry(const LogEntry& entry) {
  const std::shared_ptr<const ModelVersion> model = store_->Current();
  absl::StatusOr<UpdateRecord> record =
      DecodeUpdateRecord(entry.payload, model->extractor->input_size());
  if (!record.ok()) return record.status();
  // The chunks recovery and the live path absorb in (AbsorbUpdateRecord): the same float sums.
  const Eigen::Index rows = record->inputs.size();
  for (Eigen::Index begin = 0; begin < rows; begin += options_.chunk_rows) {
    const Eigen::Index n = std::min<Eigen::Index>(options_.chunk_rows, rows - begin);
    fpga::OpCounts lower_counts;
    absl::StatusOr<model::MatrixF> features =
        model->Features(record->inputs.Slice(begin, n), &lower_counts);
    if (!features.ok()) return features.status();
    meter_->Charge(EnergyPhase::kLowerTierInference, lower_counts, model->lower_tier_energy_table);
    int classes = 0;
    fpga::OpCounts gram_counts;
    bool on_gram_backend = false;
    absl::StatusOr<std::vector<std::string>> added =
        store_->Absorb(*features, std::span<const std::string>(record->labels).subspan(begin, n),
                       &classes, &gram_counts, &on_gram_backend);
    if (!added.ok()) return added.status();
    if (on_gram_backend) {
      meter_->Charge(EnergyPhase::kAbsorb, gram_counts, model->lower_tier_energy_table);
    } else {
      meter_->Charge(EnergyPhase::kAbsorb, model::AbsorbCounts(model->extractor->feature_size(),
                                                               classes, static_cast<int>(n)));
    }
  }
  samples_since_snapshot_ += record->labels.size();
  absl::MutexLock lock(&mu_);
  counters_.samples_absorbed += record->labels.size();
  return absl::OkStatus();
}

void Replica::RefreshAt(uint64_t position) {
  const absl::Time start = absl::Now();
  ModelStore::RefreshPlan done;
  PublishOptions publish;
  publish.mode = model::RefreshMode::kForceRefactor;
  publish.log_position = position;
  publish.digest = true;
  absl::StatusOr<std::shared_ptr<const ModelVersion>> published = store_->Publish(&done, publish);
  if (!published.ok()) {
    // Every replica fails the same way here (the same statistics): the version stays.
    STRATA_LOG(WARNING) << "replica: no refresh at log position " << position << ": "
                        << published.status();
    return;
  }
  meter_->Charge(EnergyPhase::kRefresh,
                 model::RefreshReportCounts(done.report, done.feature_size, done.num_classes));
  const fpga::EnergyTable& table = (*published)->lower_tier_energy_table;
  if (done.absorb_counts.int8_macs > 0)
    meter_->Charge(EnergyPhase::kAbsorb, done.absorb_counts, table);
  if (done.fold_counts.fp64_macs > 0)
    meter_->Charge(EnergyPhase::kRefresh, done.fold_counts, table);
  last_publish_ = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    counters_.refreshes += 1;
  }
  STRATA_LOG(INFO) << "replica: published model version " << (*published)->version
                   << " at log position " << position << " (" << (*published)->samples_seen
                   << " samples, statistics " << (*published)->statistics_digest << ", "
                   << absl::ToDoubleSeconds(absl::Now() - start) << " s)";
  CompleteWaiters();
  // Only where a version was published: the snapshot records that version's number.
  MaybeSnapshot(position);
}

void Replica::MaybeSnapshot(uint64_t position) {
  if (options_.snapshot_every_samples == 0 ||
      samples_since_snapshot_ < options_.snapshot_every_samples) {
    return;
  }
  samples_since_snapshot_ = 0;
  std::string contents;
  // Right after the refresh at `position`: the statistics are exactly those through it, folded.
  absl::Status visited =
      store_->VisitStatistics([&](const model::UpperTier& upper, uint64_t version) {
        contents = EncodeSnapshot(version, position, upper);
      });
  if (!visited.ok()) {
    STRATA_LOG(ERROR) << "replica: snapshot at " << position << ": " << visited;
    return;
  }
  absl::MutexLock lock(&mu_);
  upload_ = std::make_pair(position, std::move(contents));
}

void Replica::UploadLoop() {
  for (;;) {
    std::pair<uint64_t, std::string> next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || upload_.has_value();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      next = *std::move(upload_);
      upload_.reset();
    }
    if (absl::Status s = Upload(next.first, next.second); !s.ok()) {
      STRATA_LOG(ERROR) << "replica: storing the snapshot at log position " << next.first
                        << " failed: " << s;
    }
  }
}

absl::Status Replica::Upload(uint64_t position, const std::string& contents) {
  absl::StatusOr<std::vector<uint64_t>> positions = log_->SnapshotPositions();
  if (!positions.ok()) return positions.status();
  // Another replica at this position stored the same bytes already, or a newer one exists.
  if (!positions->empty() && (*positions)[0] >= position) return absl::OkStatus();
  const absl::Time start = absl::Now();
  if (absl::Status s = log_->PutSnapshot(position, contents); !s.ok()) return s;
  positions = log_->SnapshotPositions();
  if (!positions.ok()) return positions.status();
  {
    absl::MutexLock lock(&mu_);
    counters_.snapshots_stored += 1;
  }
  STRATA_LOG(INFO) << "replica: stored the snapshot at log position " << position << " ("
                   << contents.size() << " bytes, " << absl::ToDoubleSeconds(absl::Now() - start)
                   << " s)";
  // The log from the older kept snapshot on stays, so a replica can fall back to it; and that
  // snapshot must be old enough that no replica still catches up from before it.
  if (positions->size() < 2) return absl::OkStatus();
  absl::StatusOr<absl::Time> stored = log_->SnapshotTime((*positions)[1]);
  if (absl::IsNotFound(stored.status())) return absl::OkStatus();  // replaced meanwhile
  if (!stored.ok() || absl::Now() - *stored < options_.trim_delay) return stored.status();
  return log_->Trim((*positions)[1]);
}

void Replica::WhenServed(uint64_t position, absl::Time deadline,
                         absl::AnyInvocable<void(absl::Status) &&> done) {
  absl::Status status;
  {
    // Under mu_: a publish after this check completes the waiter (RefreshAt, CompleteWaiters).
    absl::MutexLock lock(&mu_);
    if (store_->Current()->log_position >= position) {
      status = absl::OkStatus();
    } else if (!failure_.ok() || stopping_) {
      status = absl::UnavailableError(
          absl::StrCat("this replica stopped following the update log before position ", position));
    } else {
      waiters_.emplace(position, Waiter{deadline, std::move(done)});
      return;
    }
  }
  std::move(done)(std::move(status));
}

void Replica::CompleteWaiters() {
  std::vector<std::pair<absl::Status, Waiter>> ready;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t served = store_->Current()->log_position;
    const absl::Time now = absl::Now();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      absl::Status status;
      if (it->first <= served) {
        status = absl::OkStatus();
      } else if (!failure_.ok()) {
        status = absl::UnavailableError(
            absl::StrCat("this replica stopped following the update log: ", failure_.message()));
      } else if (it->second.deadline <= now) {
        status = absl::DeadlineExceededError(
            absl::StrCat("this replica serves log position ", served, ", not yet ", it->first));
      } else {
        ++it;
        continue;
      }
      ready.emplace_back(std::move(status), std::move(it->second));
      it = waiters_.erase(it);
    }
  }
  for (auto& [status, waiter] : ready) std::move(waiter.done)(std::move(status));
}

void Replica::Fail(absl::Status status) {
  STRATA_LOG(ERROR) << "replica: stopped following the update log: " << status;
  {
    absl::MutexLock lock(&mu_);
    failure_ = status;
    counters_.failed = true;
  }
  CompleteWaiters();
  if (on_failure_) on_failure_(status);
}

absl::Status Replica::WaitApplied(uint64_t position, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return counters_.applied_position >= position || !failure_.ok();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&reached), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("applied log position ",
                                                    counters_.applied_position, " of ", position,
                                                    " after ", absl::FormatDuration(timeout)));
  }
  return failure_;
}

ReplicaCounters Replica::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

absl::Status Replica::status() const {
  absl::MutexLock lock(&mu_);
  return failure_;
}

}  // namespace strata::update
