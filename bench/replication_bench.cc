// strata-bench-replication: replicated mode on a real three-node NATS JetStream cluster on
// loopback (docs/replication.md), every process started by the bench:
//
//   1. the failure run (bench/replication_harness.h) for --rounds kill rounds: 0 acknowledged
//      messages lost, 0 duplicated, every replica's statistics digest equal to a replay of the log;
//   2. Update throughput, samples acknowledged per second: three replicas vs one strata-server with
//      the file log (--state_dir), the same clients and messages, one after the other;
//   3. read-your-writes lag: from an UpdateSummary through one replica to the other two answering
//      a Predict asked for its log position (p50 / p99 / max over --lag_updates updates), beside a
//      plain Predict's latency;
//   4. recovery: a new replica's start to SERVING, catching up the whole stream, and from the
//      newest snapshot plus a tail of 10 % of it.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/crash_harness.h"
#include "bench/replication_harness.h"

ABSL_FLAG(int32_t, rounds, 20, "Kill rounds of the failure run (0: skip it).");
ABSL_FLAG(std::string, bundle, "",
          "Bundle the throughput, lag and recovery replicas serve (e.g. one strata-train "
          "--spec=specs/fast.spec wrote); default: the failure run's small float model.");
ABSL_FLAG(int32_t, clients, 4, "Throughput: concurrent client streams.");
ABSL_FLAG(int32_t, streams_per_client, 10, "Throughput: Update streams each client sends.");
ABSL_FLAG(int32_t, messages_per_stream, 4, "Throughput: messages per stream.");
ABSL_FLAG(int32_t, samples_per_message, 64, "Throughput and lag: samples per Update message.");
ABSL_FLAG(int32_t, lag_updates, 100, "Lag: Updates measured.");
ABSL_FLAG(int32_t, recovery_samples, 20000,
          "Recovery: samples in the stream a replica catches up.");
ABSL_FLAG(bool, figures, true, "Measure throughput, lag and recovery after the failure run.");
ABSL_FLAG(bool, keep_dir, false, "Keep the temporary directory (NATS storage, logs).");

namespace strata::replication {
namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::Duration Quantile(std::vector<absl::Duration> values, double q) {
  if (values.empty()) return absl::ZeroDuration();
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(q * (values.size() - 1) + 0.5);
  return values[std::min(rank, values.size() - 1)];
}

std::vector<v1::UpdateRequest> Messages(const crash::Fixture& fixture, size_t* next, int count,
                                        int samples) {
  std::vector<v1::UpdateRequest> messages;
  for (int m = 0; m < count; ++m) {
    if (*next + samples > fixture.updates.size()) *next = 0;
    messages.push_back(crash::ToRequest(fixture, {*next, static_cast<size_t>(samples)}));
    *next += samples;
  }
  return messages;
}

struct Cluster {
  std::unique_ptr<NatsCluster> nats;
  std::vector<std::unique_ptr<ReplicaProcess>> replicas;
};

absl::StatusOr<std::unique_ptr<ReplicaProcess>> StartReplica(
    const std::string& bundle, const NatsCluster& nats, const std::string& dir,
    const std::string& stream, const std::string& id, std::vector<std::string> args) {
  ReplicaProcess::Config config;
  config.bundle_path = bundle;
  config.nats_urls = nats.urls();
  config.stream = stream;
  config.id = id;
  config.dir = dir;
  config.log_path = dir + "/servers.log";
  config.extra_args = std::move(args);
  return ReplicaProcess::Start(config);
}

absl::StatusOr<Cluster> StartCluster(const std::string& bundle, const std::string& dir) {
  Cluster cluster;
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::unique_ptr<NatsCluster>> nats = NatsCluster::Start(dir);
  if (!nats.ok()) return nats.status();
  cluster.nats = *std::move(nats);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<ReplicaProcess>> replica =
        StartReplica(bundle, *cluster.nats, dir, "STRATA", absl::StrCat("r", i), {});
    if (!replica.ok()) return replica.status();
    cluster.replicas.push_back(*std::move(replica));
  }
  return cluster;
}

