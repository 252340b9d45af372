// Minimal structured logging to stderr (Debian's Abseil 20220623 predates absl/log).
//
// Two line formats (SetLogFormat):
//   text (default): "<RFC 3339 UTC time> <LEVEL> <program>: <message>"
//   json:           {"ts":"<RFC 3339 UTC time>","level":"<LEVEL>","program":"<program>",
//                    "file":"<file>:<line>","msg":"<message>"}   (one object per line)
// Each line is written with one write(2), so lines from concurrent threads never interleave.
// Thread-safe.
//
//   STRATA_LOG(INFO) << "listening on " << address;
#ifndef STRATA_BASE_LOG_H_
#define STRATA_BASE_LOG_H_

#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace strata::base {

enum class LogLevel { kInfo, kWarning, kError };

enum class LogFormat {
  kText,  // human-readable, the default
  kJson,  // one JSON object per line, for log collectors (Loki, Elasticsearch, Cloud Logging)
};

// "text" or "json"; INVALID_ARGUMENT for anything else.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// Sets the format of every later line (default kText). Thread-safe.
void SetLogFormat(LogFormat format);

// Sets the program name printed on every line (default "strata").
void SetLogProgramName(absl::string_view name);

// Writes one log line. `file` (may be empty) and `line` say where it was logged: the json format
// reports them as "file:line"; the text format omits them.
void LogLine(LogLevel level, absl::string_view message);
void LogLine(LogLevel level, absl::string_view file, int line, absl::string_view message);

// The line LogLine would write, newline included (pure: for tests and tools). `file` is reduced to
// its last two path components.
std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view program, absl::string_view file, int line,
                          absl::string_view message);

// Appends `text` to `out` as the inside of a JSON string: '"' and '\' escaped, control characters
// as \n, \t, \r, \b, \f or \u00XX, and bytes that are not valid UTF-8 replaced by U+FFFD (so any
// message, e.g. one quoting a client's label, yields valid JSON).
void AppendJsonEscaped(absl::string_view text, std::string* out);

// Collects a message with operator<< and writes it when destroyed.
class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : LogMessage(level, "", 0) {}
  LogMessage(LogLevel level, const char* file, int line)
      : level_(level), file_(file), line_(line) {}
  ~LogMessage() { LogLine(level_, file_, line_, stream_.str()); }
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;

  template <typename T>
  LogMessage& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};

}  // namespace strata::base

#define STRATA_LOG_LEVEL_INFO ::strata::base::LogLevel::kInfo
#define STRATA_LOG_LEVEL_WARNING ::strata::base::LogLevel::kWarning
#define STRATA_LOG_LEVEL_ERROR ::strata::base::LogLevel::kError
#define STRATA_LOG(level) ::strata::base::LogMessage(STRATA_LOG_LEVEL_##level, __FILE__, __LINE__)

#endif  // STRATA_BASE_LOG_H_
