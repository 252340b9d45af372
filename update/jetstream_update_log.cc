#include "update/jetstream_update_log.h"

#include <nats/nats.h>

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/crc32c.h"
#include "base/log.h"

namespace strata::update {

// The client library's handles, destroyed in reverse order of creation.
struct JetStreamUpdateLog::Nats {
  natsOptions* options = nullptr;
  natsConnection* connection = nullptr;
  jsCtx* js = nullptr;
  kvStore* bucket = nullptr;

  ~Nats() {
    if (bucket != nullptr) kvStore_Destroy(bucket);
    if (js != nullptr) jsCtx_Destroy(js);
    if (connection != nullptr) {
      natsConnection_Close(connection);
      natsConnection_Destroy(connection);
    }
    if (options != nullptr) natsOptions_Destroy(options);
  }
};

namespace {

// The header that says what an entry asks for (docs/replication.md).
constexpr char kEntryHeader[] = "Strata-Entry";
constexpr char kSamplesEntry[] = "samples";
constexpr char kRefreshEntry[] = "refresh";
// The snapshot bucket's index key: "<newest position> <older position>" (docs/replication.md).
constexpr char kIndexKey[] = "snap.index";
// Room left in a message for its headers (the entry kind and the message id).
constexpr int64_t kHeaderSlack = 4096;

int64_t Millis(absl::Duration d) { return std::max<int64_t>(1, absl::ToInt64Milliseconds(d)); }

// `what` failed with `status` (and a JetStream error code, if any): UNAVAILABLE for what waiting
// may cure (no connection, no leader, a timeout), NOT_FOUND, or UNKNOWN with the library's text.
absl::Status NatsError(absl::string_view what, natsStatus status, jsErrCode code = jsErrCode(0)) {
  std::string text = natsStatus_GetText(status);
  if (const char* last = nats_GetLastError(nullptr); last != nullptr && *last != '\0') {
    text = absl::StrCat(text, ": ", last);
  }
  if (code != 0) absl::StrAppend(&text, " (JetStream error ", static_cast<int>(code), ")");
  const std::string message = absl::StrCat(what, ": ", text);
  switch (status) {
    case NATS_NOT_FOUND:
      return absl::NotFoundError(message);
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_NO_SERVER:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_STALE_CONNECTION:
    case NATS_IO_ERROR:
      return absl::UnavailableError(message);
    default:
      return absl::UnknownError(message);
  }
}

std::string SnapshotKey(uint64_t position, absl::string_view part) {
  return absl::StrFormat("snap.%020u.%s", position, part);
}

struct Manifest {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

std::string EncodeManifest(const Manifest& m) {
  return absl::StrCat("chunks=", m.chunks, " bytes=", m.bytes, " crc32c=", m.crc32c);
}

absl::StatusOr<Manifest> DecodeManifest(absl::string_view text) {
  Manifest m;
  int fields = 0;
  for (absl::string_view field : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, '=');
    uint64_t value = 0;
    if (!absl::SimpleAtoi(kv.second, &value)) break;
    if (kv.first == "chunks") m.chunks = value, ++fields;
    if (kv.first == "bytes") m.bytes = value, ++fields;
    if (kv.first == "crc32c") m.crc32c = static_cast<uint32_t>(value), ++fields;
  }
  if (fields != 3) return absl::DataLossError(absl::StrCat("bad snapshot manifest \"", text, "\""));
  return m;
}

// Retries `attempt` (a call that may fail while the cluster elects leaders) until it succeeds,
// fails with something other than UNAVAILABLE, or `deadline` passes.
absl::Status RetryUntil(absl::Time deadline, absl::FunctionRef<absl::Status()> attempt) {
  for (;;) {
    absl::Status status = attempt();
    if (status.ok() || !absl::IsUnavailable(status) || absl::Now() >= deadline) return status;
    absl::SleepFor(absl::Milliseconds(250));
  }
}

absl::Status ConnectClient(const JetStreamOptions& options, JetStreamUpdateLog::Nats& nats) {
  std::vector<const char*> urls;
  for (const std::string& url : options.servers) urls.push_back(url.c_str());
  natsStatus s = natsOptions_Create(&nats.options);
  if (s == NATS_OK)
    s = natsOptions_SetServers(nats.options, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetName(nats.options, options.replica_id.c_str());
  // Reconnect forever, quickly: a replica outlives any one NATS node.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(nats.options, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(nats.options, 200);
  // Per server: a dead node's URL costs this much before the next is tried.
  if (s == NATS_OK) s = natsOptions_SetTimeout(nats.options, 500);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(nats.options, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(nats.options, 2);
  if (s != NATS_OK) return NatsError("NATS options", s);
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  absl::Status connected = RetryUntil(deadline, [&] {
    natsStatus c = natsConnection_Connect(&nats.connection, nats.options);
    return c == NATS_OK ? absl::OkStatus() : NatsError("connecting to NATS", c);
  });
  if (!connected.ok()) return connected;
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = 2000;
  s = natsConnection_JetStream(&nats.js, nats.connection, &js_options);
  return s == NATS_OK ? absl::OkStatus() : NatsError("JetStream context", s);
}

absl::Status EnsureStream(const JetStreamOptions& options, const std::string& subject, jsCtx* js) {
  jsStreamInfo* info = nullptr;
  jsErrCode code = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&info, js, options.stream.c_str(), nullptr, &code);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return absl::OkStatus();
  }
  if (s != NATS_NOT_FOUND) return NatsError("JetStream stream info", s, code);
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  const char* subjects[] = {subject.c_str()};
  config.Name = options.stream.c_str();
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Retention = js_LimitsPolicy;
  config.Replicas = options.replicas;
  config.Duplicates = absl::ToInt64Nanoseconds(options.duplicate_window);
  s = js_AddStream(&info, js, &config, nullptr, &code);
  if (s != NATS_OK) return NatsError("creating the JetStream stream", s, code);
  jsStreamInfo_Destroy(info);
  STRATA_LOG(INFO) << "created JetStream stream " << options.stream << " (" << options.replicas
                   << " replicas)";
  return absl::OkStatus();
}

absl::Status EnsureBucket(const JetStreamOptions& options, JetStreamUpdateLog::Nats& nats) {
  const std::string bucket = absl::StrCat(options.stream, "_snapshots");
  natsStatus s = js_KeyValue(&nats.bucket, nats.js, bucket.c_str());
  if (s == NATS_OK) return absl::OkStatus();
  if (s != NATS_NOT_FOUND) return NatsError("JetStream key-value bucket", s);
  kvConfig config;
  kvConfig_Init(&config);
  config.Bucket = bucket.c_str();
  config.History = 1;
  config.Replicas = options.replicas;
  config.StorageType = js_FileStorage;
  s = js_CreateKeyValue(&nats.bucket, nats.js, &config);
  return s == NATS_OK ? absl::OkStatus() : NatsError("creating the snapshot bucket", s);
}

// Reads the stream entry by entry from its leader (see the header). A core-NATS subscription on
// the stream's subject rings a doorbell whenever someone publishes, so a caught-up reader asks for
// the next entry at once instead of polling.
class SequentialReader final : public JetStreamUpdateLog::Reader {
 public:
  SequentialReader(JetStreamUpdateLog* log, natsConnection* connection, jsCtx* js,
                   std::string stream, std::string subject, uint64_t after)
      : log_(log), js_(js), stream_(std::move(stream)), last_(after) {
    if (natsConnection_Subscribe(&doorbell_, connection, subject.c_str(), &Ring, this) != NATS_OK) {
      doorbell_ = nullptr;  // polling still works, with up to kDoorbellWait of extra lag
    }
  }
  ~SequentialReader() override {
    if (doorbell_ != nullptr) {
      natsSubscription_Unsubscribe(doorbell_);
      natsSubscription_Destroy(doorbell_);
    }
  }

