#include "update/update_log.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "base/crc32c.h"

namespace strata::update {
namespace {

constexpr char kSegmentPrefix[] = "update-";
constexpr char kSegmentSuffix[] = ".log";

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
T Load(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

std::string SegmentHeader(uint64_t first_sequence) {
  std::string header(kUpdateLogMagic, sizeof(kUpdateLogMagic));
  Put<uint32_t>(header, kUpdateLogFormatVersion);
  Put<uint64_t>(header, first_sequence);
  Put<uint32_t>(header, base::Crc32c(header.data(), header.size()));
  return header;
}

uint32_t RecordCrc(uint8_t type, absl::string_view payload) {
  return base::Crc32cExtend(base::Crc32c(&type, 1), payload.data(), payload.size());
}

bool AllZero(absl::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

struct Segment {
  uint64_t first;
  std::string path;
};

absl::StatusOr<std::vector<Segment>> ListSegments(Env* env, const std::string& dir) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDirectory(dir);
  if (!names.ok()) {
    if (absl::IsNotFound(names.status())) return std::vector<Segment>{};
    return names.status();
  }
  std::vector<Segment> segments;
  for (const std::string& name : *names) {
    if (std::optional<uint64_t> first = ParseSegmentFileName(name)) {
      segments.push_back({*first, absl::StrCat(dir, "/", name)});
    }
  }
  std::sort(segments.begin(), segments.end(),
            [](const Segment& a, const Segment& b) { return a.first < b.first; });
  return segments;
}

absl::Status Corrupt(const std::string& path, uint64_t offset, absl::string_view what) {
  return absl::DataLossError(absl::StrCat("update log ", path, ": offset ", offset, ": ", what));
}

// The CRC-32C work FindValidRecordAfter() may do before giving up (docs/update-log-format.md,
// "Reading and the torn tail": random tails reach it at about 13 MiB).
constexpr uint64_t kTailScanCrcBudget = uint64_t{1} << 30;

struct TailScan {
  std::optional<uint64_t> valid_record;  // offset of the first valid record found
  bool over_budget = false;              // gave up: neither a valid record nor its absence shown
};

// Tries every offset after `bad` as the start of a record and stops at the first that passes every
// check a record read in order passes (known type, length within the limit and inside the file,
// CRC). Exhaustive, so a record the writer wrote after `bad` is never missed; the type and length
// filters come first so that random bytes rarely cost a CRC (the odds are in the format doc).
TailScan FindValidRecordAfter(absl::string_view data, size_t bad) {
  TailScan scan;
  uint64_t crc_bytes = 0;
  for (size_t at = bad + 1; at + kRecordHeaderBytes <= data.size(); ++at) {
    const char* header = data.data() + at;
    if (static_cast<uint8_t>(header[8]) != kRecordTypeUpdateMessage) continue;
    const uint32_t length = Load<uint32_t>(header + 4);
    if (length > kMaxRecordPayloadBytes || length > data.size() - at - kRecordHeaderBytes) continue;
    crc_bytes += length;
    if (crc_bytes > kTailScanCrcBudget) {
      scan.over_budget = true;
      return scan;
    }
    if (RecordCrc(kRecordTypeUpdateMessage, data.substr(at + kRecordHeaderBytes, length)) ==
        Load<uint32_t>(header)) {
      scan.valid_record = at;
      return scan;
    }
  }
  return scan;
}

}  // namespace

std::string SegmentFileName(uint64_t first_sequence) {
  return absl::StrFormat("%s%020u%s", kSegmentPrefix, first_sequence, kSegmentSuffix);
}

std::optional<uint64_t> ParseSegmentFileName(absl::string_view name) {
  const size_t prefix = sizeof(kSegmentPrefix) - 1, suffix = sizeof(kSegmentSuffix) - 1;
  if (name.size() != prefix + 20 + suffix || name.substr(0, prefix) != kSegmentPrefix ||
      name.substr(prefix + 20) != kSegmentSuffix) {
    return std::nullopt;
  }
  uint64_t first = 0;
  if (!absl::SimpleAtoi(name.substr(prefix, 20), &first) || first == 0) return std::nullopt;
  return first;
}

// ---- Reading -------------------------------------------------------------------------------------

namespace {

using Visitor = absl::FunctionRef<absl::Status(uint64_t sequence, absl::string_view payload)>;

// Why the record at the start of `rest` (sequence `sequence`) cannot be read, or "" if it is
// intact; then *length is its payload's length.
std::string RecordProblem(absl::string_view rest, uint64_t sequence, uint32_t* length) {
  if (rest.size() < kRecordHeaderBytes) return "record header cut short";
  *length = Load<uint32_t>(rest.data() + 4);
  if (*length > kMaxRecordPayloadBytes)
    return absl::StrCat("record length ", *length, " over limit");
  if (rest.size() - kRecordHeaderBytes < *length) return "record runs past the end of the file";
  const uint8_t type = static_cast<uint8_t>(rest[8]);
  if (RecordCrc(type, rest.substr(kRecordHeaderBytes, *length)) != Load<uint32_t>(rest.data())) {
    return absl::StrCat("record ", sequence, ": checksum mismatch");
  }
  if (type != kRecordTypeUpdateMessage) {
    return absl::StrCat("record ", sequence, ": unknown type ", type);
  }
  return "";
}

// Reads one segment of the log (its whole contents in `data`) into a LogScan.
class SegmentReader {
 public:
  SegmentReader(const Segment& segment, bool newest, absl::string_view data, LogScan* scan)
      : segment_(segment), newest_(newest), data_(data), scan_(scan) {}

