// Crash safety and corruption handling of the REAL strata-server binary with --state_dir.
//
// CrashTest: the crash harness (bench/crash_harness.h; strata-bench-crash runs it for longer):
// several client threads stream Updates while the server is SIGKILLed at random moments, for many
// rounds, restarting on the same state directory each time. At the end the recovered statistics
// must hold every ACKNOWLEDGED message exactly once plus some subset of whole unacknowledged
// messages, none half-applied; and after every restart the model version must be above every
// version a client saw before the kill.
//
// Versions: model versions only grow across SIGKILL and clean restarts (the model-versions file,
// docs/model-versions-format.md), also when everything published after the last snapshot is lost.
//
// CorruptionTest: damage in the log / snapshots makes the server refuse to start naming the file and
// offset, or recover per docs/operations.md (torn tail cut and logged; damaged newest snapshot
// skipped in favour of the older one).
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/file.h"
#include "bench/crash_harness.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "update/update_log.h"
#include "update/version_reservation.h"

namespace strata {
namespace {

using crash::ReadText;
using ::testing::HasSubstr;

crash::Fixture* fixture = nullptr;

class DurabilityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fixture != nullptr) return;
    absl::StatusOr<std::unique_ptr<crash::Fixture>> made = crash::MakeFixture(19000);
    ASSERT_TRUE(made.ok()) << made.status();
    fixture = made->release();
  }
  static void TearDownTestSuite() {
    // STRATA_KEEP_TEST_DIR=1 keeps the state directories and server logs for inspection.
    if (fixture != nullptr && getenv("STRATA_KEEP_TEST_DIR") == nullptr) {
      std::filesystem::remove_all(fixture->dir);
    }
    delete fixture;
    fixture = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fixture, nullptr) << "building the test model failed";
    static int count = 0;
    state_dir_ = absl::StrCat(fixture->dir, "/state.", count);
    log_path_ = absl::StrCat(fixture->dir, "/server.", count++, ".log");
  }

  // Starts a server on this test's state directory; null (after a test failure) if it does not.
  std::unique_ptr<crash::Server> Start(const std::vector<std::string>& args) {
    absl::StatusOr<std::unique_ptr<crash::Server>> server =
        crash::Server::Start(*fixture, state_dir_, log_path_, args);
    EXPECT_TRUE(server.ok()) << server.status() << "; log:\n" << ReadText(log_path_);
    return server.ok() ? *std::move(server) : nullptr;
  }

  // Starts a server that must refuse to start; its wait status.
  int StartRefused(const std::vector<std::string>& args) {
    int status = 0;
    absl::StatusOr<std::unique_ptr<crash::Server>> server =
        crash::Server::Start(*fixture, state_dir_, log_path_, args, &status);
    EXPECT_FALSE(server.ok()) << "the server started";
    return status;
  }

  // Streams `messages` as one Update; the summary if it arrived (acknowledged).
  static absl::StatusOr<v1::UpdateSummary> Stream(client::Client& client,
                                                  const std::vector<crash::Message>& messages) {
    std::vector<v1::UpdateRequest> requests;
    size_t total = 0;
    for (const crash::Message& m : messages) {
      requests.push_back(crash::ToRequest(*fixture, m));
      total += m.count;
    }
    absl::StatusOr<v1::UpdateSummary> summary = client.Update(requests);
    if (summary.ok()) {
      EXPECT_EQ(summary->accepted(), total);
    }
    return summary;
  }

  std::string state_dir_;
  std::string log_path_;
};

// ---- the crash test --------------------------------------------------------------------------

// Sanitizer builds (scripts/sanitize.sh) run the server several times slower; the kills wait
// proportionally longer so that streams still get acknowledged between them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kSlowdown = 8;
#else
constexpr int kSlowdown = 1;
#endif

