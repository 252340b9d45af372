// The update log: round trip, torn tails, corruption, segments, group commit, failed fsync.
#include "update/update_log.h"

#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fault_injection_env.h"
#include "update/env.h"
#include "update/update_record.h"

namespace strata::update {
namespace {

using ::testing::HasSubstr;

class UpdateLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/strata_update_log_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Payload of record i: distinct bytes of a distinct length.
  static std::string Payload(int i) {
    return std::string(static_cast<size_t>(10 + 7 * i), static_cast<char>('a' + i % 26));
  }

  // Appends payloads 0..n-1 and syncs.
  void Write(int n, UpdateLogOptions options = {}) {
    absl::StatusOr<std::unique_ptr<FileUpdateLog>> log =
        FileUpdateLog::Open(&env_, dir_, 1, options);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<uint64_t> sequence = (*log)->Append(Payload(i));
      ASSERT_TRUE(sequence.ok()) << sequence.status();
      EXPECT_EQ(*sequence, static_cast<uint64_t>(i + 1));
    }
    ASSERT_TRUE((*log)->Sync(n).ok());
  }

  struct Read {
    absl::StatusOr<LogScan> scan;
    std::vector<std::string> payloads;
  };
  Read ReadAll(uint64_t after = 0) {
    Read read;
    read.scan = ReadUpdateLog(&env_, dir_, after, [&](uint64_t sequence, absl::string_view p) {
      EXPECT_EQ(sequence, after + read.payloads.size() + 1);
      read.payloads.emplace_back(p);
      return absl::OkStatus();
    });
    return read;
  }

  std::vector<std::string> Segments() {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      if (ParseSegmentFileName(entry.path().filename().string())) {
        names.push_back(entry.path().string());
      }
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  FaultInjectionEnv env_;
  std::string dir_;
};

TEST_F(UpdateLogTest, RoundTrip) {
  Write(20);
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok()) << read.scan.status();
  EXPECT_EQ(read.scan->last_sequence, 20u);
  EXPECT_FALSE(read.scan->torn_tail.has_value());
  ASSERT_EQ(read.payloads.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(read.payloads[i], Payload(i));

  Read after = ReadAll(/*after=*/15);
  ASSERT_TRUE(after.scan.ok());
  EXPECT_EQ(after.payloads.size(), 5u);
  EXPECT_EQ(after.payloads[0], Payload(15));
}

TEST_F(UpdateLogTest, EmptyAndMissingLogsReadAsEmpty) {
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok());
  EXPECT_EQ(read.scan->last_sequence, 0u);
  absl::StatusOr<LogScan> missing = ReadUpdateLog(
      &env_, dir_ + "/nope", 0, [](uint64_t, absl::string_view) { return absl::OkStatus(); });
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->last_sequence, 0u);
}

TEST_F(UpdateLogTest, TornTailAtEveryOffsetOfTheLastRecordIsCutAndReported) {
  Write(5);
  const std::string path = Segments().at(0);
  absl::StatusOr<std::string> whole = base::ReadFile(path);
  ASSERT_TRUE(whole.ok());
  const size_t last_record = whole->size() - kRecordHeaderBytes - Payload(4).size();
  for (size_t cut = last_record + 1; cut < whole->size(); ++cut) {
    ASSERT_TRUE(base::WriteFileAtomically(path, whole->substr(0, cut)).ok());
    Read read = ReadAll();
    ASSERT_TRUE(read.scan.ok()) << "cut at " << cut << ": " << read.scan.status();
    EXPECT_EQ(read.scan->last_sequence, 4u) << "cut at " << cut;
    EXPECT_EQ(read.payloads.size(), 4u);
    ASSERT_TRUE(read.scan->torn_tail.has_value()) << "cut at " << cut;
    EXPECT_EQ(read.scan->torn_tail->path, path);
    EXPECT_EQ(read.scan->torn_tail->offset, last_record);
    EXPECT_EQ(read.scan->torn_tail->bytes_dropped, cut - last_record);

    ASSERT_TRUE(CutTornTail(&env_, dir_, *read.scan->torn_tail).ok());
    EXPECT_EQ(std::filesystem::file_size(path), last_record);
    Read again = ReadAll();
    ASSERT_TRUE(again.scan.ok());
    EXPECT_FALSE(again.scan->torn_tail.has_value());
    EXPECT_EQ(again.scan->last_sequence, 4u);
  }
}

