// base/log.h: the text and JSON line formats, and JSON string escaping.
#include "base/log.h"

#include <string>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace strata::base {
namespace {

std::string Escaped(absl::string_view text) {
  std::string out;
  AppendJsonEscaped(text, &out);
  return out;
}

absl::Time When() {
  return absl::FromCivil(absl::CivilSecond(2026, 11, 28, 17, 58, 19), absl::UTCTimeZone()) +
         absl::Milliseconds(123);
}

TEST(LogTest, ParsesFormats) {
  EXPECT_EQ(*ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(ParseLogFormat("JSON").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseLogFormat("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LogTest, TextLineIsUnchanged) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, When(), LogLevel::kWarning, "strata-server",
                          "/src/strata/server/main.cc", 42, "no --state_dir"),
            "2026-11-28T17:58:19.123Z WARNING strata-server: no --state_dir\n");
}

TEST(LogTest, JsonLineHasEveryField) {
  EXPECT_EQ(
      FormatLogLine(LogFormat::kJson, When(), LogLevel::kError, "strata-server",
                    "/src/strata/server/main.cc", 42, "cannot listen on \"[::]:1\""),
      "{\"ts\":\"2026-11-28T17:58:19.123Z\",\"level\":\"ERROR\",\"program\":\"strata-server\","
      "\"file\":\"server/main.cc:42\",\"msg\":\"cannot listen on \\\"[::]:1\\\"\"}\n");
  // A file without directories is kept whole; the line ends with exactly one newline even when the
  // message has its own.
  EXPECT_EQ(FormatLogLine(LogFormat::kJson, When(), LogLevel::kInfo, "p", "x.cc", 1, "a\nb"),
            "{\"ts\":\"2026-11-28T17:58:19.123Z\",\"level\":\"INFO\",\"program\":\"p\","
            "\"file\":\"x.cc:1\",\"msg\":\"a\\nb\"}\n");
}

TEST(LogTest, JsonEscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(Escaped("plain text 123"), "plain text 123");
  EXPECT_EQ(Escaped("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(Escaped("C:\\path"), "C:\\\\path");
  EXPECT_EQ(Escaped("a\nb\rc\td\be\ff"), "a\\nb\\rc\\td\\be\\ff");
  EXPECT_EQ(Escaped(std::string("nul\0x", 5)), "nul\\u0000x");
  EXPECT_EQ(Escaped("\x01\x1f\x7f"), "\\u0001\\u001f\\u007f");
  EXPECT_EQ(Escaped("/ stays"), "/ stays");
}

TEST(LogTest, JsonKeepsValidUtf8AndReplacesInvalidBytes) {
  // 2-, 3- and 4-byte sequences pass through unchanged.
  EXPECT_EQ(Escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x91\x95"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x91\x95");
  // A lone continuation byte, a truncated sequence, an overlong '/', a UTF-16 surrogate, a code
  // point above U+10FFFF and the never-valid 0xff: each bad byte becomes U+FFFD.
  EXPECT_EQ(Escaped("a\x80z"), "a\\ufffdz");
  EXPECT_EQ(Escaped("\xe2\x82"), "\\ufffd\\ufffd");
  EXPECT_EQ(Escaped("\xc0\xaf"), "\\ufffd\\ufffd");
  EXPECT_EQ(Escaped("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");
  EXPECT_EQ(Escaped("\xf4\x90\x80\x80"), "\\ufffd\\ufffd\\ufffd\\ufffd");
  EXPECT_EQ(Escaped("\xff"), "\\ufffd");
}

TEST(LogTest, EveryByteEscapesToPrintableAscii) {
  // Whatever a message holds (e.g. a client's label), the escaped form contains no raw control
  // character, no bare quote and no byte outside ASCII except inside valid UTF-8.
  for (int b = 0; b < 256; ++b) {
    const std::string escaped = Escaped(std::string(1, static_cast<char>(b)));
    for (size_t i = 0; i < escaped.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(escaped[i]);
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "byte " << b << " -> " << escaped;
      if (c == '"') {
        EXPECT_TRUE(i > 0 && escaped[i - 1] == '\\') << "byte " << b;
      }
    }
  }
}

}  // namespace
}  // namespace strata::base
