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
// Start-up refuses replicated mode with --state_dir or another policy; a single-process server
// refuses PredictRequest.min_log_position.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

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

TEST_F(ReplicationTest, StartUpRefusesIncompatibleFlags) {
  const std::string log = fixture_->dir + "/refused.log";
  test::ServerExit with_state_dir = test::RunServerToExit(
      {absl::StrCat("--bundle=", fixture_->bundle_path), "--nats_servers=nats://127.0.0.1:1",
       absl::StrCat("--state_dir=", fixture_->dir, "/state")},
      log);
  EXPECT_EQ(with_state_dir.code, 2);
  EXPECT_THAT(with_state_dir.stderr_text, HasSubstr("exclude each other"));
  test::ServerExit eager =
      test::RunServerToExit({absl::StrCat("--bundle=", fixture_->bundle_path),
                             "--nats_servers=nats://127.0.0.1:1", "--update_policy=eager"},
                            log);
  EXPECT_EQ(eager.code, 2);
  EXPECT_THAT(eager.stderr_text, HasSubstr("stream-end only"));
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