TEST_F(UpdateLogTest, ZeroFilledTailIsTorn) {
  Write(3);
  const std::string path = Segments().at(0);
  const uint64_t size = std::filesystem::file_size(path);
  absl::StatusOr<std::string> whole = base::ReadFile(path);
  ASSERT_TRUE(base::WriteFileAtomically(path, *whole + std::string(100, '\0')).ok());
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok()) << read.scan.status();
  EXPECT_EQ(read.scan->last_sequence, 3u);
  ASSERT_TRUE(read.scan->torn_tail.has_value());
  EXPECT_EQ(read.scan->torn_tail->offset, size);
  EXPECT_EQ(read.scan->torn_tail->bytes_dropped, 100u);
}

TEST_F(UpdateLogTest, FlippedByteInTheMiddleIsCorruptionNamingFileAndOffset) {
  Write(5);
  const std::string path = Segments().at(0);
  absl::StatusOr<std::string> whole = base::ReadFile(path);
  // Record 3 starts after the header and records 1 and 2.
  const size_t record3 =
      kSegmentHeaderBytes + 2 * kRecordHeaderBytes + Payload(0).size() + Payload(1).size();
  for (size_t flip : {record3, record3 + kRecordHeaderBytes + 3}) {
    std::string damaged = *whole;
    damaged[flip] ^= 0x10;
    ASSERT_TRUE(base::WriteFileAtomically(path, damaged).ok());
    Read read = ReadAll();
    ASSERT_FALSE(read.scan.ok()) << "flip at " << flip;
    EXPECT_TRUE(absl::IsDataLoss(read.scan.status()));
    EXPECT_THAT(read.scan.status().message(), HasSubstr(path));
    EXPECT_THAT(read.scan.status().message(), HasSubstr(absl::StrCat("offset ", record3)));
  }
  // A flipped byte in the last whole record, with nothing valid after it, is a torn tail: a crash
  // can leave a record whose length reached the disk before its data.
  std::string damaged = *whole;
  damaged[whole->size() - 2] ^= 0x01;
  ASSERT_TRUE(base::WriteFileAtomically(path, damaged).ok());
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok()) << read.scan.status();
  EXPECT_EQ(read.payloads.size(), 4u);
  ASSERT_TRUE(read.scan->torn_tail.has_value());
  EXPECT_EQ(read.scan->torn_tail->offset, whole->size() - kRecordHeaderBytes - Payload(4).size());
  EXPECT_THAT(read.scan->torn_tail->reason, HasSubstr("checksum mismatch"));
}

