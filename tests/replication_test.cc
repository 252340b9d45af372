// Replicated mode of the REAL strata-server (docs/replication.md), on a real NATS JetStream cluster:
// three nats-server processes clustered on 127.0.0.1 and three replicas, started by the test
// (bench/replication_harness.h; strata-bench-replication runs the same for 20+ rounds).
//
//   * an Update through one replica is answered identically (bit for bit) by the others' Predicts
//     asked for its log position (read-your-writes);
//   * kill rounds: one NATS node and one replica SIGKILLed in the middle of streaming, restarted
//     (the replica catches up from the newest snapshot in the bucket and the stream's tail);
//   * quorum loss: two NATS nodes down, an Update fails with UNAVAILABLE and Predict still answers;
//   * at the end: no acknowledged message lost, none in the log twice, every replica at the same
//     log position, version and statistics digest, equal to an in-process replay of the log.
//   * readiness follows the replica's lag: a replica stopped (SIGSTOP) while the stream grows
//     reports NOT_SERVING when it resumes behind the tail, and SERVING once caught up;
//   * a per-message policy (energy-aware) decides on the receiving replica and records its
//     refreshes in the log: replicas fed through both end with identical statistics and
//     predictions;
//   * a stream resent with the same stream_id (through another replica) adds nothing.
// Start-up refuses replicated mode with --state_dir or selective absorption; a single-process
// server refuses PredictRequest.min_log_position.
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/crash_harness.h"
#include "bench/replication_harness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server_process.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

// A NATS cluster and `count` replicas (ids r0, r1, ...) in a new directory under the fixture's.
struct Cluster {
  std::unique_ptr<replication::NatsCluster> nats;
  std::vector<std::unique_ptr<replication::ReplicaProcess>> replicas;
  std::string log_path;
};

absl::StatusOr<Cluster> StartCluster(const crash::Fixture& fixture, const std::string& name,
                                     const std::vector<std::vector<std::string>>& replica_args) {
  const std::string dir = absl::StrCat(fixture.dir, "/", name);
  std::filesystem::create_directories(dir);
  Cluster cluster;
  cluster.log_path = dir + "/servers.log";
  absl::StatusOr<std::unique_ptr<replication::NatsCluster>> nats =
      replication::NatsCluster::Start(dir);
  if (!nats.ok()) return nats.status();
  cluster.nats = *std::move(nats);
  for (size_t i = 0; i < replica_args.size(); ++i) {
    replication::ReplicaProcess::Config config;
    config.bundle_path = fixture.bundle_path;
    config.nats_urls = cluster.nats->urls();
    config.id = absl::StrCat("r", i);
    config.dir = dir;
    config.log_path = absl::StrCat(dir, "/r", i, ".log");
    config.extra_args = replica_args[i];
    absl::StatusOr<std::unique_ptr<replication::ReplicaProcess>> replica =
        replication::ReplicaProcess::Start(config);
    if (!replica.ok()) return replica.status();
    cluster.replicas.push_back(*std::move(replica));
  }
  return cluster;
}

// One Update stream of `messages` messages of `samples` pool images each, from image `begin`.
std::vector<v1::UpdateRequest> MakeStream(const crash::Fixture& fixture, size_t begin, int messages,
                                          size_t samples) {
  std::vector<v1::UpdateRequest> stream;
  for (int m = 0; m < messages; ++m) {
    stream.push_back(crash::ToRequest(fixture, {begin + m * samples, samples}));
  }
  return stream;
}

// Waits (GetStats polled; bounded by the harness's call timeouts) until `replica` applied every
// log entry through `position`.
absl::Status WaitApplied(replication::ReplicaProcess& replica, uint64_t position) {
  for (int i = 0; i < 600; ++i) {
    absl::StatusOr<v1::Stats> stats = replica.client().GetStats();
    if (!stats.ok()) return stats.status();
    if (stats->log_applied_position() >= position) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(replica.id(), " did not reach ", position));
}

class ReplicationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<crash::Fixture>> made = crash::MakeFixture(6000);
    ASSERT_TRUE(made.ok()) << made.status();
    fixture_ = made->release();
  }
  static void TearDownTestSuite() {
    // STRATA_KEEP_TEST_DIR=1 keeps the NATS storage and the server logs for inspection.
    if (fixture_ != nullptr && std::getenv("STRATA_KEEP_TEST_DIR") == nullptr) {
      std::filesystem::remove_all(fixture_->dir);
    }
    delete fixture_;
    fixture_ = nullptr;
  }
  static crash::Fixture* fixture_;
};
crash::Fixture* ReplicationTest::fixture_ = nullptr;