  // Checks the header, then visits every intact record with sequence > `after`. Returns the
  // sequence the next segment must start with; a torn tail is recorded in the scan (and the
  // segments after it must not exist: the caller stops).
  absl::StatusOr<uint64_t> Read(uint64_t after, Visitor visit) {
    if (data_.size() < kSegmentHeaderBytes || AllZero(data_)) {
      if (!newest_) return Corrupt(segment_.path, 0, "segment header cut short or zeroed");
      Torn(0, "segment header cut short");
      return segment_.first;
    }
    if (absl::Status header = CheckHeader(); !header.ok()) return header;
    uint64_t sequence = segment_.first;
    size_t offset = kSegmentHeaderBytes;
    while (offset < data_.size()) {
      const absl::string_view rest = data_.substr(offset);
      uint32_t length = 0;
      if (std::string bad = RecordProblem(rest, sequence, &length); !bad.empty()) {
        absl::Status status = BadRecord(offset, std::move(bad));
        if (!status.ok()) return status;
        break;
      }
      if (sequence > after) {
        absl::Status visited = visit(sequence, rest.substr(kRecordHeaderBytes, length));
        if (!visited.ok()) {
          return absl::Status(visited.code(),
                              absl::StrCat("update log ", segment_.path, ": offset ", offset,
                                           ": record ", sequence, ": ", visited.message()));
        }
        ++scan_->records_visited;
      }
      scan_->last_sequence = std::max(scan_->last_sequence, sequence);
      ++sequence;
      offset += kRecordHeaderBytes + length;
    }
    return sequence;
  }

 private:
  absl::Status CheckHeader() const {
    const char* header = data_.data();
    if (std::memcmp(header, kUpdateLogMagic, sizeof(kUpdateLogMagic)) != 0 ||
        Load<uint32_t>(header + 20) != base::Crc32c(header, 20)) {
      return Corrupt(segment_.path, 0, "bad segment header (magic or checksum)");
    }
    const uint32_t version = Load<uint32_t>(header + 8);
    if (version < kOldestUpdateLogFormatVersion || version > kUpdateLogFormatVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "update log ", segment_.path, ": format version ", version, ", this build reads ",
          kOldestUpdateLogFormatVersion, "..", kUpdateLogFormatVersion));
    }
    if (Load<uint64_t>(header + 12) != segment_.first) {
      return Corrupt(segment_.path, 12, "the header's first sequence differs from the file name");
    }
    return absl::OkStatus();
  }

  // The record at `offset` failed a check (`what`). In the newest segment with no valid record
  // after it, that is a torn tail whatever the bad bytes read as; otherwise corruption. Returns
  // the error, or OK with the tail recorded.
  absl::Status BadRecord(size_t offset, std::string what) {
    if (!newest_) return Corrupt(segment_.path, offset, what);
    if (AllZero(data_.substr(offset))) {
      Torn(offset, "zero-filled tail");
      return absl::OkStatus();
    }
    const TailScan after_bad = FindValidRecordAfter(data_, offset);
    if (after_bad.valid_record.has_value()) {
      return Corrupt(segment_.path, offset,
                     absl::StrCat(what, " (not a torn tail: a valid record follows at offset ",
                                  *after_bad.valid_record, ")"));
    }
    if (after_bad.over_budget) {
      return Corrupt(segment_.path, offset,
                     absl::StrCat(what, " (could not rule out a valid record after it in the ",
                                  data_.size() - offset, " bytes to the end of the file)"));
    }
    Torn(offset, what);
    return absl::OkStatus();
  }