// Random bytes, with a fixed seed; `over_limit` makes the record-length field (bytes 4..7) read
// over kMaxRecordPayloadBytes and the type byte 1, the case that once refused to start.
std::string Garbage(size_t n, uint32_t seed, bool over_limit = false) {
  std::mt19937 random(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(random() & 0xff);
  if (over_limit && n >= kRecordHeaderBytes) {
    const uint32_t length = kMaxRecordPayloadBytes + 1 + (random() % 1000);
    std::memcpy(&bytes[4], &length, sizeof(length));
    bytes[8] = static_cast<char>(kRecordTypeUpdateMessage);
  }
  if (!bytes.empty() && bytes[0] == 0) bytes[0] = 1;  // not an all-zero tail (tested apart)
  return bytes;
}

TEST_F(UpdateLogTest, GarbageAtTheEndOfTheNewestSegmentIsATornTailWhateverItsLengthReads) {
  UpdateLogOptions options;
  options.segment_bytes = 200;  // several segments: the garbage goes to the newest
  Write(12, options);
  const std::string path = Segments().back();
  ASSERT_GT(Segments().size(), 2u);
  absl::StatusOr<std::string> whole = base::ReadFile(path);
  ASSERT_TRUE(whole.ok());
  struct Case {
    size_t bytes;
    bool over_limit;
  };
  for (const Case& c :
       {Case{37, true}, Case{9, true}, Case{1000, true}, Case{1, false}, Case{8, false},
        Case{37, false}, Case{300, false}, Case{4096, false}, Case{1 << 20, false}}) {
    for (uint32_t seed = 1; seed <= 3; ++seed) {
      const std::string garbage = Garbage(c.bytes, seed, c.over_limit);
      ASSERT_TRUE(base::WriteFileAtomically(path, *whole + garbage).ok());
      const std::string what =
          absl::StrCat(c.bytes, " bytes, seed ", seed, c.over_limit ? ", length over limit" : "");
      Read read = ReadAll();
      ASSERT_TRUE(read.scan.ok()) << what << ": " << read.scan.status();
      ASSERT_EQ(read.payloads.size(), 12u) << what;
      for (int i = 0; i < 12; ++i) EXPECT_EQ(read.payloads[i], Payload(i)) << what;
      ASSERT_TRUE(read.scan->torn_tail.has_value()) << what;
      EXPECT_EQ(read.scan->torn_tail->path, path);
      EXPECT_EQ(read.scan->torn_tail->offset, whole->size()) << what;
      EXPECT_EQ(read.scan->torn_tail->bytes_dropped, garbage.size()) << what;
      if (c.over_limit) {
        EXPECT_THAT(read.scan->torn_tail->reason, HasSubstr("over limit"));
      }

      ASSERT_TRUE(CutTornTail(&env_, dir_, *read.scan->torn_tail).ok());
      EXPECT_EQ(base::ReadFile(path).value(), *whole) << what;  // exactly the garbage went
      Read again = ReadAll();
      ASSERT_TRUE(again.scan.ok());
      EXPECT_FALSE(again.scan->torn_tail.has_value());
      EXPECT_EQ(again.payloads.size(), 12u);
    }
  }
}

TEST_F(UpdateLogTest, GarbageFollowedByAValidRecordIsCorruptionNamingFileAndOffset) {
  Write(5);
  const std::string path = Segments().at(0);
  absl::StatusOr<std::string> whole = base::ReadFile(path);
  ASSERT_TRUE(whole.ok());
  // Between records 3 and 4: records 4 and 5 are intact after it.
  const size_t record4 = kSegmentHeaderBytes + 3 * kRecordHeaderBytes + Payload(0).size() +
                         Payload(1).size() + Payload(2).size();
  for (bool over_limit : {true, false}) {
    const std::string garbage = Garbage(37, 7, over_limit);
    ASSERT_TRUE(base::WriteFileAtomically(
                    path, whole->substr(0, record4) + garbage + whole->substr(record4))
                    .ok());
    Read read = ReadAll();
    ASSERT_FALSE(read.scan.ok()) << "over_limit " << over_limit;
    EXPECT_TRUE(absl::IsDataLoss(read.scan.status())) << read.scan.status();
    EXPECT_THAT(read.scan.status().message(), HasSubstr(path));
    EXPECT_THAT(read.scan.status().message(), HasSubstr(absl::StrCat("offset ", record4, ":")));
    EXPECT_THAT(read.scan.status().message(),
                HasSubstr(absl::StrCat("a valid record follows at offset ", record4 + 37)));
  }
}

TEST_F(UpdateLogTest, GarbageAtTheEndOfAnOlderSegmentIsCorruption) {
  UpdateLogOptions options;
  options.segment_bytes = 200;
  Write(12, options);
  const std::vector<std::string> segments = Segments();
  ASSERT_GT(segments.size(), 2u);
  absl::StatusOr<std::string> first = base::ReadFile(segments[0]);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(base::WriteFileAtomically(segments[0], *first + Garbage(37, 3, true)).ok());
  Read read = ReadAll();
  ASSERT_FALSE(read.scan.ok());
  EXPECT_TRUE(absl::IsDataLoss(read.scan.status()));
  EXPECT_THAT(read.scan.status().message(),
              HasSubstr(absl::StrCat(segments[0], ": offset ", first->size(), ":")));
}

TEST_F(UpdateLogTest, SegmentsRollAndAreDeletedThroughAPosition) {
  UpdateLogOptions options;
  options.segment_bytes = 200;
  absl::StatusOr<std::unique_ptr<FileUpdateLog>> log = FileUpdateLog::Open(&env_, dir_, 1, options);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE((*log)->Append(Payload(i)).ok());
  ASSERT_TRUE((*log)->Sync(30).ok());
  const std::vector<std::string> segments = Segments();
  ASSERT_GT(segments.size(), 3u);
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok()) << read.scan.status();
  ASSERT_EQ(read.payloads.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(read.payloads[i], Payload(i));

  // Delete through record 12: the segments wholly at or below 12 go; reading after 12 still works,
  // reading from the start no longer can.
  ASSERT_TRUE((*log)->DeleteSegmentsThrough(12).ok());
  const std::vector<std::string> left = Segments();
  EXPECT_LT(left.size(), segments.size());
  EXPECT_LE(*ParseSegmentFileName(std::filesystem::path(left[0]).filename().string()), 13u);
  Read after = ReadAll(12);
  ASSERT_TRUE(after.scan.ok()) << after.scan.status();
  EXPECT_EQ(after.payloads.size(), 18u);
  Read from_start = ReadAll(0);
  EXPECT_TRUE(absl::IsDataLoss(from_start.scan.status()));
  EXPECT_THAT(from_start.scan.status().message(), HasSubstr("are needed"));
  EXPECT_GT((*log)->counters().segments_deleted, 0u);

  // A whole middle segment missing is a gap.
  std::filesystem::remove(left[1]);
  EXPECT_TRUE(absl::IsDataLoss(ReadAll(12).scan.status()));
}

TEST_F(UpdateLogTest, ReopenAfterRecoveryContinuesInANewSegment) {
  Write(4);
  absl::StatusOr<std::unique_ptr<FileUpdateLog>> log = FileUpdateLog::Open(&env_, dir_, 5);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Payload(4)).ok());
  ASSERT_TRUE((*log)->Sync(5).ok());
  log->reset();
  // A restart with nothing appended replaces the empty newest segment of the same name.
  log = FileUpdateLog::Open(&env_, dir_, 6);
  ASSERT_TRUE(log.ok());
  log = FileUpdateLog::Open(&env_, dir_, 6);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(Segments().size(), 3u);
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok()) << read.scan.status();
  EXPECT_EQ(read.payloads.size(), 5u);
}