TEST_F(DurabilityTest, AcknowledgedUpdatesSurviveSigkillAndNothingIsHalfApplied) {
  crash::RunOptions options;
  options.state_dir = state_dir_;
  options.log_path = log_path_;
  options.rounds = getenv("STRATA_CRASH_ROUNDS") ? atoi(getenv("STRATA_CRASH_ROUNDS")) : 24;
  options.slowdown = kSlowdown;
  absl::StatusOr<crash::RunReport> report = crash::RunCrashRounds(*fixture, options);
  ASSERT_TRUE(report.ok()) << report.status();
  const crash::RunReport& r = *report;
  EXPECT_TRUE(r.statistics_match);
  EXPECT_LE(r.gram_error, 1e-9);
  EXPECT_LE(r.cross_error, 1e-9);
  EXPECT_EQ(r.samples_seen, r.expected_samples_seen);
  EXPECT_EQ(r.lost_samples, 0u);
  EXPECT_EQ(r.duplicated_samples, 0u);
  EXPECT_EQ(r.half_applied_messages, 0u);
  EXPECT_EQ(r.summary_mismatches, 0u);
  EXPECT_EQ(r.version_violations, 0);
  for (const crash::RoundReport& round : r.rounds) {
    EXPECT_GT(round.version_after, round.version_seen)
        << "round " << round.round << ": the restarted server serves version "
        << round.version_after << " after clients saw " << round.version_seen;
  }
  std::printf(
      "crash test: %zu SIGKILL rounds (%d during streams), %zu acknowledged messages / %zu "
      "samples recovered; %zu unacknowledged messages, %zu landed whole; torn "
      "tails cut: %zu; G rel. error %.2e, Q rel. error %.2e; restarts whose version did not grow: "
      "%d (last: seen %llu, then %llu); recovery p50 %.0f ms, max %.0f ms\n",
      r.rounds.size(), r.kills_during_streams, r.acked_messages, r.acked_samples,
      r.unacked_messages, r.landed_messages, r.torn_tails_cut, r.gram_error, r.cross_error,
      r.version_violations,
      static_cast<unsigned long long>(r.rounds.empty() ? 0 : r.rounds.back().version_seen),
      static_cast<unsigned long long>(r.rounds.empty() ? 0 : r.rounds.back().version_after),
      absl::ToDoubleMilliseconds(r.RecoveryQuantile(0.5)),
      absl::ToDoubleMilliseconds(r.RecoveryQuantile(1.0)));
  EXPECT_GT(r.acked_messages, 0u);
}

// ---- versions --------------------------------------------------------------------------------

// Found from outside: version 13 before a SIGKILL, 2 after, naming another model than the version 2
// clients saw earlier. Versions published after the last snapshot were recorded nowhere.
TEST_F(DurabilityTest, VersionsOnlyGrowAcrossSigkillAndCleanRestart) {
  const std::vector<std::string> args = {"--update_policy=eager", "--snapshot_every_samples=0"};
  std::unique_ptr<crash::Server> server = Start(args);
  ASSERT_NE(server, nullptr);
  uint64_t seen = 0;
  size_t next = 0;
  // One version per message (eager); `messages` messages of 5 samples in one stream.
  auto stream = [&](int messages) {
    std::vector<crash::Message> stream;
    for (int i = 0; i < messages; ++i, next += 5) stream.push_back({next, 5});
    absl::StatusOr<v1::UpdateSummary> summary = Stream(server->client(), stream);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->refreshes(), static_cast<uint64_t>(messages));
    EXPECT_GT(summary->model_version(), seen);
    seen = summary->model_version();
  };
  auto served = [&]() -> uint64_t {
    absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->model_version() : 0;
  };
  stream(1);
  // A snapshot, then publishes after it: recovery alone would number from the snapshot's version.
  ASSERT_TRUE(server->client().Snapshot().ok());
  stream(6);
  stream(6);
  const uint64_t before_kill = served();
  EXPECT_EQ(before_kill, seen);
  EXPECT_GE(seen, 13u);  // the bundle's 1 + 13 publishes

  server->Kill();
  server = Start(args);
  ASSERT_NE(server, nullptr);
  const uint64_t after_kill = served();
  EXPECT_GT(after_kill, seen) << "version " << seen << " before the SIGKILL, " << after_kill
                              << " after it";
  seen = std::max(seen, after_kill);

  // Publishes within the new block, then past it (several reservations), then a clean restart.
  for (int i = 0; i < 3; ++i) stream(40);
  EXPECT_GT(seen, after_kill + update::kVersionBlock);
  EXPECT_EQ(server->Terminate(), 0);
  server = Start(args);
  ASSERT_NE(server, nullptr);
  const uint64_t after_restart = served();
  EXPECT_GT(after_restart, seen) << "version " << seen << " before the restart, " << after_restart
                                 << " after it";
  // No more than one block skipped per restart.
  EXPECT_LE(after_restart, seen + update::kVersionBlock);
  EXPECT_THAT(ReadText(log_path_), HasSubstr("versions reserved through"));
}

// ---- corruption ------------------------------------------------------------------------------