  absl::StatusOr<std::optional<LogEntry>> Next(absl::Duration timeout) override {
    const absl::Time deadline = absl::Now() + timeout;
    if (tail_ <= last_ + 1 && absl::Now() - tail_checked_ > kTailRecheck) {
      // Knowing the tail tells the caller how far behind it is (LogEntry::pending).
      tail_checked_ = absl::Now();
      if (absl::StatusOr<std::pair<uint64_t, uint64_t>> range = log_->SequenceRange(); range.ok()) {
        tail_ = std::max(tail_, range->second);
      }
    }
    for (;;) {
      natsMsg* msg = nullptr;
      jsOptions options;
      jsOptions_Init(&options);
      options.Wait = 2000;
      jsErrCode code = jsErrCode(0);
      natsStatus s = js_GetMsg(&msg, js_, stream_.c_str(), last_ + 1, &options, &code);
      if (s == NATS_OK) {
        backoff_ = kMinBackoff;
        absl::StatusOr<std::optional<LogEntry>> entry = Decode(msg);
        natsMsg_Destroy(msg);
        return entry;
      }
      if (s == NATS_NOT_FOUND && absl::Now() - purge_checked_ > kPurgeRecheck) {
        purge_checked_ = absl::Now();
        absl::Status missing = CheckNotPurged();
        if (!missing.ok()) return missing;
      }
      // Not there yet (or no leader for a moment). The doorbell rings when a message is published,
      // a little before the stream commits it: after a ring ask again at once, then back off.
      if (absl::Now() >= deadline) return std::optional<LogEntry>();
      const bool rang = WaitForDoorbell(std::min(deadline, absl::Now() + backoff_));
      backoff_ = rang ? kMinBackoff : std::min(backoff_ * 2, kDoorbellWait);
    }
  }