TEST_F(ReplicationTest, KillRoundsLoseNothingAndReplicasAgreeBitForBit) {
  replication::FailureRunOptions options;
  options.rounds = 3;
  options.log_path = fixture_->dir + "/servers.log";
  const std::string dir = fixture_->dir + "/failure";
  std::filesystem::create_directories(dir);
  absl::StatusOr<replication::FailureRunReport> report =
      replication::RunFailureRounds(*fixture_, dir, options);
  ASSERT_TRUE(report.ok()) << report.status() << "\n" << crash::ReadText(options.log_path);
  EXPECT_TRUE(report->read_your_writes);
  EXPECT_EQ(report->rounds, 3);
  EXPECT_GT(report->acked_messages, 0u);
  EXPECT_EQ(report->lost_messages, 0u);
  EXPECT_EQ(report->lost_samples, 0u);
  EXPECT_EQ(report->duplicated_messages, 0u);
  EXPECT_EQ(report->unknown_entries, 0u);
  EXPECT_EQ(report->summary_mismatches, 0u);
  EXPECT_TRUE(report->quorum_loss_unavailable)
      << "an Update without NATS quorum must fail with UNAVAILABLE";
  EXPECT_TRUE(report->quorum_loss_predict_ok) << "Predict must answer without NATS quorum";
  EXPECT_TRUE(report->digests_agree) << absl::StrJoin(report->digests, " ") << "; log tail "
                                     << absl::StrJoin(report->log_tail, ", ");
  EXPECT_TRUE(report->reference_match) << "replicas " << absl::StrJoin(report->digests, " ")
                                       << ", replay of the log " << report->reference_digest;
  EXPECT_GT(report->snapshots_stored + report->catch_up_times.size(), 0u);
}

TEST_F(ReplicationTest, ReadinessFollowsTheReplicaLag) {
  absl::StatusOr<Cluster> cluster =
      StartCluster(*fixture_, "readiness", {{}, {"--replica_max_lag_entries=3"}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  replication::ReplicaProcess& writer = *cluster->replicas[0];
  replication::ReplicaProcess& lagging = *cluster->replicas[1];
  ASSERT_EQ(lagging.client().CheckHealth().value_or(client::HealthStatus::kUnknown),
            client::HealthStatus::kServing);
  // The stream grows by 20 entries while the replica cannot follow.
  ASSERT_EQ(kill(lagging.pid(), SIGSTOP), 0);
  uint64_t tail = 0;
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<v1::UpdateSummary> summary =
        writer.client().Update(MakeStream(*fixture_, 8 * i, 1, 8));
    ASSERT_TRUE(summary.ok()) << summary.status();
    tail = summary->log_position();
  }
  // Stopped for longer than its reader's tail re-check (0.5 s): its first look at the stream
  // after it resumes sees the new tail (not a timed assertion: a wait for a condition).
  absl::SleepFor(absl::Seconds(1));
  ASSERT_EQ(kill(lagging.pid(), SIGCONT), 0);
  v1::PredictRequest request;
  request.add_samples()->set_pixels(fixture_->updates.image(0), fixture_->updates.image_size());
  request.set_min_log_position(tail);
  absl::StatusOr<v1::PredictResponse> response = lagging.client().Predict(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_GE(response->log_position(), tail);
  // Resumed 20 entries behind the tail (> 3): not ready until it caught up.
  const std::string log = crash::ReadText(absl::StrCat(fixture_->dir, "/readiness/r1.log"));
  const size_t behind = log.find("replica: behind (NOT_SERVING");
  ASSERT_NE(behind, std::string::npos) << log;
  EXPECT_NE(log.find("replica: ready (SERVING)", behind), std::string::npos) << log;
  EXPECT_EQ(lagging.client().CheckHealth().value_or(client::HealthStatus::kUnknown),
            client::HealthStatus::kServing);
}

TEST_F(ReplicationTest, EnergyAwarePolicyRefreshesAtTheSamePositionsOnEveryReplica) {
  // Errors valued high and a large budget: the policy refreshes mid-stream.
  const std::vector<std::string> policy = {
      "--update_policy=energy-aware", "--policy_joules_per_error=1", "--policy_burst_joules=100",
      "--policy_budget_watts=100"};
  absl::StatusOr<Cluster> cluster = StartCluster(*fixture_, "energy", {policy, policy});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  uint64_t tail = 0, refreshes = 0, errors = 0;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<v1::UpdateSummary> summary =
        cluster->replicas[i % 2]->client().Update(MakeStream(*fixture_, 64 * i, 4, 16));
    ASSERT_TRUE(summary.ok()) << summary.status();
    tail = std::max(tail, summary->log_position());
    refreshes += summary->refreshes();
    errors += summary->prequential_errors();
  }
  EXPECT_GT(refreshes, 0u) << "the policy never refreshed: the test shows nothing";
  EXPECT_GT(errors, 0u) << "the receiving replicas saw no prequential errors";
  std::vector<v1::ModelInfo> infos;
  std::vector<v1::PredictResponse> predictions;
  v1::PredictRequest request;
  for (size_t i = 1000; i < 1032; ++i) {
    request.add_samples()->set_pixels(fixture_->updates.image(i), fixture_->updates.image_size());
  }
  for (auto& replica : cluster->replicas) {
    ASSERT_TRUE(WaitApplied(*replica, tail).ok());
    absl::StatusOr<v1::ModelInfo> info = replica->client().GetModelInfo();
    ASSERT_TRUE(info.ok()) << info.status();
    infos.push_back(*info);
    absl::StatusOr<v1::PredictResponse> response = replica->client().Predict(request);
    ASSERT_TRUE(response.ok()) << response.status();
    predictions.push_back(*response);
  }
  EXPECT_GT(infos[0].model_version(), fixture_->bundle.version);
  EXPECT_EQ(infos[0].model_version(), infos[1].model_version());
  EXPECT_EQ(infos[0].log_position(), infos[1].log_position());
  EXPECT_EQ(infos[0].statistics_digest(), infos[1].statistics_digest());
  EXPECT_EQ(infos[0].samples_seen(), infos[1].samples_seen());
  EXPECT_EQ(predictions[0].SerializeAsString(), predictions[1].SerializeAsString());
}

TEST_F(ReplicationTest, AStreamResentWithItsStreamIdAddsNothing) {
  absl::StatusOr<Cluster> cluster = StartCluster(*fixture_, "resend", {{}, {}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<v1::UpdateRequest> stream = MakeStream(*fixture_, 2000, 3, 8);
  stream[0].set_stream_id("resend-test-1");
  absl::StatusOr<v1::UpdateSummary> first = cluster->replicas[0]->client().Update(stream);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->retry_recognised());
  EXPECT_EQ(first->duplicate_entries(), 0u);
  ASSERT_TRUE(WaitApplied(*cluster->replicas[1], first->log_position()).ok());
  absl::StatusOr<v1::ModelInfo> before = cluster->replicas[1]->client().GetModelInfo();
  ASSERT_TRUE(before.ok()) << before.status();

  // The summary was "lost": the client resends the whole stream through the other replica.
  absl::StatusOr<v1::UpdateSummary> resent = cluster->replicas[1]->client().Update(stream);
  ASSERT_TRUE(resent.ok()) << resent.status();
  EXPECT_TRUE(resent->retry_recognised());
  EXPECT_EQ(resent->duplicate_entries(), 4u);  // three messages and the stream-end refresh
  EXPECT_EQ(resent->log_position(), first->log_position());
  EXPECT_EQ(resent->accepted(), 24u);
  absl::StatusOr<v1::Stats> stats = cluster->replicas[1]->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->log_applied_position(), first->log_position()) << "the log grew";
  absl::StatusOr<v1::ModelInfo> after = cluster->replicas[1]->client().GetModelInfo();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->samples_seen(), before->samples_seen());
  EXPECT_EQ(after->statistics_digest(), before->statistics_digest());

  // Without the id the same resend is a new stream: its samples are added again.
  stream[0].clear_stream_id();
  absl::StatusOr<v1::UpdateSummary> plain = cluster->replicas[1]->client().Update(stream);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->retry_recognised());
  EXPECT_GT(plain->log_position(), first->log_position());
  // A later message may not name another stream.
  stream[1].set_stream_id("resend-test-2");
  stream[0].set_stream_id("resend-test-3");
  absl::StatusOr<v1::UpdateSummary> mixed = cluster->replicas[0]->client().Update(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(mixed.status())) << mixed.status();
}