  void Torn(uint64_t offset, absl::string_view reason) {
    TornTail tail;
    tail.path = segment_.path;
    tail.offset = offset;
    tail.bytes_dropped = data_.size() - offset;
    tail.delete_file = offset == 0;
    tail.reason = std::string(reason);
    scan_->torn_tail = std::move(tail);
  }

  const Segment& segment_;
  const bool newest_;
  const absl::string_view data_;
  LogScan* const scan_;
};

}  // namespace

absl::StatusOr<LogScan> ReadUpdateLog(Env* env, const std::string& dir, uint64_t after,
                                      Visitor visit) {
  absl::StatusOr<std::vector<Segment>> segments = ListSegments(env, dir);
  if (!segments.ok()) return segments.status();
  LogScan scan;
  scan.segments = segments->size();
  scan.last_sequence = after;  // if every segment is skipped or there are none
  bool reading = false;        // has a segment been read yet
  uint64_t expected = 0;       // the first sequence the next read segment must have
  for (size_t s = 0; s < segments->size() && !scan.torn_tail.has_value(); ++s) {
    const Segment& segment = (*segments)[s];
    const bool newest = s + 1 == segments->size();
    // A segment whose successor starts at or before after + 1 holds only records <= after.
    if (!newest && (*segments)[s + 1].first <= after + 1) continue;
    if (!reading && segment.first > after + 1) {
      return Corrupt(segment.path, 0,
                     absl::StrCat("the log starts at record ", segment.first, " but records from ",
                                  after + 1, " are needed"));
    }
    if (reading && segment.first != expected) {
      return Corrupt(segment.path, 0,
                     absl::StrCat("segment starts at record ", segment.first, ", expected ",
                                  expected, " (a segment is missing or extra)"));
    }
    reading = true;
    absl::StatusOr<std::string> contents = env->ReadFile(segment.path);
    if (!contents.ok()) return contents.status();
    absl::StatusOr<uint64_t> next =
        SegmentReader(segment, newest, *contents, &scan).Read(after, visit);
    if (!next.ok()) return next.status();
    expected = *next;
  }
  return scan;
}

absl::Status CutTornTail(Env* env, const std::string& dir, const TornTail& tail) {
  if (tail.delete_file) {
    absl::Status deleted = env->DeleteFile(tail.path);
    if (!deleted.ok()) return deleted;
    return env->SyncDirectory(dir);
  }
  return env->Truncate(tail.path, tail.offset);
}

// ---- Writing -------------------------------------------------------------------------------------

FileUpdateLog::FileUpdateLog(Env* env, std::string dir, UpdateLogOptions options)
    : env_(env), dir_(std::move(dir)), options_(options) {}

absl::StatusOr<std::unique_ptr<FileUpdateLog>> FileUpdateLog::Open(Env* env, std::string dir,
                                                                   uint64_t next_sequence,
                                                                   UpdateLogOptions options) {
  if (next_sequence == 0) return absl::InvalidArgumentError("next_sequence must be >= 1");
  absl::StatusOr<std::vector<Segment>> segments = ListSegments(env, dir);
  if (!segments.ok()) return segments.status();
  std::unique_ptr<FileUpdateLog> log(new FileUpdateLog(env, std::move(dir), options));
  {
    absl::MutexLock lock(&log->mu_);
    for (const Segment& segment : *segments) log->segments_[segment.first] = segment.path;
    log->last_appended_ = log->last_synced_ = next_sequence - 1;
    absl::Status started = log->StartSegment(next_sequence);
    if (!started.ok()) return started;
  }
  log->sync_thread_ = std::thread([raw = log.get()] { raw->SyncLoop(); });
  return log;
}

FileUpdateLog::~FileUpdateLog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  // Not started if Open() failed before starting it.
  if (sync_thread_.joinable()) sync_thread_.join();
}

