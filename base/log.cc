#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/status/status.h"
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

// Read on every line without a lock: set once at start-up, before threads log.
std::atomic<LogFormat> log_format{LogFormat::kText};

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

// "server/service.cc" from "/work/main/server/service.cc": enough to find the line, without the
// build machine's paths.
absl::string_view ShortFile(absl::string_view file) {
  size_t slash = file.rfind('/');
  if (slash == absl::string_view::npos || slash == 0) return file;
  size_t before = file.rfind('/', slash - 1);
  return before == absl::string_view::npos ? file : file.substr(before + 1);
}

// The length of the valid UTF-8 sequence starting at text[i], or 0 if the bytes there are not one
// (overlong forms, surrogates and code points above U+10FFFF are invalid, as RFC 3629 says).
size_t Utf8SequenceLength(absl::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  size_t length;
  unsigned char low = 0x80, high = 0xBF;  // bounds of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) low = 0xA0;   // no overlong forms
    if (b0 == 0xED) high = 0x9F;  // no UTF-16 surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) low = 0x90;   // no overlong forms
    if (b0 == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format \"", name, "\"; expected text or json"));
}

void SetLogFormat(LogFormat format) { log_format.store(format, std::memory_order_relaxed); }

void SetLogProgramName(absl::string_view name) {
  absl::MutexLock lock(&program_name_mutex);
  ProgramName() = std::string(name);
}

void AppendJsonEscaped(absl::string_view text, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t length = Utf8SequenceLength(text, i);
      if (length == 0) {
        out->append("\\ufffd");
        ++i;
      } else {
        out->append(text.data() + i, length);
        i += length;
      }
      continue;
    }
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 0xF]);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

std::string FormatLogLine(LogFormat format, absl::Time time, LogLevel level,
                          absl::string_view program, absl::string_view file, int line,
                          absl::string_view message) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone());
  if (format == LogFormat::kText) {
    return absl::StrCat(ts, " ", LevelName(level), " ", program, ": ", message, "\n");
  }
  std::string out;
  out.reserve(96 + program.size() + file.size() + message.size());
  absl::StrAppend(&out, "{\"ts\":\"", ts, "\",\"level\":\"", LevelName(level), "\",\"program\":\"");
  AppendJsonEscaped(program, &out);
  out.append("\",\"file\":\"");
  AppendJsonEscaped(ShortFile(file), &out);
  absl::StrAppend(&out, ":", line, "\",\"msg\":\"");
  AppendJsonEscaped(message, &out);
  out.append("\"}\n");
  return out;
}

void LogLine(LogLevel level, absl::string_view message) { LogLine(level, "", 0, message); }

void LogLine(LogLevel level, absl::string_view file, int line, absl::string_view message) {
  std::string program;
  {
    absl::MutexLock lock(&program_name_mutex);
    program = ProgramName();
  }
  const std::string text = FormatLogLine(log_format.load(std::memory_order_relaxed), absl::Now(),
                                         level, program, file, line, message);
  // One write(2) per line: lines from concurrent threads do not interleave.
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(STDERR_FILENO, text.data() + done, text.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

}  // namespace strata::base
