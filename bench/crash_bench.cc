// strata-bench-crash: the crash test (tests/crash_test.cc) for as many rounds as asked. The REAL
// strata-server with --state_dir is SIGKILLed at random moments while 3 clients stream Updates, and
// restarted on the same state directory, --rounds times; then the recovered statistics are checked
// against the acknowledged samples (bench/crash_harness.h says exactly how). Prints each round's
// model versions (the highest any client saw before the kill, the first after the restart) and
// recovery time, then: acknowledged samples, lost, duplicated, half-applied messages, version
// violations (all but the first must be 0) and the recovery time's p50 / p99 / max. Exits 1 if any
// check failed.
//
//   strata-bench-crash [--rounds=100] [--clients=3] [--update_images=59000] [--seed=20240607]
//                      [--keep_dir]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/crash_harness.h"

ABSL_FLAG(int32_t, rounds, 100, "SIGKILL rounds (each followed by a restart and recovery).");
ABSL_FLAG(int32_t, clients, 3, "Client threads streaming Updates during each round.");
ABSL_FLAG(uint64_t, update_images, 59000,
          "Fashion-MNIST training images (after the bundle's 1,000) the clients stream, each once; "
          "at most 59,000. A round that finds them used up kills an idle server.");
ABSL_FLAG(uint64_t, seed, 20240607, "Seed of the kill times and the streams' shapes.");
ABSL_FLAG(bool, keep_dir, false, "Keep the state directory and the server log.");

namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "SIGKILLs a real strata-server in rounds while clients stream Updates; checks recovery.\n"
      "  strata-bench-crash [--rounds=100] [--clients=3] [--update_images=59000] [--seed=N]");
  absl::ParseCommandLine(argc, argv);
  namespace crash = strata::crash;
  absl::StatusOr<std::unique_ptr<crash::Fixture>> fixture =
      crash::MakeFixture(absl::GetFlag(FLAGS_update_images));
  if (!fixture.ok()) {
    std::fprintf(stderr, "strata-bench-crash: %s\n",
                 std::string(fixture.status().message()).c_str());
    return 1;
  }
  crash::RunOptions options;
  options.state_dir = (*fixture)->dir + "/state";
  options.log_path = (*fixture)->dir + "/server.log";
  options.rounds = absl::GetFlag(FLAGS_rounds);
  options.clients = absl::GetFlag(FLAGS_clients);
  options.seed = absl::GetFlag(FLAGS_seed);
  std::printf("strata-bench-crash: %d rounds, %d clients, %zu update images, state %s\n",
              options.rounds, options.clients, (*fixture)->updates.size(),
              options.state_dir.c_str());
  std::printf("%6s %8s %14s %14s %12s\n", "round", "stream", "version seen", "version after",
              "recovery ms");
  options.on_round = [](const crash::RoundReport& r) {
    std::printf("%6d %8s %14llu %14llu %12.0f%s\n", r.round, r.kill_during_stream ? "yes" : "idle",
                static_cast<unsigned long long>(r.version_seen),
                static_cast<unsigned long long>(r.version_after), Ms(r.recovery_time),
                r.version_after > r.version_seen ? "" : "  VERSION WENT BACK");
    std::fflush(stdout);
  };
  absl::StatusOr<crash::RunReport> report = crash::RunCrashRounds(**fixture, options);
  if (!report.ok()) {
    std::fprintf(stderr, "strata-bench-crash: %s\n",
                 std::string(report.status().message()).c_str());
    return 1;
  }
  const crash::RunReport& r = *report;
  std::printf(
      "kills: %d (%d during streams); images streamed %zu of %zu\n"
      "acknowledged: %zu messages / %zu samples; unacknowledged: %zu messages, %zu landed whole\n"
      "lost samples: %zu, duplicated samples: %zu, half-applied messages: %zu, summary "
      "mismatches: %zu\n"
      "model version violations: %d of %zu restarts (a restart's first version not above every "
      "version seen before)\n"
      "recovered statistics: %s (G rel. error %.2e, Q rel. error %.2e, samples seen %llu, "
      "expected %llu); torn tails cut: %zu\n"
      "recovery (start to SERVING): p50 %.0f ms, p99 %.0f ms, max %.0f ms\n"
      "%s\n",
      static_cast<int>(r.rounds.size()), r.kills_during_streams, r.images_streamed,
      (*fixture)->updates.size(), r.acked_messages, r.acked_samples, r.unacked_messages,
      r.landed_messages, r.lost_samples, r.duplicated_samples, r.half_applied_messages,
      r.summary_mismatches, r.version_violations, r.rounds.size(),
      r.statistics_match ? "match" : "MISMATCH", r.gram_error, r.cross_error,
      static_cast<unsigned long long>(r.samples_seen),
      static_cast<unsigned long long>(r.expected_samples_seen), r.torn_tails_cut,
      Ms(r.RecoveryQuantile(0.5)), Ms(r.RecoveryQuantile(0.99)), Ms(r.RecoveryQuantile(1.0)),
      r.ok() ? "PASS" : "FAIL");
  if (absl::GetFlag(FLAGS_keep_dir)) {
    std::printf("kept %s\n", (*fixture)->dir.c_str());
  } else {
    std::filesystem::remove_all((*fixture)->dir);
  }
  return r.ok() ? 0 : 1;
}
