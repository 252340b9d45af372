#include "bench/replication_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "model/lower_tier_extractor.h"
#include "tests/server_process.h"
#include "update/jetstream_update_log.h"
#include "update/recovery.h"
#include "update/statistics_digest.h"
#include "update/update_record.h"

namespace strata::replication {
namespace {

constexpr absl::Duration kStartupLimit = absl::Seconds(120);

// A port nothing listens on now (the kernel's pick for port 0).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return ok;
}

pid_t SpawnProgram(const std::vector<std::string>& args, const std::string& stderr_path) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& s : copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execvp(copy[0].c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

void KillAndWait(pid_t& pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

}  // namespace

// ---- NatsCluster --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<NatsCluster>> NatsCluster::Start(const std::string& dir, int nodes) {
  std::unique_ptr<NatsCluster> cluster(new NatsCluster);
  std::vector<int> route_ports;
  for (int i = 0; i < nodes; ++i) {
    cluster->nodes_.push_back({FreePort(), "", absl::StrCat(dir, "/nats-", i, ".log"), -1});
    route_ports.push_back(FreePort());
  }
  std::vector<std::string> routes;
  for (int port : route_ports) routes.push_back(absl::StrCat("nats://127.0.0.1:", port));
  for (int i = 0; i < nodes; ++i) {
    Node& node = cluster->nodes_[i];
    node.config_path = absl::StrCat(dir, "/nats-", i, ".conf");
    std::ofstream config(node.config_path);
    config << "server_name: n" << i << "\n"
           << "listen: 127.0.0.1:" << node.client_port << "\n"
           << "max_payload: 8388608\n"
           << "jetstream { store_dir: \"" << dir << "/nats-" << i << "\" }\n"
           << "cluster {\n  name: strata\n  listen: 127.0.0.1:" << route_ports[i] << "\n"
           << "  routes: [" << absl::StrJoin(routes, ", ") << "]\n}\n";
    if (!config) return absl::InternalError(absl::StrCat("cannot write ", node.config_path));
  }
  for (int i = 0; i < nodes; ++i) {
    if (absl::Status s = cluster->StartNode(i); !s.ok()) return s;
  }
  return cluster;
}

absl::Status NatsCluster::StartNode(int i) {
  Node& node = nodes_[i];
  node.pid = SpawnProgram({"nats-server", "-c", node.config_path}, node.log_path);
  const absl::Time limit = absl::Now() + absl::Seconds(30);
  while (!Accepts(node.client_port)) {
    int status = 0;
    if (waitpid(node.pid, &status, WNOHANG) == node.pid) {
      node.pid = -1;
      return absl::FailedPreconditionError(absl::StrCat(
          "nats-server exited (is it installed? scripts/setup.sh); see ", node.log_path));
    }
    if (absl::Now() > limit) return absl::DeadlineExceededError("nats-server did not listen");
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

NatsCluster::~NatsCluster() {
  for (Node& node : nodes_) KillAndWait(node.pid);
}

void NatsCluster::Kill(int i) { KillAndWait(nodes_[i].pid); }

absl::Status NatsCluster::Restart(int i) { return StartNode(i); }

std::string NatsCluster::urls() const {
  std::vector<std::string> urls;
  for (const Node& node : nodes_)
    urls.push_back(absl::StrCat("nats://127.0.0.1:", node.client_port));
  return absl::StrJoin(urls, ",");
}

// ---- ReplicaProcess -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<ReplicaProcess>> ReplicaProcess::Start(const Config& config) {
  static std::atomic<int> count{0};
  const std::string port_file = absl::StrCat(config.dir, "/replica-port.", count++);
  std::vector<std::string> args = {absl::StrCat("--bundle=", config.bundle_path),
                                   "--address=127.0.0.1:0",
                                   absl::StrCat("--port_file=", port_file),
                                   absl::StrCat("--max_batch=", crash::kMaxBatch),
                                   "--max_message_bytes=1048576",
                                   absl::StrCat("--nats_servers=", config.nats_urls),
                                   absl::StrCat("--nats_stream=", config.stream),
                                   absl::StrCat("--replica_id=", config.id)};
  args.insert(args.end(), config.extra_args.begin(), config.extra_args.end());
  std::unique_ptr<ReplicaProcess> replica(new ReplicaProcess);
  replica->id_ = config.id;
  const absl::Time start = absl::Now();
  // One lower-tier thread, as the in-process reference replay (bit-identical features).
  replica->pid_ = test::ServerProcess::Spawn(
      args, {.stderr_path = config.log_path,
             .environment = {{"OMP_NUM_THREADS", "1"}, {"OMP_WAIT_POLICY", "PASSIVE"}}});
  const absl::Time limit = start + kStartupLimit;
  auto exited = [&] {
    if (waitpid(replica->pid_, nullptr, WNOHANG) != replica->pid_) return false;
    replica->pid_ = -1;
    return true;
  };
  int port = 0;
  while (true) {
    std::ifstream in(port_file);
    if (in >> port && port != 0) break;
    if (exited()) return absl::FailedPreconditionError("strata-server exited during start-up");
    if (absl::Now() > limit) return absl::DeadlineExceededError("strata-server wrote no port file");
    absl::SleepFor(absl::Milliseconds(10));
  }
  client::ClientOptions options;
  options.timeout = absl::Seconds(60);
  replica->client_ = std::make_unique<client::Client>(absl::StrCat("127.0.0.1:", port), options);
  while (!replica->client_->WaitUntilServing(absl::Milliseconds(200)).ok()) {
    if (exited()) return absl::FailedPreconditionError("strata-server exited during start-up");
    if (absl::Now() > limit) return absl::DeadlineExceededError("the replica did not serve");
  }
  replica->startup_time_ = absl::Now() - start;
  return replica;
}

ReplicaProcess::~ReplicaProcess() { Kill(); }

void ReplicaProcess::Kill() { KillAndWait(pid_); }

// ---- The run ------------------------------------------------------------------------------------

namespace {

// Every entry the stream holds, read by a tap that follows it from the start (before snapshots
// let the replicas purge it).
class LogTap {
 public:
  static absl::StatusOr<std::unique_ptr<LogTap>> Start(const std::string& urls) {
    update::JetStreamOptions options;
    options.servers = absl::StrSplit(urls, ',');
    options.replica_id = "harness-tap";
    absl::StatusOr<std::unique_ptr<update::JetStreamUpdateLog>> log =
        update::JetStreamUpdateLog::Connect(options);
    if (!log.ok()) return log.status();
    std::unique_ptr<LogTap> tap(new LogTap);
    tap->log_ = *std::move(log);
    absl::StatusOr<std::unique_ptr<update::JetStreamUpdateLog::Reader>> reader =
        tap->log_->OpenReader(0);
    if (!reader.ok()) return reader.status();
    tap->reader_ = *std::move(reader);
    tap->thread_ = std::thread([tap = tap.get()] { tap->Run(); });
    return tap;
  }
  ~LogTap() {
    stop_ = true;
    thread_.join();
  }
  // Waits until the tap has read the entry at `position`.
  absl::Status WaitFor(uint64_t position, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !error_.ok() || (!entries_.empty() && entries_.back().sequence >= position);
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&reached), timeout)) {
      return absl::DeadlineExceededError("the tap did not reach the final log position");
    }
    return error_;
  }
  std::vector<update::LogEntry> entries() {
    absl::MutexLock lock(&mu_);
    return entries_;
  }