// Clients stream Updates, client c through clients[c % clients.size()]; samples/s acknowledged.
double MeasureThroughput(const crash::Fixture& fixture, std::vector<client::Client*> targets) {
  const int clients = absl::GetFlag(FLAGS_clients);
  std::vector<size_t> acked(clients, 0);
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      size_t next = static_cast<size_t>(c) * 5000;
      for (int s = 0; s < absl::GetFlag(FLAGS_streams_per_client); ++s) {
        const std::vector<v1::UpdateRequest> messages =
            Messages(fixture, &next, absl::GetFlag(FLAGS_messages_per_stream),
                     absl::GetFlag(FLAGS_samples_per_message));
        absl::StatusOr<v1::UpdateSummary> summary = targets[c % targets.size()]->Update(messages);
        if (summary.ok()) acked[c] += summary->accepted();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  size_t total = 0;
  for (size_t a : acked) total += a;
  return static_cast<double>(total) / absl::ToDoubleSeconds(absl::Now() - start);
}

absl::Status RunThroughput(const crash::Fixture& fixture, const std::string& bundle,
                           Cluster& cluster, const std::string& dir) {
  std::vector<client::Client*> replicas;
  for (auto& r : cluster.replicas) replicas.push_back(&r->client());
  const double replicated = MeasureThroughput(fixture, replicas);
  crash::Fixture single = fixture;
  single.bundle_path = bundle;
  absl::StatusOr<std::unique_ptr<crash::Server>> server =
      crash::Server::Start(single, dir + "/file-log-state", dir + "/servers.log");
  if (!server.ok()) return server.status();
  const double file_log = MeasureThroughput(fixture, {&(*server)->client()});
  std::printf("\nUpdate throughput, %d clients x %d streams x %d messages x %d samples:\n",
              absl::GetFlag(FLAGS_clients), absl::GetFlag(FLAGS_streams_per_client),
              absl::GetFlag(FLAGS_messages_per_stream), absl::GetFlag(FLAGS_samples_per_message));
  std::printf("  replicated (3 replicas, R3 stream)   %10.0f samples/s acknowledged\n", replicated);
  std::printf("  one server, file log (--state_dir)   %10.0f samples/s acknowledged\n", file_log);
  return absl::OkStatus();
}

// One Update through replica i % 3, then the other two asked for its position at once.
absl::Status RunLag(const crash::Fixture& fixture, Cluster& cluster) {
  std::vector<absl::Duration> lags, plain;
  size_t next = 30000;
  v1::PredictRequest predict;
  predict.add_samples()->set_pixels(fixture.updates.image(0), fixture.updates.image_size());
  for (int i = 0; i < absl::GetFlag(FLAGS_lag_updates); ++i) {
    const int writer = i % 3;
    const std::vector<v1::UpdateRequest> messages =
        Messages(fixture, &next, 1, absl::GetFlag(FLAGS_samples_per_message));
    absl::StatusOr<v1::UpdateSummary> summary = cluster.replicas[writer]->client().Update(messages);
    if (!summary.ok()) return summary.status();
    const absl::Time acked = absl::Now();
    v1::PredictRequest at = predict;
    at.set_min_log_position(summary->log_position());
    std::vector<absl::Duration> reached(3);
    std::vector<std::thread> readers;
    for (int r = 0; r < 3; ++r) {
      if (r == writer) continue;
      readers.emplace_back([&, r] {
        if (cluster.replicas[r]->client().Predict(at).ok()) reached[r] = absl::Now() - acked;
      });
    }
    for (std::thread& t : readers) t.join();
    lags.push_back(*std::max_element(reached.begin(), reached.end()));
    const absl::Time start = absl::Now();
    if (cluster.replicas[(writer + 1) % 3]->client().Predict(predict).ok()) {
      plain.push_back(absl::Now() - start);
    }
  }
  std::printf(
      "\nRead-your-writes lag, %zu Updates of %d samples: acknowledgement by one replica "
      "-> both others answer at its log position\n",
      lags.size(), absl::GetFlag(FLAGS_samples_per_message));
  std::printf("  lag        p50 %7.2f ms   p99 %7.2f ms   max %7.2f ms\n", Ms(Quantile(lags, 0.5)),
              Ms(Quantile(lags, 0.99)), Ms(Quantile(lags, 1.0)));
  std::printf("  (a plain Predict of one image: p50 %.2f ms, p99 %.2f ms)\n",
              Ms(Quantile(plain, 0.5)), Ms(Quantile(plain, 0.99)));
  return absl::OkStatus();
}

// Streams `samples` samples through `writer` in streams of 8 messages.
absl::Status Fill(const crash::Fixture& fixture, client::Client& writer, int samples,
                  size_t* next) {
  const int per_message = absl::GetFlag(FLAGS_samples_per_message);
  for (int sent = 0; sent < samples; sent += 8 * per_message) {
    absl::StatusOr<v1::UpdateSummary> summary =
        writer.Update(Messages(fixture, next, 8, per_message));
    if (!summary.ok()) return summary.status();
  }
  return absl::OkStatus();
}

absl::Status RunRecovery(const crash::Fixture& fixture, const std::string& bundle, Cluster& cluster,
                         const std::string& dir) {
  // A stream of its own whose replicas take no snapshots.
  absl::StatusOr<std::unique_ptr<ReplicaProcess>> writer =
      StartReplica(bundle, *cluster.nats, dir, "RECOVERY", "w", {"--snapshot_every_samples=0"});
  if (!writer.ok()) return writer.status();
  const int samples = absl::GetFlag(FLAGS_recovery_samples);
  size_t next = 0;
  if (absl::Status s = Fill(fixture, (*writer)->client(), samples, &next); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<ReplicaProcess>> full =
      StartReplica(bundle, *cluster.nats, dir, "RECOVERY", "full", {"--snapshot_every_samples=0"});
  if (!full.ok()) return full.status();
  // This one stores a snapshot at the first marker it publishes (the stream's last).
  absl::StatusOr<std::unique_ptr<ReplicaProcess>> snapshotter =
      StartReplica(bundle, *cluster.nats, dir, "RECOVERY", "snap", {"--snapshot_every_samples=1"});
  if (!snapshotter.ok()) return snapshotter.status();
  for (int i = 0; i < 600; ++i) {
    absl::StatusOr<v1::Stats> stats = (*snapshotter)->client().GetStats();
    if (stats.ok() && stats->replica_snapshots_stored() > 0) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (absl::Status s = Fill(fixture, (*writer)->client(), samples / 10, &next); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<ReplicaProcess>> from_snapshot =
      StartReplica(bundle, *cluster.nats, dir, "RECOVERY", "late", {"--snapshot_every_samples=0"});
  if (!from_snapshot.ok()) return from_snapshot.status();
  std::printf("\nRecovery: a new replica's start to SERVING (caught up with the stream's tail)\n");
  std::printf("  whole stream, %d samples, no snapshot        %8.0f ms\n", samples,
              Ms((*full)->startup_time()));
  std::printf("  snapshot + tail of %d samples                %8.0f ms\n", samples / 10,
              Ms((*from_snapshot)->startup_time()));
  return absl::OkStatus();
}

int RunFailure(const crash::Fixture& fixture, const std::string& dir) {
  FailureRunOptions options;
  options.rounds = absl::GetFlag(FLAGS_rounds);
  options.log_path = dir + "/failure.log";
  options.on_round = [](int round, absl::Duration catch_up) {
    std::printf(
        "  round %3d: NATS node and replica killed and restarted; replica caught up in "
        "%.0f ms\n",
        round + 1, Ms(catch_up));
    std::fflush(stdout);
  };
  std::printf("Failure run: %d rounds, 3 NATS nodes, 3 replicas, 2 clients\n", options.rounds);
  const std::string failure_dir = dir + "/failure";
  std::filesystem::create_directories(failure_dir);
  absl::StatusOr<FailureRunReport> report = RunFailureRounds(fixture, failure_dir, options);
  if (!report.ok()) {
    std::fprintf(stderr, "failure run: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::printf("  acknowledged %zu messages / %zu samples; unacknowledged %zu (%zu landed whole)\n",
              report->acked_messages, report->acked_samples, report->unacked_messages,
              report->landed_messages);
  std::printf("  lost %zu messages / %zu samples, duplicated %zu, unknown entries %zu\n",
              report->lost_messages, report->lost_samples, report->duplicated_messages,
              report->unknown_entries);
  std::printf("  quorum loss: Update %s after %.0f ms, Predict %s\n",
              report->quorum_loss_unavailable ? "UNAVAILABLE" : "NOT UNAVAILABLE",
              Ms(report->quorum_loss_failure_time),
              report->quorum_loss_predict_ok ? "answered" : "FAILED");
  std::printf("  replicas at the end: %s; replay of the log %s\n",
              absl::StrJoin(report->digests, " ").c_str(), report->reference_digest.c_str());
  std::printf("  catch-up after a kill: p50 %.0f ms, max %.0f ms; %llu log entries\n",
              Ms(Quantile(report->catch_up_times, 0.5)), Ms(Quantile(report->catch_up_times, 1)),
              static_cast<unsigned long long>(report->log_entries));
  std::printf("  %s\n", report->ok() ? "OK" : "FAILED");
  return report->ok() ? 0 : 1;
}

int Main() {
  absl::StatusOr<std::unique_ptr<crash::Fixture>> fixture = crash::MakeFixture(40000);
  if (!fixture.ok()) {
    std::fprintf(stderr, "fixture: %s\n", std::string(fixture.status().message()).c_str());
    return 1;
  }
  const std::string dir = (*fixture)->dir;
  int failed = absl::GetFlag(FLAGS_rounds) > 0 ? RunFailure(**fixture, dir) : 0;
  if (!absl::GetFlag(FLAGS_figures)) {
    if (!absl::GetFlag(FLAGS_keep_dir)) std::filesystem::remove_all(dir);
    return failed;
  }
  const std::string bundle =
      absl::GetFlag(FLAGS_bundle).empty() ? (*fixture)->bundle_path : absl::GetFlag(FLAGS_bundle);
  absl::StatusOr<Cluster> cluster = StartCluster(bundle, dir + "/figures");
  absl::Status status = cluster.status();
  if (status.ok()) status = RunThroughput(**fixture, bundle, *cluster, dir + "/figures");
  if (status.ok()) status = RunLag(**fixture, *cluster);
  if (status.ok()) status = RunRecovery(**fixture, bundle, *cluster, dir + "/figures");
  if (!status.ok()) {
    std::fprintf(stderr, "strata-bench-replication: %s (logs in %s)\n",
                 std::string(status.message()).c_str(), dir.c_str());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_keep_dir)) std::filesystem::remove_all(dir);
  return failed;
}

}  // namespace
}  // namespace strata::replication

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Replicated mode on a three-node NATS JetStream cluster on loopback: kill rounds, "
      "throughput vs the file log, read-your-writes lag, recovery.\n"
      "  strata-bench-replication [--rounds=20] [--bundle=PATH] [--recovery_samples=20000]");
  absl::ParseCommandLine(argc, argv);
  return strata::replication::Main();
}