TEST_F(ReplicationTest, StartUpRefusesIncompatibleFlags) {
  const std::string log = fixture_->dir + "/refused.log";
  test::ServerExit with_state_dir = test::RunServerToExit(
      {absl::StrCat("--bundle=", fixture_->bundle_path), "--nats_servers=nats://127.0.0.1:1",
       absl::StrCat("--state_dir=", fixture_->dir, "/state")},
      log);
  EXPECT_EQ(with_state_dir.code, 2);
  EXPECT_THAT(with_state_dir.stderr_text, HasSubstr("exclude each other"));
  test::ServerExit selective = test::RunServerToExit(
      {absl::StrCat("--bundle=", fixture_->bundle_path), "--nats_servers=nats://127.0.0.1:1",
       "--update_policy=energy-aware", "--policy_absorb_margin=0.5"},
      log);
  EXPECT_EQ(selective.code, 2);
  EXPECT_THAT(selective.stderr_text, HasSubstr("not supported in replicated mode"));
}

TEST_F(ReplicationTest, SingleProcessServerRefusesMinLogPosition) {
  std::unique_ptr<test::ServerProcess> server = test::ServerProcess::Start(fixture_->bundle_path);
  ASSERT_NE(server, nullptr);
  v1::PredictRequest request;
  request.add_samples()->set_pixels(fixture_->updates.image(0), fixture_->updates.image_size());
  request.set_min_log_position(1);
  absl::StatusOr<v1::PredictResponse> response = server->client().Predict(request);
  EXPECT_TRUE(absl::IsFailedPrecondition(response.status())) << response.status();
  request.set_min_log_position(0);
  response = server->client().Predict(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->log_position(), 0u);
}

}  // namespace
}  // namespace strata