 private:
  void Run() {
    while (!stop_) {
      absl::StatusOr<std::optional<update::LogEntry>> entry =
          reader_->Next(absl::Milliseconds(100));
      absl::MutexLock lock(&mu_);
      if (!entry.ok()) {
        error_ = entry.status();
        return;
      }
      if (entry->has_value()) entries_.push_back(**std::move(entry));
    }
  }

  std::unique_ptr<update::JetStreamUpdateLog> log_;
  std::unique_ptr<update::JetStreamUpdateLog::Reader> reader_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<update::LogEntry> entries_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

// The record payload a message becomes (the pipeline encodes pixels exactly so).
std::string MessagePayload(const crash::Fixture& fixture, const crash::Message& m) {
  update::UpdateRecordBuilder builder(static_cast<int>(fixture.updates.image_size()));
  for (size_t i = m.begin; i < m.begin + m.count; ++i) {
    builder.AddPixels(fixture.updates.labels[i],
                      absl::string_view(reinterpret_cast<const char*>(fixture.updates.image(i)),
                                        fixture.updates.image_size()));
  }
  return builder.Finish();
}

class FailureRun {
 public:
  FailureRun(const crash::Fixture& fixture, std::string dir, const FailureRunOptions& options)
      : fixture_(fixture), dir_(std::move(dir)), options_(options), rng_(options.seed) {}