 private:
  // Without a doorbell (or after a missed one), a caught-up reader asks again at least this often;
  // after a ring it asks again after kMinBackoff, doubling.
  static constexpr absl::Duration kDoorbellWait = absl::Milliseconds(50);
  static constexpr absl::Duration kMinBackoff = absl::Milliseconds(1);
  // How often a missing entry makes the reader check that it was not purged.
  static constexpr absl::Duration kPurgeRecheck = absl::Seconds(1);
  // How often a reader at the tail it knows asks where the tail is now.
  static constexpr absl::Duration kTailRecheck = absl::Milliseconds(500);

  static void Ring(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    natsMsg_Destroy(msg);
    auto* reader = static_cast<SequentialReader*>(closure);
    absl::MutexLock lock(&reader->mu_);
    reader->rung_ = true;
  }

  // Whether it rang (since the last call) before `until`.
  bool WaitForDoorbell(absl::Time until) {
    absl::MutexLock lock(&mu_);
    const bool rang = mu_.AwaitWithDeadline(absl::Condition(&rung_), until);
    rung_ = false;
    return rang;
  }

  // The next entry is not in the stream: fine if it is not written yet; DATA_LOSS if the stream
  // was purged past it.
  absl::Status CheckNotPurged() {
    absl::StatusOr<std::pair<uint64_t, uint64_t>> range = log_->SequenceRange();
    if (!range.ok()) return absl::OkStatus();  // asked again at the next try
    tail_ = std::max(tail_, range->second);
    if (last_ + 1 < range->first) {
      return absl::DataLossError(absl::StrCat(
          "update log: entries ", last_ + 1, "..", range->first - 1,
          " are gone from the stream (purged after a snapshot this replica did not start from); "
          "restart the replica to catch up from the newest snapshot"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<LogEntry>> Decode(natsMsg* msg) {
    LogEntry entry;
    entry.sequence = natsMsg_GetSequence(msg);
    entry.time = absl::FromUnixNanos(natsMsg_GetTime(msg));
    if (entry.sequence != last_ + 1) {
      return absl::DataLossError(
          absl::StrCat("update log: asked for entry ", last_ + 1, ", got ", entry.sequence));
    }
    const char* kind = nullptr;
    if (natsMsgHeader_Get(msg, kEntryHeader, &kind) != NATS_OK || kind == nullptr) {
      return absl::DataLossError(
          absl::StrCat("update log entry ", entry.sequence, ": no ", kEntryHeader, " header"));
    }
    if (absl::string_view(kind) == kSamplesEntry) {
      entry.kind = LogEntryKind::kSamples;
    } else if (absl::string_view(kind) == kRefreshEntry) {
      entry.kind = LogEntryKind::kRefresh;
    } else {
      return absl::DataLossError(
          absl::StrCat("update log entry ", entry.sequence, ": unknown kind \"", kind, "\""));
    }
    entry.payload.assign(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    tail_ = std::max(tail_, entry.sequence);
    entry.pending = tail_ - entry.sequence;
    last_ = entry.sequence;
    return std::optional<LogEntry>(std::move(entry));
  }

  JetStreamUpdateLog* const log_;
  jsCtx* const js_;
  const std::string stream_;
  uint64_t last_;
  uint64_t tail_ = 0;  // the highest sequence known to exist
  absl::Time tail_checked_ = absl::InfinitePast();
  absl::Time purge_checked_ = absl::InfinitePast();
  absl::Duration backoff_ = kMinBackoff;
  natsSubscription* doorbell_ = nullptr;
  absl::Mutex mu_;
  bool rung_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JetStreamUpdateLog>> JetStreamUpdateLog::Connect(
    JetStreamOptions options) {
  if (options.servers.empty()) return absl::InvalidArgumentError("no NATS server given");
  if (options.replica_id.empty()) return absl::InvalidArgumentError("no replica id given");
  if (options.stream.empty() || options.stream.find_first_of(". *>") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream name \"", options.stream, "\": expected letters, digits, - or _"));
  }
  auto nats = std::make_unique<Nats>();
  if (absl::Status s = ConnectClient(options, *nats); !s.ok()) return s;
  const std::string subject = absl::StrCat(options.stream, ".records");
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  absl::Status ready =
      RetryUntil(deadline, [&] { return EnsureStream(options, subject, nats->js); });
  if (ready.ok()) ready = RetryUntil(deadline, [&] { return EnsureBucket(options, *nats); });
  if (!ready.ok()) return ready;
  auto log = std::unique_ptr<JetStreamUpdateLog>(
      new JetStreamUpdateLog(std::move(options), std::move(nats)));
  log->max_payload_ = natsConnection_GetMaxPayload(log->nats_->connection);
  return log;
}

JetStreamUpdateLog::JetStreamUpdateLog(JetStreamOptions options, std::unique_ptr<Nats> nats)
    : options_(std::move(options)),
      nats_(std::move(nats)),
      subject_(absl::StrCat(options_.stream, ".records")),
      // The nonce keeps ids of a restarted replica apart from its previous life's within the
      // de-duplication window.
      id_prefix_(absl::StrCat(options_.replica_id, "-", std::random_device{}(), "-",
                              absl::ToUnixNanos(absl::Now()), "-")) {}

JetStreamUpdateLog::~JetStreamUpdateLog() = default;

absl::StatusOr<Appended> JetStreamUpdateLog::Publish(absl::string_view kind,
                                                     absl::string_view payload,
                                                     absl::string_view message_id) {
  if (static_cast<int64_t>(payload.size()) > max_payload_ - kHeaderSlack) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update record of ", payload.size(), " bytes is over the NATS servers' limit (",
        max_payload_, " bytes max_payload); send fewer samples per message"));
  }
  const std::string id = message_id.empty() ? absl::StrCat(id_prefix_, next_id_.fetch_add(1))
                                            : std::string(message_id);
  bool first_attempt = true;
  const absl::Time deadline = absl::Now() + options_.publish_timeout;
  absl::Status last_error;
  // The same message id on every attempt: JetStream stores a retried message at most once and
  // answers a duplicate with the sequence it was first stored at.
  do {
    natsMsg* msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, subject_.c_str(), nullptr, payload.data(),
                                  static_cast<int>(payload.size()));
    if (s == NATS_OK) s = natsMsgHeader_Set(msg, kEntryHeader, std::string(kind).c_str());
    if (s != NATS_OK) {
      if (msg != nullptr) natsMsg_Destroy(msg);
      return NatsError("update log: building a message", s);
    }
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MsgId = id.c_str();
    options.MaxWait = Millis(std::min(deadline - absl::Now(), absl::Seconds(2)));
    jsPubAck* ack = nullptr;
    jsErrCode code = jsErrCode(0);
    s = js_PublishMsg(&ack, nats_->js, msg, &options, &code);
    natsMsg_Destroy(msg);
    if (s == NATS_OK) {
      // A duplicate answering a retry of this call is this call's own message (its first
      // acknowledgement was lost), not an earlier one.
      const Appended appended{ack->Sequence, ack->Duplicate && first_attempt};
      jsPubAck_Destroy(ack);
      uint64_t seen = last_sequence_.load();
      while (seen < appended.position &&
             !last_sequence_.compare_exchange_weak(seen, appended.position)) {
      }
      return appended;
    }
    first_attempt = false;
    last_error = NatsError("publish", s, code);
    if (s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_DISCONNECTED) {
      absl::SleepFor(absl::Milliseconds(100));  // no leader yet: do not spin
    }
  } while (absl::Now() < deadline);
  return absl::UnavailableError(absl::StrCat(
      "the update log (JetStream stream ", options_.stream, ") did not acknowledge within ",
      absl::FormatDuration(options_.publish_timeout),
      " (no quorum of NATS servers?); the record was not acknowledged: ", last_error.message()));
}

absl::StatusOr<uint64_t> JetStreamUpdateLog::Append(absl::string_view payload) {
  absl::StatusOr<Appended> appended = Publish(kSamplesEntry, payload, {});
  if (!appended.ok()) return appended.status();
  return appended->position;
}

absl::StatusOr<Appended> JetStreamUpdateLog::AppendSamples(absl::string_view payload,
                                                           absl::string_view message_id) {
  return Publish(kSamplesEntry, payload, message_id);
}

absl::StatusOr<Appended> JetStreamUpdateLog::AppendRefresh(absl::string_view payload,
                                                           absl::string_view message_id) {
  return Publish(kRefreshEntry, payload, message_id);
}

void JetStreamUpdateLog::SyncAsync(uint64_t sequence,
                                   absl::AnyInvocable<void(absl::Status) &&> done) {
  std::move(done)(absl::OkStatus());
}

absl::Status JetStreamUpdateLog::Sync(uint64_t sequence) { return absl::OkStatus(); }

absl::Status JetStreamUpdateLog::Trim(uint64_t position) {
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Purge.Sequence = position + 1;  // purges up to, not including, this sequence
  jsErrCode code = jsErrCode(0);
  natsStatus s = js_PurgeStream(nats_->js, options_.stream.c_str(), &options, &code);
  return s == NATS_OK ? absl::OkStatus() : NatsError("purging the update log", s, code);
}

uint64_t JetStreamUpdateLog::last_sequence() const { return last_sequence_.load(); }

absl::StatusOr<std::pair<uint64_t, uint64_t>> JetStreamUpdateLog::SequenceRange() {
  jsStreamInfo* info = nullptr;
  jsErrCode code = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&info, nats_->js, options_.stream.c_str(), nullptr, &code);
  if (s != NATS_OK) return NatsError("JetStream stream info", s, code);
  const std::pair<uint64_t, uint64_t> range = {info->State.FirstSeq, info->State.LastSeq};
  jsStreamInfo_Destroy(info);
  return range;
}

absl::StatusOr<uint64_t> JetStreamUpdateLog::TailSequence() {
  absl::StatusOr<std::pair<uint64_t, uint64_t>> range = SequenceRange();
  if (!range.ok()) return range.status();
  return range->second;
}

absl::StatusOr<std::unique_ptr<JetStreamUpdateLog::Reader>> JetStreamUpdateLog::OpenReader(
    uint64_t after) {
  return std::unique_ptr<Reader>(
      new SequentialReader(this, nats_->connection, nats_->js, options_.stream, subject_, after));
}

// ---- Snapshots ----------------------------------------------------------------------------------

namespace {

// The bucket's index: the kept snapshots' positions, newest first, and the key's revision (0: no
// index yet).
struct SnapshotIndex {
  std::vector<uint64_t> positions;
  uint64_t revision = 0;
};

absl::StatusOr<SnapshotIndex> ReadIndex(kvStore* bucket) {
  kvEntry* entry = nullptr;
  natsStatus s = kvStore_Get(&entry, bucket, kIndexKey);
  if (s == NATS_NOT_FOUND) return SnapshotIndex{};
  if (s != NATS_OK) return NatsError("reading the snapshot index", s);
  SnapshotIndex index;
  index.revision = kvEntry_Revision(entry);
  for (absl::string_view field :
       absl::StrSplit(kvEntry_ValueString(entry), ' ', absl::SkipEmpty())) {
    uint64_t position = 0;
    if (absl::SimpleAtoi(field, &position)) index.positions.push_back(position);
  }
  kvEntry_Destroy(entry);
  return index;
}

// Replaces the index at `index.revision` (compare-and-set: UNKNOWN "wrong last sequence" style
// errors mean someone else changed it first).
natsStatus WriteIndex(kvStore* bucket, const SnapshotIndex& index) {
  const std::string text = absl::StrJoin(index.positions, " ");
  if (index.revision == 0) return kvStore_CreateString(nullptr, bucket, kIndexKey, text.c_str());
  return kvStore_UpdateString(nullptr, bucket, kIndexKey, text.c_str(), index.revision);
}

}  // namespace

absl::Status JetStreamUpdateLog::PutSnapshot(uint64_t position, absl::string_view contents) {
  absl::MutexLock lock(&snapshot_mu_);
  absl::StatusOr<SnapshotIndex> index = ReadIndex(nats_->bucket);
  if (!index.ok()) return index.status();
  if (!index->positions.empty() && index->positions.front() >= position) return absl::OkStatus();
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(max_payload_ - kHeaderSlack, 4096));
  Manifest manifest;
  manifest.bytes = contents.size();
  manifest.crc32c = base::Crc32c(contents.data(), contents.size());
  for (size_t offset = 0; offset < contents.size(); offset += chunk, ++manifest.chunks) {
    const absl::string_view part = contents.substr(offset, chunk);
    const std::string key = SnapshotKey(position, absl::StrCat(manifest.chunks));
    natsStatus s = kvStore_Put(nullptr, nats_->bucket, key.c_str(), part.data(),
                               static_cast<int>(part.size()));
    if (s != NATS_OK) return NatsError(absl::StrCat("storing snapshot chunk ", key), s);
  }
  const std::string text = EncodeManifest(manifest);
  natsStatus s = kvStore_PutString(nullptr, nats_->bucket,
                                   SnapshotKey(position, "manifest").c_str(), text.c_str());
  if (s != NATS_OK) return NatsError("storing a snapshot manifest", s);
  // Last, the index: a snapshot is listed only once it is whole. Another replica may have listed a
  // newer one meanwhile (the compare-and-set fails): then this one is not needed.
  for (;;) {
    SnapshotIndex next;
    next.revision = index->revision;
    next.positions.push_back(position);
    if (!index->positions.empty()) next.positions.push_back(index->positions.front());
    s = WriteIndex(nats_->bucket, next);
    if (s == NATS_OK) {
      // Pruning is best effort: a snapshot left behind only takes space until the next prune.
      for (size_t i = 1; i < index->positions.size(); ++i) {
        if (absl::Status deleted = DeleteSnapshot(index->positions[i]); !deleted.ok()) {
          STRATA_LOG(WARNING) << "replication: pruning an old snapshot: " << deleted;
        }
      }
      return absl::OkStatus();
    }
    index = ReadIndex(nats_->bucket);
    if (!index.ok()) return index.status();
    const std::vector<uint64_t>& listed = index->positions;
    if (std::find(listed.begin(), listed.end(), position) != listed.end()) {
      return absl::OkStatus();  // another replica listed the same position (the same bytes)
    }
    if (!listed.empty() && listed.front() > position) return DeleteSnapshot(position);
  }
}