TEST_F(UpdateLogTest, FailedFsyncFailsEveryLaterAppendAndSync) {
  absl::StatusOr<std::unique_ptr<FileUpdateLog>> log = FileUpdateLog::Open(&env_, dir_, 1);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(Payload(0)).ok());
  ASSERT_TRUE((*log)->Sync(1).ok());
  ASSERT_TRUE((*log)->Append(Payload(1)).ok());
  env_.fail_sync = true;
  absl::Status synced = (*log)->Sync(2);
  EXPECT_THAT(synced.message(), HasSubstr("injected"));
  env_.fail_sync = false;  // the disk "recovers": the log must not
  absl::StatusOr<uint64_t> appended = (*log)->Append(Payload(2));
  EXPECT_FALSE(appended.ok());
  EXPECT_THAT(appended.status().message(), HasSubstr("injected"));
  EXPECT_FALSE((*log)->Sync(2).ok());
  EXPECT_FALSE((*log)->Sync(1).ok());
}

TEST_F(UpdateLogTest, OpenFailsCleanlyWhenTheNewSegmentCannotBeMadeDurable) {
  // Once destroyed a half-made log without a sync thread and died in std::thread::join().
  env_.fail_sync = true;
  absl::StatusOr<std::unique_ptr<FileUpdateLog>> log = FileUpdateLog::Open(&env_, dir_, 1);
  EXPECT_FALSE(log.ok());
  EXPECT_THAT(log.status().message(), HasSubstr("injected"));
}

