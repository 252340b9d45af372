// The crash harness: the REAL strata-server with --state_dir, SIGKILLed at random moments while
// client threads stream Updates, for many rounds, restarting on the same state directory each time;
// then a check that recovery kept exactly what it promised (strata.proto, "Durability").
//
// Shared by tests/crash_test.cc (a few rounds, as a ctest) and strata-bench-crash (as many rounds
// as asked, with the numbers printed). What one run checks:
//
//   * Samples. The recovered statistics (read from a snapshot the final server writes on request)
//     must equal the bundle's plus a batch absorb of exactly every ACKNOWLEDGED message (its
//     stream's UpdateSummary arrived) plus some subset of whole unacknowledged messages. Which
//     unacknowledged messages landed is found by a least-squares fit of the residual of Q on their
//     contributions: each coefficient must be 0 or 1 (a half-applied message shows as anything
//     else), and G must then match too. If it does not match, a second fit over every message
//     (acknowledged ones too, on G and Q) attributes the difference: acknowledged samples lost,
//     samples applied twice, messages half-applied.
//   * Versions. Every version a client saw before a kill (in an UpdateSummary, or from GetModelInfo
//     just before the kill) must be below the version the restarted server serves first: model
//     versions only grow, across crashes too (docs/model-versions-format.md).
//   * Recovery time: from starting the process to the health service reporting SERVING.
//
// Not thread-safe: one run at a time per fixture.
#ifndef STRATA_BENCH_CRASH_HARNESS_H_
#define STRATA_BENCH_CRASH_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "data/dataset.h"
#include "model/bundle.h"
#include "model/upper_tier.h"
#include "strata/v1/strata.pb.h"

namespace strata::crash {

// The --max_batch every server is started with (messages are at most this many samples).
inline constexpr int kMaxBatch = 64;

// A small real model and the images to stream into it, in a temporary directory.
struct Fixture {
  std::string dir;  // holds the bundle, state directories and logs
  std::string bundle_path;
  model::Bundle bundle;         // the reference: the bundle as written, read back
  data::LabeledImages updates;  // Fashion-MNIST training images the bundle has not seen
};

// Fits the model on the first 1,000 Fashion-MNIST training images (8 PCA filters, 128 random
// features, lambda 10, seed 11; version 1) in a new directory under /tmp, and loads the next
// `update_images` images (at most 59,000) as the update pool. Sets OpenMP to one thread in this
// process, so that the reference features are bit-identical to the servers' (each runs one thread).
absl::StatusOr<std::unique_ptr<Fixture>> MakeFixture(size_t update_images);

// A strata-server child process on the fixture's bundle, --state_dir, port 0, one lower-tier
// thread, stderr appended to a log file. Killed (SIGKILL) when destroyed.
class Server {
 public:
  // Starts the server and waits until it reports SERVING. If the process exits during start-up,
  // FAILED_PRECONDITION (and `exit_status`, if not null, receives its wait status);
  // DEADLINE_EXCEEDED if it does not serve within two minutes.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const Fixture& fixture, const std::string& state_dir, const std::string& log_path,
      const std::vector<std::string>& extra_args = {}, int* exit_status = nullptr);
  ~Server();

  // SIGKILL, and wait for the process.
  void Kill();
  // SIGTERM (a clean shutdown), and the wait status.
  int Terminate();

  std::string address() const;
  client::Client& client() { return *client_; }
  // From the start of the process to SERVING.
  absl::Duration startup_time() const { return startup_time_; }

 private:
  Server() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  absl::Duration startup_time_;
  std::unique_ptr<client::Client> client_;
};

// One Update message: the run of update images [begin, begin + count).
struct Message {
  size_t begin = 0;
  size_t count = 0;
};
v1::UpdateRequest ToRequest(const Fixture& fixture, const Message& message);

// The whole file at `path` ("" if unreadable), e.g. a server log.
std::string ReadText(const std::string& path);

struct RoundReport {
  int round = 0;
  bool kill_during_stream = false;  // an Update was in flight when the kill landed
  uint64_t version_seen = 0;        // the highest version any client saw up to this kill
  uint64_t version_after = 0;       // the version the restarted server served first
  absl::Duration recovery_time;     // the restart's start-to-SERVING time
};

struct RunOptions {
  std::string state_dir;  // created by the first server
  std::string log_path;   // every server's stderr, appended
  int rounds = 24;
  int clients = 3;  // threads streaming Updates, each 1-4 messages of 1-24 samples per stream
  std::vector<std::string> server_args = {"--snapshot_every_samples=700",
                                          "--log_segment_bytes=40000"};
  uint64_t seed = 20240607;
  // Each kill lands 50-650 ms (times this) after the server served; sanitizer builds run slower.
  int slowdown = 1;
  // Called after each round's restart (and for the last, after the final start).
  std::function<void(const RoundReport&)> on_round;
};

struct RunReport {
  std::vector<RoundReport> rounds;
  int kills_during_streams = 0;
  size_t acked_messages = 0;
  size_t acked_samples = 0;
  size_t unacked_messages = 0;
  size_t landed_messages = 0;  // unacknowledged messages found whole in the statistics
  // All must be 0:
  size_t lost_samples = 0;           // acknowledged samples missing from the recovered statistics
  size_t duplicated_samples = 0;     // samples applied more than once
  size_t half_applied_messages = 0;  // messages neither whole nor absent
  int version_violations = 0;        // restarts whose first version was not above every one seen
  size_t summary_mismatches = 0;     // OK summaries whose `accepted` was not the stream's samples
  bool statistics_match = false;     // G, Q and samples seen equal the reference to 1e-9
  double gram_error = 0;             // max |difference| / max |G| of the reference
  double cross_error = 0;
  uint64_t samples_seen = 0;  // recovered
  uint64_t expected_samples_seen = 0;
  size_t torn_tails_cut = 0;   // counted in the servers' logs
  size_t images_streamed = 0;  // of the fixture's update pool

  // The restarts' recovery times, sorted; and their q-quantile (nearest rank).
  std::vector<absl::Duration> RecoveryTimes() const;
  absl::Duration RecoveryQuantile(double q) const;
  bool ok() const {
    return statistics_match && lost_samples == 0 && duplicated_samples == 0 &&
           half_applied_messages == 0 && version_violations == 0 && summary_mismatches == 0;
  }
};

// Runs `options.rounds` kill rounds on `fixture`, then starts the server once more and checks the
// recovered statistics. Errors are the harness's own (a server that does not start, a snapshot that
// cannot be read), not findings: findings are in the report.
absl::StatusOr<RunReport> RunCrashRounds(const Fixture& fixture, const RunOptions& options);

}  // namespace strata::crash

#endif  // STRATA_BENCH_CRASH_HARNESS_H_