  absl::StatusOr<FailureRunReport> Run();

 private:
  absl::StatusOr<std::shared_ptr<ReplicaProcess>> StartReplica(int i);
  std::shared_ptr<ReplicaProcess> Pick(std::mt19937_64& rng);
  // Streams one Update through `replica` and records what was sent and acknowledged.
  void Stream(ReplicaProcess& replica, std::mt19937_64& rng);
  void ClientLoop(int client);
  absl::Status CheckReadYourWrites(FailureRunReport* report);
  absl::Status KillRound(int round, FailureRunReport* report);
  absl::Status CheckQuorumLoss(FailureRunReport* report);
  absl::Status CheckEnd(FailureRunReport* report);
  void CheckLog(const std::vector<update::LogEntry>& entries, uint64_t through,
                FailureRunReport* report);
  absl::StatusOr<std::string> ReferenceDigest(const std::vector<update::LogEntry>& entries,
                                              uint64_t through);

  const crash::Fixture& fixture_;
  const std::string dir_;
  const FailureRunOptions options_;
  std::mt19937_64 rng_;
  std::unique_ptr<NatsCluster> nats_;
  std::unique_ptr<LogTap> tap_;

  absl::Mutex mu_;
  std::vector<std::shared_ptr<ReplicaProcess>> replicas_ ABSL_GUARDED_BY(mu_);
  size_t next_image_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<crash::Message> acked_ ABSL_GUARDED_BY(mu_);
  std::vector<crash::Message> unacked_ ABSL_GUARDED_BY(mu_);
  size_t summary_mismatches_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> streaming_{false};
};

absl::StatusOr<std::shared_ptr<ReplicaProcess>> FailureRun::StartReplica(int i) {
  ReplicaProcess::Config config;
  config.bundle_path = fixture_.bundle_path;
  config.nats_urls = nats_->urls();
  config.id = absl::StrCat("replica-", i);
  config.dir = dir_;
  config.log_path = options_.log_path;
  config.extra_args = {absl::StrCat("--snapshot_every_samples=", options_.snapshot_every_samples),
                       "--nats_publish_timeout=2s", "--snapshot_trim_delay=15s"};
  absl::StatusOr<std::unique_ptr<ReplicaProcess>> replica = ReplicaProcess::Start(config);
  if (!replica.ok()) return replica.status();
  return std::shared_ptr<ReplicaProcess>(*std::move(replica));
}

std::shared_ptr<ReplicaProcess> FailureRun::Pick(std::mt19937_64& rng) {
  absl::MutexLock lock(&mu_);
  return replicas_[rng() % replicas_.size()];
}

void FailureRun::Stream(ReplicaProcess& replica, std::mt19937_64& rng) {
  std::vector<crash::Message> messages(1 + rng() % 4);
  {
    absl::MutexLock lock(&mu_);
    for (crash::Message& m : messages) {
      m.count = 1 + rng() % 24;
      if (next_image_ + m.count > fixture_.updates.size()) next_image_ = 0;  // reuse the pool
      m.begin = next_image_;
      next_image_ += m.count;
    }
  }
  std::vector<v1::UpdateRequest> requests;
  size_t samples = 0;
  for (const crash::Message& m : messages) {
    requests.push_back(crash::ToRequest(fixture_, m));
    samples += m.count;
  }
  absl::StatusOr<v1::UpdateSummary> summary = replica.client().Update(requests);
  absl::MutexLock lock(&mu_);
  std::vector<crash::Message>& into = summary.ok() ? acked_ : unacked_;
  into.insert(into.end(), messages.begin(), messages.end());
  if (summary.ok() && summary->accepted() != samples) ++summary_mismatches_;
}

void FailureRun::ClientLoop(int client) {
  std::mt19937_64 rng(options_.seed + 1000 + client);
  while (streaming_) {
    std::shared_ptr<ReplicaProcess> replica = Pick(rng);
    Stream(*replica, rng);
  }
}

absl::Status FailureRun::CheckReadYourWrites(FailureRunReport* report) {
  std::vector<std::shared_ptr<ReplicaProcess>> replicas;
  {
    absl::MutexLock lock(&mu_);
    replicas = replicas_;
  }
  std::vector<crash::Message> messages = {{0, 40}, {40, 40}};
  std::vector<v1::UpdateRequest> requests;
  for (const crash::Message& m : messages) requests.push_back(crash::ToRequest(fixture_, m));
  absl::StatusOr<v1::UpdateSummary> summary = replicas[0]->client().Update(requests);
  if (!summary.ok()) return summary.status();
  {
    absl::MutexLock lock(&mu_);
    acked_.insert(acked_.end(), messages.begin(), messages.end());
    next_image_ = 80;
  }
  v1::PredictRequest predict = v1::PredictRequest();
  for (int i = 0; i < 16; ++i) {
    predict.add_samples()->set_pixels(fixture_.updates.image(1000 + i),
                                      fixture_.updates.image_size());
  }
  predict.set_return_scores(true);
  predict.set_min_log_position(summary->log_position());
  std::string first;
  report->read_your_writes = true;
  for (auto& replica : replicas) {
    absl::StatusOr<v1::PredictResponse> response = replica->client().Predict(predict);
    if (!response.ok()) return response.status();
    if (response->log_position() < summary->log_position()) report->read_your_writes = false;
    response->clear_energy();  // energy is per call; the answer must be bit-identical
    const std::string bytes = response->SerializeAsString();
    if (first.empty()) first = bytes;
    if (bytes != first) report->read_your_writes = false;
  }
  return absl::OkStatus();
}

absl::Status FailureRun::KillRound(int round, FailureRunReport* report) {
  absl::SleepFor(absl::Milliseconds(200 + rng_() % 600));
  const int node = round % nats_->nodes();
  const int index = static_cast<int>(rng_() % options_.replicas);
  std::shared_ptr<ReplicaProcess> victim;
  {
    absl::MutexLock lock(&mu_);
    victim = replicas_[index];
  }
  nats_->Kill(node);
  victim->Kill();
  absl::SleepFor(absl::Milliseconds(300 + rng_() % 700));
  if (absl::Status s = nats_->Restart(node); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<ReplicaProcess>> restarted = StartReplica(index);
  if (!restarted.ok()) return restarted.status();
  report->catch_up_times.push_back((*restarted)->startup_time());
  {
    absl::MutexLock lock(&mu_);
    replicas_[index] = *restarted;
  }
  report->rounds = round + 1;
  if (options_.on_round) options_.on_round(round, (*restarted)->startup_time());
  return absl::OkStatus();
}

absl::Status FailureRun::CheckQuorumLoss(FailureRunReport* report) {
  report->quorum_loss_checked = true;
  std::shared_ptr<ReplicaProcess> replica = Pick(rng_);
  nats_->Kill(0);
  nats_->Kill(1);
  const crash::Message message{0, 8};
  const absl::Time start = absl::Now();
  const std::vector<v1::UpdateRequest> request = {crash::ToRequest(fixture_, message)};
  absl::StatusOr<v1::UpdateSummary> summary = replica->client().Update(request);
  report->quorum_loss_failure_time = absl::Now() - start;
  report->quorum_loss_unavailable = absl::IsUnavailable(summary.status());
  {
    absl::MutexLock lock(&mu_);
    (summary.ok() ? acked_ : unacked_).push_back(message);
  }
  v1::PredictRequest predict;
  predict.add_samples()->set_pixels(fixture_.updates.image(0), fixture_.updates.image_size());
  report->quorum_loss_predict_ok = replica->client().Predict(predict).ok();
  if (absl::Status s = nats_->Restart(0); !s.ok()) return s;
  return nats_->Restart(1);
}

absl::StatusOr<FailureRunReport> FailureRun::Run() {
  FailureRunReport report;
  absl::StatusOr<std::unique_ptr<NatsCluster>> nats = NatsCluster::Start(dir_);
  if (!nats.ok()) return nats.status();
  nats_ = *std::move(nats);
  absl::StatusOr<std::unique_ptr<LogTap>> tap = LogTap::Start(nats_->urls());
  if (!tap.ok()) return tap.status();
  tap_ = *std::move(tap);
  for (int i = 0; i < options_.replicas; ++i) {
    absl::StatusOr<std::shared_ptr<ReplicaProcess>> replica = StartReplica(i);
    if (!replica.ok()) return replica.status();
    absl::MutexLock lock(&mu_);
    replicas_.push_back(*std::move(replica));
  }
  if (absl::Status s = CheckReadYourWrites(&report); !s.ok()) return s;
  streaming_ = true;
  std::vector<std::thread> clients;
  for (int c = 0; c < options_.clients; ++c) clients.emplace_back([this, c] { ClientLoop(c); });
  absl::Status rounds;
  for (int round = 0; round < options_.rounds && rounds.ok(); ++round) {
    rounds = KillRound(round, &report);
  }
  streaming_ = false;
  for (std::thread& t : clients) t.join();
  if (!rounds.ok()) return rounds;
  if (options_.quorum_loss_check) {
    if (absl::Status s = CheckQuorumLoss(&report); !s.ok()) return s;
  }
  if (absl::Status s = CheckEnd(&report); !s.ok()) return s;
  return report;
}

absl::Status FailureRun::CheckEnd(FailureRunReport* report) {
  std::vector<std::shared_ptr<ReplicaProcess>> replicas;
  {
    absl::MutexLock lock(&mu_);
    replicas = replicas_;
  }
  // A last stream (retried while the restarted NATS nodes elect leaders) puts a refresh marker at
  // the end of the log: every replica then serves everything.
  const crash::Message last{0, 4};
  const std::vector<v1::UpdateRequest> request = {crash::ToRequest(fixture_, last)};
  absl::StatusOr<v1::UpdateSummary> summary = absl::UnavailableError("not sent");
  for (int attempt = 0; attempt < 30 && !summary.ok(); ++attempt) {
    summary = replicas[0]->client().Update(request);
    absl::MutexLock lock(&mu_);
    (summary.ok() ? acked_ : unacked_).push_back(last);
    if (!summary.ok()) absl::SleepFor(absl::Seconds(1));
  }
  if (!summary.ok()) return summary.status();
  report->final_position = summary->log_position();
  std::vector<uint64_t> versions;
  for (auto& replica : replicas) {
    v1::PredictRequest predict;
    predict.add_samples()->set_pixels(fixture_.updates.image(0), fixture_.updates.image_size());
    predict.set_min_log_position(report->final_position);
    absl::StatusOr<v1::PredictResponse> response = replica->client().Predict(predict);
    if (!response.ok()) return response.status();
    absl::StatusOr<v1::ModelInfo> info = replica->client().GetModelInfo();
    absl::StatusOr<v1::Stats> stats = replica->client().GetStats();
    if (!info.ok()) return info.status();
    if (!stats.ok()) return stats.status();
    report->digests.push_back(absl::StrCat(info->statistics_digest(), "@", info->log_position(),
                                           "/v", info->model_version()));
    versions.push_back(info->model_version());
    report->snapshots_stored += stats->replica_snapshots_stored();
  }
  report->final_version = versions.front();
  report->digests_agree =
      std::all_of(report->digests.begin(), report->digests.end(),
                  [&](const std::string& d) { return d == report->digests[0]; });
  if (absl::Status s = tap_->WaitFor(report->final_position, absl::Seconds(60)); !s.ok()) return s;
  const std::vector<update::LogEntry> entries = tap_->entries();
  CheckLog(entries, report->final_position, report);
  absl::StatusOr<std::string> reference = ReferenceDigest(entries, report->final_position);
  if (!reference.ok()) return reference.status();
  report->reference_digest = absl::StrCat(*reference, "@", report->final_position);
  report->reference_match =
      !report->digests.empty() && report->digests[0].rfind(report->reference_digest, 0) == 0;
  return absl::OkStatus();
}

void FailureRun::CheckLog(const std::vector<update::LogEntry>& entries, uint64_t through,
                          FailureRunReport* report) {
  absl::MutexLock lock(&mu_);
  // Per distinct record payload (the image pool is reused, so a message may be sent more than
  // once): how often it was acknowledged, sent without acknowledgement, and found in the log.
  struct Tally {
    size_t acked = 0, unacked = 0, found = 0, samples = 0;
  };
  std::map<std::string, Tally> tallies;
  for (const crash::Message& m : acked_) {
    Tally& t = tallies[MessagePayload(fixture_, m)];
    ++t.acked;
    t.samples = m.count;
    report->acked_samples += m.count;
  }
  for (const crash::Message& m : unacked_) {
    Tally& t = tallies[MessagePayload(fixture_, m)];
    ++t.unacked;
    t.samples = m.count;
  }
  for (const update::LogEntry& entry : entries) {
    if (entry.sequence > through) break;
    ++report->log_entries;
    if (entry.sequence + 12 > through) {
      const absl::StatusOr<update::UpdateRecord> record =
          entry.kind == update::LogEntryKind::kSamples
              ? update::DecodeUpdateRecord(entry.payload,
                                           static_cast<int>(fixture_.updates.image_size()))
              : absl::StatusOr<update::UpdateRecord>(absl::NotFoundError("marker"));
      report->log_tail.push_back(absl::StrCat(
          entry.sequence, record.ok() ? absl::StrCat(" samples ", record->labels.size())
                                      : std::string(" refresh")));
    }
    if (entry.kind != update::LogEntryKind::kSamples) continue;
    auto it = tallies.find(entry.payload);
    if (it == tallies.end()) {
      ++report->unknown_entries;
    } else {
      ++it->second.found;
    }
  }
  for (const auto& [payload, t] : tallies) {
    if (t.found < t.acked) {
      report->lost_messages += t.acked - t.found;
      report->lost_samples += (t.acked - t.found) * t.samples;
    }
    if (t.found > t.acked + t.unacked) report->duplicated_messages += t.found - t.acked - t.unacked;
    if (t.found > t.acked) report->landed_messages += std::min(t.found - t.acked, t.unacked);
  }
  report->acked_messages = acked_.size();
  report->unacked_messages = unacked_.size();
  report->summary_mismatches = summary_mismatches_;
}

absl::StatusOr<std::string> FailureRun::ReferenceDigest(
    const std::vector<update::LogEntry>& entries, uint64_t through) {
  model::Bundle bundle = fixture_.bundle;
  absl::StatusOr<std::shared_ptr<const model::FeatureExtractor>> extractor =
      model::MakeLowerTierExtractor(bundle.lower, bundle.int8, nullptr);
  if (!extractor.ok()) return extractor.status();
  for (const update::LogEntry& entry : entries) {
    if (entry.sequence > through) break;
    if (entry.kind != update::LogEntryKind::kSamples) continue;
    absl::StatusOr<update::UpdateRecord> record =
        update::DecodeUpdateRecord(entry.payload, (*extractor)->input_size());
    if (!record.ok()) return record.status();
    absl::StatusOr<std::vector<std::string>> absorbed =
        update::AbsorbUpdateRecord(**extractor, *record, crash::kMaxBatch, bundle.upper);
    if (!absorbed.ok()) return absorbed.status();
  }
  return update::StatisticsDigest(bundle.upper);
}

}  // namespace

absl::StatusOr<FailureRunReport> RunFailureRounds(const crash::Fixture& fixture,
                                                  const std::string& dir,
                                                  const FailureRunOptions& options) {
  FailureRun run(fixture, dir, options);
  return run.Run();
}

}  // namespace strata::replication
