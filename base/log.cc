#include "base/log.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace strata::base {
namespace {

absl::Mutex program_name_mutex;
std::string& ProgramName() ABSL_EXCLUSIVE_LOCKS_REQUIRED(program_name_mutex) {
  static auto* name = new std::string("strata");
  return *name;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

}  // namespace

void SetLogProgramName(absl::string_view name) {
  absl::MutexLock lock(&program_name_mutex);
  ProgramName() = std::string(name);
}

void LogLine(LogLevel level, absl::string_view message) {
  std::string program;
  {
    absl::MutexLock lock(&program_name_mutex);
    program = ProgramName();
  }
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                   " ", LevelName(level), " ", program, ": ", message, "\n");
  // One write(2) per line: lines from concurrent threads do not interleave.
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

}  // namespace strata::base
