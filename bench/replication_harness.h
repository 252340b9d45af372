// The replication harness: a real NATS JetStream cluster (three nats-server processes clustered on
// 127.0.0.1, JetStream storage in a temporary directory) and real strata-server replicas in
// replicated mode, started by the harness itself; kill rounds while clients stream Updates; then
// the checks of docs/replication.md:
//
//   * read-your-writes: an Update through one replica is answered by the others' Predicts asked
//     for its log position, with the same predictions and scores, bit for bit;
//   * kill rounds: each round SIGKILLs one NATS node and one replica in the middle of streaming and
//     restarts them (the replica catches up from the newest snapshot and the stream's tail);
//   * quorum loss: with two of three NATS nodes down an Update fails with UNAVAILABLE within the
//     publish timeout while Predict keeps answering;
//   * at the end, against every entry the stream ever held (read by a tap following the stream
//     from the start): every ACKNOWLEDGED message is in the log exactly once (0 lost, 0
//     duplicated), no message is in it twice, every replica serves the same version at the same
//     log position with the same statistics digest, and that digest equals the digest of the
//     bundle plus an in-process replay of the log (the replicas applied exactly the log).
//
// Shared by tests/replication_test.cc (a few rounds, as a ctest) and strata-bench-replication
// (20+ rounds, plus throughput, lag and recovery figures). Not thread-safe: one run at a time.
#ifndef STRATA_BENCH_REPLICATION_HARNESS_H_
#define STRATA_BENCH_REPLICATION_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/crash_harness.h"
#include "client/client.h"

namespace strata::replication {

// nats-server processes clustered on 127.0.0.1 (free ports), JetStream storage under `dir`.
class NatsCluster {
 public:
  // Starts `nodes` servers (max_payload 8 MiB) and waits until each accepts connections.
  static absl::StatusOr<std::unique_ptr<NatsCluster>> Start(const std::string& dir, int nodes = 3);
  // SIGKILLs every node.
  ~NatsCluster();

  // SIGKILL node `i` (its storage stays).
  void Kill(int i);
  // Starts node `i` again on the same ports and storage.
  absl::Status Restart(int i);
  // The client URLs of every node, comma-separated (strata-server --nats_servers).
  std::string urls() const;
  int nodes() const { return static_cast<int>(nodes_.size()); }

 private:
  struct Node {
    int client_port = 0;
    std::string config_path;
    std::string log_path;
    pid_t pid = -1;
  };
  NatsCluster() = default;
  absl::Status StartNode(int i);
  std::vector<Node> nodes_;
};

// One strata-server replica in replicated mode on the fixture's bundle (port 0, --max_batch 64,
// one lower-tier thread), stderr appended to `log_path`. Killed (SIGKILL) when destroyed.
class ReplicaProcess {
 public:
  struct Config {
    std::string bundle_path;
    std::string nats_urls;
    std::string stream = "STRATA";
    std::string id;
    std::string dir;  // for its port file
    std::string log_path;
    std::vector<std::string> extra_args;
  };
  // Starts it and waits until it reports SERVING (caught up with the stream).
  static absl::StatusOr<std::unique_ptr<ReplicaProcess>> Start(const Config& config);
  ~ReplicaProcess();
  void Kill();
  client::Client& client() { return *client_; }
  const std::string& id() const { return id_; }
  pid_t pid() const { return pid_; }
  // From the start of the process to SERVING (catch-up included).
  absl::Duration startup_time() const { return startup_time_; }

 private:
  ReplicaProcess() = default;
  pid_t pid_ = -1;
  std::string id_;
  absl::Duration startup_time_;
  std::unique_ptr<client::Client> client_;
};

struct FailureRunOptions {
  int rounds = 3;
  int replicas = 3;
  int clients = 2;  // threads streaming Updates (1-4 messages of 1-24 samples) to random replicas
  uint64_t snapshot_every_samples = 1000;  // small, so restarts catch up from snapshots
  bool quorum_loss_check = true;
  uint64_t seed = 20261130;
  std::string log_path;  // every process's stderr, appended
  std::function<void(int round, absl::Duration replica_catch_up)> on_round;
};

struct FailureRunReport {
  int rounds = 0;
  bool read_your_writes = false;  // the other replicas answered A's update identically
  size_t acked_messages = 0;
  size_t acked_samples = 0;
  size_t unacked_messages = 0;
  size_t landed_messages = 0;  // unacknowledged messages found (whole) in the log
  // All must be 0:
  size_t lost_messages = 0;  // acknowledged messages missing from the log
  size_t lost_samples = 0;
  size_t duplicated_messages = 0;  // messages in the log more than once
  size_t unknown_entries = 0;      // log entries that are no message the clients sent
  size_t summary_mismatches = 0;   // OK summaries whose `accepted` was not the stream's samples
  // Quorum loss (if checked): the Update failed with UNAVAILABLE, and how long it took; Predict
  // answered meanwhile.
  bool quorum_loss_checked = false;
  bool quorum_loss_unavailable = false;
  absl::Duration quorum_loss_failure_time;
  bool quorum_loss_predict_ok = false;
  // The end state: every replica at the final log position with the same version and digest,
  // equal to the in-process replay's.
  uint64_t final_position = 0;
  uint64_t final_version = 0;
  std::vector<std::string> digests;  // one per replica
  std::string reference_digest;
  bool digests_agree = false;
  bool reference_match = false;
  uint64_t log_entries = 0;
  std::vector<std::string> log_tail;  // the last entries through final_position: "seq kind n"
  uint64_t snapshots_stored = 0;      // summed over the final replicas
  std::vector<absl::Duration> catch_up_times;  // the restarted replicas', in round order

  bool ok() const {
    return read_your_writes && lost_messages == 0 && lost_samples == 0 &&
           duplicated_messages == 0 && unknown_entries == 0 && summary_mismatches == 0 &&
           digests_agree && reference_match &&
           (!quorum_loss_checked || (quorum_loss_unavailable && quorum_loss_predict_ok));
  }
};

// The whole run on `fixture` (crash::MakeFixture's model and update pool) in `dir`. Errors are the
// harness's own (a process that does not start), not findings: findings are in the report.
absl::StatusOr<FailureRunReport> RunFailureRounds(const crash::Fixture& fixture,
                                                  const std::string& dir,
                                                  const FailureRunOptions& options);

}  // namespace strata::replication

#endif  // STRATA_BENCH_REPLICATION_HARNESS_H_
