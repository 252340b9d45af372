// Minimal structured logging to stderr (Debian's Abseil 20220623 predates absl/log).
//
// Each line is "<RFC 3339 UTC time> <LEVEL> <program>: <message>", written with one write(2) so
// lines from concurrent threads never interleave. Thread-safe.
//
//   STRATA_LOG(INFO) << "listening on " << address;
#ifndef STRATA_BASE_LOG_H_
#define STRATA_BASE_LOG_H_

#include <sstream>
#include "absl/strings/string_view.h"

namespace strata::base {

enum class LogLevel { kInfo, kWarning, kError };

// Sets the program name printed on every line (default "strata").
void SetLogProgramName(absl::string_view name);

// Writes one log line.
void LogLine(LogLevel level, absl::string_view message);

// Collects a message with operator<< and writes it when destroyed.
class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage() { LogLine(level_, stream_.str()); }
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;

  template <typename T>
  LogMessage& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace strata::base

#define STRATA_LOG_LEVEL_INFO ::strata::base::LogLevel::kInfo
#define STRATA_LOG_LEVEL_WARNING ::strata::base::LogLevel::kWarning
#define STRATA_LOG_LEVEL_ERROR ::strata::base::LogLevel::kError
#define STRATA_LOG(level) ::strata::base::LogMessage(STRATA_LOG_LEVEL_##level)

#endif  // STRATA_BASE_LOG_H_