absl::Status FileUpdateLog::StartSegment(uint64_t first_sequence) {
  const std::string path = absl::StrCat(dir_, "/", SegmentFileName(first_sequence));
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env_->OpenAppendable(path, true);
  if (!file.ok()) return file.status();
  absl::Status status = (*file)->Append(SegmentHeader(first_sequence));
  if (status.ok()) status = (*file)->Sync();
  if (status.ok()) status = env_->SyncDirectory(dir_);
  if (!status.ok()) return status;
  file_ = std::shared_ptr<WritableFile>(std::move(*file));
  file_first_ = first_sequence;
  segments_[first_sequence] = path;
  ++counters_.segments_created;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileUpdateLog::Append(absl::string_view payload) {
  if (payload.size() > kMaxRecordPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat("update log record of ", payload.size(),
                                                   " bytes, over the limit of ",
                                                   kMaxRecordPayloadBytes));
  }
  std::string record;
  record.reserve(kRecordHeaderBytes + payload.size());
  Put<uint32_t>(record, RecordCrc(kRecordTypeUpdateMessage, payload));
  Put<uint32_t>(record, static_cast<uint32_t>(payload.size()));
  Put<uint8_t>(record, kRecordTypeUpdateMessage);
  record.append(payload.data(), payload.size());

  absl::MutexLock lock(&mu_);
  if (!failed_.ok()) return failed_;
  if (file_->Size() >= options_.segment_bytes && last_appended_ >= file_first_) {
    // Roll: the old segment is made durable before the new one exists, so the sync thread only
    // ever needs to fsync the current segment.
    absl::Status status = file_->Sync();
    ++counters_.fsyncs;
    if (status.ok()) {
      last_synced_ = last_appended_;
      status = StartSegment(last_appended_ + 1);
    }
    if (!status.ok()) {
      failed_ = status;
      return failed_;
    }
  }
  absl::Status written = file_->Append(record);
  if (!written.ok()) {
    failed_ = written;
    return failed_;
  }
  ++counters_.records;
  counters_.bytes += record.size();
  return ++last_appended_;
}

bool FileUpdateLog::SyncWorkOrStopping() const { return stopping_ || !waiters_.empty(); }

void FileUpdateLog::SyncAsync(uint64_t sequence, absl::AnyInvocable<void(absl::Status) &&> done) {
  absl::Status result;
  {
    absl::MutexLock lock(&mu_);
    if (failed_.ok() && sequence > last_synced_) {
      waiters_.push_back({sequence, std::move(done)});
      return;
    }
    result = failed_;
  }
  std::move(done)(result);
}

absl::Status FileUpdateLog::Sync(uint64_t sequence) {
  absl::Notification synced;
  absl::Status result;
  SyncAsync(sequence, [&](absl::Status status) {
    result = std::move(status);
    synced.Notify();
  });
  synced.WaitForNotification();
  return result;
}

void FileUpdateLog::SyncLoop() {
  while (true) {
    std::shared_ptr<WritableFile> file;
    uint64_t target = 0;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &FileUpdateLog::SyncWorkOrStopping));
      if (waiters_.empty()) return;  // stopping, nothing pending
      file = file_;
      target = last_appended_;
    }
    // One fsync for every record appended so far: the group commit.
    absl::Status status = target > 0 ? file->Sync() : absl::OkStatus();
    std::vector<std::pair<Waiter, absl::Status>> ready;
    {
      absl::MutexLock lock(&mu_);
      if (target > 0) ++counters_.fsyncs;
      if (!status.ok() && failed_.ok()) failed_ = status;
      // A segment roll may have made more durable meanwhile, hence the max.
      if (failed_.ok()) last_synced_ = std::max(last_synced_, target);
      std::deque<Waiter> pending;
      for (Waiter& waiter : waiters_) {
        if (!failed_.ok()) {
          ready.emplace_back(std::move(waiter), failed_);
        } else if (waiter.sequence <= last_synced_) {
          ready.emplace_back(std::move(waiter), absl::OkStatus());
        } else if (waiter.sequence > last_appended_) {
          ready.emplace_back(std::move(waiter), absl::InvalidArgumentError(
                                                    absl::StrCat("sync of record ", waiter.sequence,
                                                                 ", which was never appended")));
        } else {
          pending.push_back(std::move(waiter));
        }
      }
      waiters_ = std::move(pending);
    }
    for (auto& [waiter, result] : ready) std::move(waiter.done)(std::move(result));
  }
}

absl::Status FileUpdateLog::DeleteSegmentsThrough(uint64_t position) {
  absl::MutexLock lock(&mu_);
  bool deleted = false;
  for (auto it = segments_.begin(); it != segments_.end();) {
    auto next = std::next(it);
    // A segment's records end just before the next segment's first; the current one is never
    // deleted.
    if (next == segments_.end() || it->first == file_first_ || next->first > position + 1) break;
    absl::Status status = env_->DeleteFile(it->second);
    if (!status.ok() && !absl::IsNotFound(status)) return status;
    ++counters_.segments_deleted;
    deleted = true;
    it = segments_.erase(it);
  }
  return deleted ? env_->SyncDirectory(dir_) : absl::OkStatus();
}

absl::Status FileUpdateLog::Trim(uint64_t position) { return DeleteSegmentsThrough(position); }

uint64_t FileUpdateLog::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return last_appended_;
}

FileUpdateLog::Counters FileUpdateLog::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace strata::update