absl::StatusOr<std::vector<uint64_t>> JetStreamUpdateLog::SnapshotPositions() {
  absl::StatusOr<SnapshotIndex> index = ReadIndex(nats_->bucket);
  if (!index.ok()) return index.status();
  return index->positions;
}

absl::StatusOr<std::string> JetStreamUpdateLog::GetSnapshot(uint64_t position) {
  auto get = [&](const std::string& key) -> absl::StatusOr<std::string> {
    kvEntry* entry = nullptr;
    natsStatus s = kvStore_Get(&entry, nats_->bucket, key.c_str());
    if (s != NATS_OK) return NatsError(absl::StrCat("snapshot bucket key ", key), s);
    std::string value(static_cast<const char*>(kvEntry_Value(entry)), kvEntry_ValueLen(entry));
    kvEntry_Destroy(entry);
    return value;
  };
  absl::StatusOr<std::string> text = get(SnapshotKey(position, "manifest"));
  if (!text.ok()) return text.status();
  absl::StatusOr<Manifest> manifest = DecodeManifest(*text);
  if (!manifest.ok()) return manifest.status();
  std::string contents;
  contents.reserve(manifest->bytes);
  for (uint64_t i = 0; i < manifest->chunks; ++i) {
    absl::StatusOr<std::string> part = get(SnapshotKey(position, absl::StrCat(i)));
    if (absl::IsNotFound(part.status())) return absl::DataLossError(part.status().message());
    if (!part.ok()) return part.status();
    contents += *part;
  }
  if (contents.size() != manifest->bytes ||
      base::Crc32c(contents.data(), contents.size()) != manifest->crc32c) {
    return absl::DataLossError(absl::StrCat("snapshot at log position ", position,
                                            ": its chunks do not match its manifest"));
  }
  return contents;
}