// The segment files of the state directory, oldest first, with the number of bytes each holds.
std::vector<std::string> Segments(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (update::ParseSegmentFileName(entry.path().filename().string())) {
      names.push_back(entry.path().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

void FlipByte(const std::string& path, size_t offset) {
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  ASSERT_TRUE(contents.ok());
  ASSERT_LT(offset, contents->size());
  (*contents)[offset] ^= 0x20;
  ASSERT_TRUE(base::WriteFileAtomically(path, *contents).ok());
}

TEST_F(DurabilityTest, TornTailIsCutAndLoggedAndTheServerStarts) {
  const std::vector<std::string> args = {"--snapshot_every_samples=0"};
  std::unique_ptr<crash::Server> server = Start(args);
  ASSERT_NE(server, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Stream(server->client(), {{size_t(i) * 10, 10}}).ok());
  server->Kill();
  const std::string newest = Segments(state_dir_).back();
  const uintmax_t size = std::filesystem::file_size(newest);
  std::filesystem::resize_file(newest, size - 5);

  server = Start(args);
  ASSERT_NE(server, nullptr);
  const std::string log = ReadText(log_path_);
  EXPECT_THAT(log, HasSubstr(absl::StrCat("cut the torn tail of the update log: ", newest)));
  EXPECT_THAT(log, HasSubstr("bytes dropped"));
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok());
  // The torn (last) message is gone, the two before it are there.
  EXPECT_EQ(info->samples_seen(), fixture->bundle.upper.samples_seen() + 20);
}

TEST_F(DurabilityTest, ASecondServerOnTheSameStateDirectoryIsRefusedUntilTheFirstIsGone) {
  std::unique_ptr<crash::Server> server = Start({});
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(Stream(server->client(), {{0, 10}}).ok());

  const std::string first_log = log_path_;
  log_path_ = first_log + ".second";
  const int status = StartRefused({});
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_THAT(ReadText(log_path_), HasSubstr("is in use by another strata-server (pid "));
  // The first server is unharmed: it still absorbs, durably.
  ASSERT_TRUE(Stream(server->client(), {{10, 10}}).ok());

  // The lock dies with its process, kill -9 included: a new server starts and recovers both.
  server->Kill();
  log_path_ = first_log + ".third";
  server = Start({});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->samples_seen(), fixture->bundle.upper.samples_seen() + 20);
}

TEST_F(DurabilityTest, FlippedByteInTheLogRefusesToStartNamingFileAndOffset) {
  const std::vector<std::string> args = {"--snapshot_every_samples=0"};
  std::unique_ptr<crash::Server> server = Start(args);
  ASSERT_NE(server, nullptr);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Stream(server->client(), {{size_t(i) * 10, 10}}).ok());
  server->Kill();
  const std::string segment = Segments(state_dir_).back();
  // Inside the second record's payload: whole records follow, so this is no torn tail.
  absl::StatusOr<std::string> contents = base::ReadFile(segment);
  ASSERT_TRUE(contents.ok());
  uint32_t first_length = 0;
  std::memcpy(&first_length, contents->data() + update::kSegmentHeaderBytes + 4, 4);
  const size_t second = update::kSegmentHeaderBytes + update::kRecordHeaderBytes + first_length;
  FlipByte(segment, second + 100);

  server.reset();
  const int status = StartRefused(args);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string log = ReadText(log_path_);
  EXPECT_THAT(log, HasSubstr(absl::StrCat(segment, ": offset ", second)));
  EXPECT_THAT(log, HasSubstr("refusing to start"));
}

TEST_F(DurabilityTest, DamagedSnapshotsFallBackWhileTheLogAllowsItElseRefuse) {
  const std::vector<std::string> args = {"--snapshot_every_samples=0", "--log_segment_bytes=4096"};
  std::unique_ptr<crash::Server> server = Start(args);
  ASSERT_NE(server, nullptr);
  size_t next = 0;
  auto stream = [&](int messages) {
    for (int i = 0; i < messages; ++i, next += 10) {
      ASSERT_TRUE(Stream(server->client(), {{next, 10}}).ok());
    }
  };
  stream(3);
  absl::StatusOr<v1::SnapshotInfo> older = server->client().Snapshot();
  ASSERT_TRUE(older.ok()) << older.status();
  stream(3);
  absl::StatusOr<v1::SnapshotInfo> newer = server->client().Snapshot();
  ASSERT_TRUE(newer.ok()) << newer.status();
  EXPECT_EQ(newer->log_position(), 6u);
  stream(2);
  server->Kill();
  const uint64_t expected_samples = fixture->bundle.upper.samples_seen() + next;

  // The newest snapshot damaged: start from the older one and replay the log after it.
  FlipByte(newer->path(), newer->bytes() / 2);
  server = Start(args);
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(ReadText(log_path_),
              HasSubstr(absl::StrCat("skipping damaged snapshot: snapshot ", newer->path())));
  // Quarantined, so that later snapshots cannot prune the intact older one in its favour.
  EXPECT_FALSE(std::filesystem::exists(newer->path()));
  EXPECT_TRUE(std::filesystem::exists(newer->path() + ".damaged"));
  EXPECT_TRUE(std::filesystem::exists(older->path()));
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->samples_seen(), expected_samples);
  server->Kill();

  // Both damaged: the bundle would need the log from record 1, which the segments deleted after the
  // second snapshot no longer hold: refuse, naming what is missing.
  FlipByte(older->path(), older->bytes() / 2);
  server.reset();
  const int status = StartRefused(args);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  const std::string log = ReadText(log_path_);
  EXPECT_THAT(log, HasSubstr("records from 1 are needed"));
  EXPECT_THAT(log, HasSubstr("refusing to start"));
}

}  // namespace
}  // namespace strata