TEST_F(UpdateLogTest, ConcurrentWritersShareFsyncs) {
  absl::StatusOr<std::unique_ptr<FileUpdateLog>> log = FileUpdateLog::Open(&env_, dir_, 1);
  ASSERT_TRUE(log.ok());
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<uint64_t> sequence = (*log)->Append(Payload(t));
        ASSERT_TRUE(sequence.ok());
        ASSERT_TRUE((*log)->Sync(*sequence).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const FileUpdateLog::Counters counters = (*log)->counters();
  EXPECT_EQ(counters.records, static_cast<uint64_t>(kThreads * kPerThread));
  // Every Sync() returned only after an fsync covering its record; never more fsyncs than records.
  EXPECT_LE(counters.fsyncs, counters.records);
  std::printf("group commit: %d writers, %llu records, %llu fsyncs\n", kThreads,
              static_cast<unsigned long long>(counters.records),
              static_cast<unsigned long long>(counters.fsyncs));
  Read read = ReadAll();
  ASSERT_TRUE(read.scan.ok());
  EXPECT_EQ(read.payloads.size(), static_cast<size_t>(kThreads * kPerThread));
}

// Format version 2: a text model's record (input_size 0) stores each text's UTF-8 bytes as sent.
TEST(UpdateRecordTest, TextRecordsRoundTrip) {
  UpdateRecordBuilder builder(0);
  builder.AddText("weather", "Rain \xe2\x98\x94 tomorrow");
  builder.AddText("sport", std::string(70000, 'x'));  // longer than a u16 length
  const std::string payload = builder.Finish();
  absl::StatusOr<UpdateRecord> record = DecodeUpdateRecord(payload, 0);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->labels, (std::vector<std::string>{"weather", "sport"}));
  ASSERT_EQ(record->inputs.texts.size(), 2u);
  EXPECT_EQ(record->inputs.texts[0], "Rain \xe2\x98\x94 tomorrow");
  EXPECT_EQ(record->inputs.texts[1], std::string(70000, 'x'));
  EXPECT_EQ(record->inputs.size(), 2);
  // Against an image model it is refused (input size 0 vs 784), and cut short anywhere it is
  // DATA_LOSS.
  EXPECT_TRUE(absl::IsDataLoss(DecodeUpdateRecord(payload, 784).status()));
  for (size_t cut = 0; cut < 40; ++cut) {
    EXPECT_TRUE(absl::IsDataLoss(DecodeUpdateRecord(payload.substr(0, cut), 0).status()));
  }
  // An image encoding inside a text model's record is DATA_LOSS.
  UpdateRecordBuilder pixels(0);
  pixels.AddPixels("cat", "");
  EXPECT_TRUE(absl::IsDataLoss(DecodeUpdateRecord(pixels.Finish(), 0).status()));
}

TEST(UpdateRecordTest, RoundTripAndMalformedPayloads) {
  constexpr int kInput = 6;
  UpdateRecordBuilder builder(kInput);
  builder.AddPixels("cat", std::string("\x00\x01\x02\xff\x80\x10", kInput));
  const float values[kInput] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, 7.0f};
  builder.AddValues("dog", values);
  const std::string payload = builder.Finish();
  absl::StatusOr<UpdateRecord> record = DecodeUpdateRecord(payload, kInput);
  ASSERT_TRUE(record.ok()) << record.status();
  ASSERT_EQ(record->labels, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(record->inputs.values(0, 3), 1.0f);
  EXPECT_EQ(record->inputs.values(0, 4), 128.0f / 255.0f);
  EXPECT_EQ(record->inputs.values(1, 1), -1.0f);
  EXPECT_TRUE(absl::IsDataLoss(DecodeUpdateRecord(payload, kInput + 1).status()));
  for (size_t cut = 0; cut < payload.size(); ++cut) {
    EXPECT_TRUE(absl::IsDataLoss(DecodeUpdateRecord(payload.substr(0, cut), kInput).status()));
  }
  EXPECT_TRUE(absl::IsDataLoss(DecodeUpdateRecord(payload + "x", kInput).status()));
}

}  // namespace
}  // namespace strata::update