absl::StatusOr<absl::Time> JetStreamUpdateLog::SnapshotTime(uint64_t position) {
  kvEntry* entry = nullptr;
  natsStatus s = kvStore_Get(&entry, nats_->bucket, SnapshotKey(position, "manifest").c_str());
  if (s != NATS_OK) return NatsError("snapshot manifest", s);
  const absl::Time created = absl::FromUnixNanos(kvEntry_Created(entry));
  kvEntry_Destroy(entry);
  return created;
}

absl::Status JetStreamUpdateLog::DeleteSnapshot(uint64_t position) {
  kvEntry* entry = nullptr;
  const std::string manifest_key = SnapshotKey(position, "manifest");
  natsStatus s = kvStore_Get(&entry, nats_->bucket, manifest_key.c_str());
  if (s != NATS_OK) return s == NATS_NOT_FOUND ? absl::OkStatus() : NatsError("snapshot", s);
  absl::StatusOr<Manifest> manifest = DecodeManifest(kvEntry_ValueString(entry));
  kvEntry_Destroy(entry);
  // The manifest first: nobody starts reading a snapshot whose chunks are going.
  s = kvStore_Purge(nats_->bucket, manifest_key.c_str(), nullptr);
  if (s != NATS_OK) return NatsError("deleting a snapshot manifest", s);
  for (uint64_t i = 0; manifest.ok() && i < manifest->chunks; ++i) {
    kvStore_Purge(nats_->bucket, SnapshotKey(position, absl::StrCat(i)).c_str(), nullptr);
  }
  return absl::OkStatus();
}

}  // namespace strata::update
