// strata-bench-update-log: the update log's group commit. W writer threads each append a record of
// one Update message (default 64 samples of 784-byte pixels, as the server logs them) and wait until
// it is durable, like concurrent Update streams waiting for their acknowledgement. Prints, for
// 1, 2, 4 and 8 writers: records/s, samples/s, and fsyncs per record (1.0 = no sharing).
//
//   strata-bench-update-log [--dir=/tmp] [--seconds=3] [--samples_per_record=64]
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "update/env.h"
#include "update/update_log.h"
#include "update/update_record.h"

ABSL_FLAG(std::string, dir, "/tmp", "Directory (file system) to put the log in.");
ABSL_FLAG(double, seconds, 3.0, "Measuring time per writer count.");
ABSL_FLAG(int32_t, samples_per_record, 64, "Samples per record (one Update message).");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using strata::update::FileUpdateLog;
  const int samples = absl::GetFlag(FLAGS_samples_per_record);
  strata::update::UpdateRecordBuilder builder(784);
  const std::string pixels(784, '\x7f');
  for (int i = 0; i < samples; ++i) builder.AddPixels("Ankle boot", pixels);
  const std::string payload = builder.Finish();
  std::printf("update log group commit: records of %d samples (%zu bytes), %s\n", samples,
              payload.size(), absl::GetFlag(FLAGS_dir).c_str());
  std::printf("%8s %12s %12s %14s\n", "writers", "records/s", "samples/s", "fsyncs/record");
  for (int writers : {1, 2, 4, 8}) {
    std::string dir = absl::StrCat(absl::GetFlag(FLAGS_dir), "/strata-bench-update-log.XXXXXX");
    if (mkdtemp(dir.data()) == nullptr) return 1;
    absl::StatusOr<std::unique_ptr<FileUpdateLog>> log =
        FileUpdateLog::Open(strata::update::Env::Default(), dir, 1);
    if (!log.ok()) {
      std::fprintf(stderr, "%s\n", std::string(log.status().message()).c_str());
      return 1;
    }
    const FileUpdateLog::Counters before = (*log)->counters();
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done{0};
    std::vector<std::thread> threads;
    const absl::Time start = absl::Now();
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&] {
        while (!stop) {
          absl::StatusOr<uint64_t> sequence = (*log)->Append(payload);
          if (!sequence.ok() || !(*log)->Sync(*sequence).ok()) std::abort();
          ++done;
        }
      });
    }
    absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
    stop = true;
    for (std::thread& t : threads) t.join();
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    const FileUpdateLog::Counters after = (*log)->counters();
    const double records = static_cast<double>(done.load());
    std::printf("%8d %12.0f %12.0f %14.3f\n", writers, records / elapsed,
                records * samples / elapsed,
                static_cast<double>(after.fsyncs - before.fsyncs) / records);
    log->reset();
    std::filesystem::remove_all(dir);
  }
  return 0;
}
