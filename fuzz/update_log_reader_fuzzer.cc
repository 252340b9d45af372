// libFuzzer target: the update-log reader used by recovery (update/update_log.h ReadUpdateLog and
// CutTornTail) and the record payload decoder (update/update_record.h DecodeUpdateRecord).
//
// Input: byte 0 chooses `after` (0..3, the snapshot position recovery would pass); the rest is the
// newest (only) segment, written as DIR/update-00000000000000000001.log on the real file system
// (per-process scratch directory). Every input is read twice: as it is, and with the segment header
// CRC and each whole record's CRC recomputed, so that mutations get past the checksums to the
// record framing, the torn-tail rules and the payload decoder (recovery decodes every record it
// replays with DecodeUpdateRecord, as the visitor here does).
//
// Invariants checked (beyond "no crash, leak, out-of-bounds read or undefined behaviour"):
//  - errors are DATA_LOSS or FAILED_PRECONDITION and name the segment file;
//  - the visitor sees sequences after+1, after+2, ... in order, and records_visited equals
//    last_sequence - after;
//  - a torn tail lies inside the file (offset + bytes_dropped == file size), and after CutTornTail
//    the log reads again with the same records and no torn tail (recovery is idempotent);
//  - a decoded record has one input row of input_size values per label, labels of 1..256 bytes.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "fuzz/fuzz_util.h"
#include "server/validation.h"
#include "update/env.h"
#include "update/update_log.h"
#include "update/update_record.h"

namespace strata::update {
namespace {

template <typename T>
T Load(const std::string& s, size_t offset) {
  T value;
  std::memcpy(&value, s.data() + offset, sizeof(T));
  return value;
}

// The segment with its header CRC and the CRC of every whole record recomputed (the framing, that
// is the lengths, is left as the fuzzer made it).
std::string FixChecksums(std::string segment) {
  if (segment.size() < kSegmentHeaderBytes) return segment;
  const uint32_t header_crc = base::Crc32c(segment.data(), 20);
  std::memcpy(segment.data() + 20, &header_crc, 4);
  size_t offset = kSegmentHeaderBytes;
  while (segment.size() - offset >= kRecordHeaderBytes) {
    const uint32_t length = Load<uint32_t>(segment, offset + 4);
    if (segment.size() - offset - kRecordHeaderBytes < length) break;
    const uint32_t crc = base::Crc32cExtend(base::Crc32c(segment.data() + offset + 8, 1),
                                            segment.data() + offset + kRecordHeaderBytes, length);
    std::memcpy(segment.data() + offset, &crc, 4);
    offset += kRecordHeaderBytes + length;
  }
  return segment;
}

void CheckDecoded(absl::string_view payload, int input_size) {
  absl::StatusOr<UpdateRecord> record = DecodeUpdateRecord(payload, input_size);
  if (!record.ok()) {
    STRATA_FUZZ_CHECK(record.status().code() == absl::StatusCode::kDataLoss,
                      record.status().ToString());
    return;
  }
  STRATA_FUZZ_CHECK(!record->labels.empty(), "a record holds at least one sample");
  STRATA_FUZZ_CHECK(record->inputs.size() == static_cast<long>(record->labels.size()) &&
                        (input_size == 0 ? record->inputs.values.size() == 0
                                         : record->inputs.values.cols() == input_size &&
                                               record->inputs.texts.empty()),
                    "record shape");
  for (const std::string& label : record->labels) {
    STRATA_FUZZ_CHECK(!label.empty() && label.size() <= kMaxLabelBytes, "label length");
  }
}

struct Visited {
  std::vector<uint64_t> sequences;
  std::vector<std::string> payloads;
};

absl::StatusOr<LogScan> Read(const std::string& dir, uint64_t after, Visited& visited) {
  return ReadUpdateLog(Env::Default(), dir, after,
                       [&](uint64_t sequence, absl::string_view payload) -> absl::Status {
                         visited.sequences.push_back(sequence);
                         visited.payloads.emplace_back(payload);
                         // As recovery does, for the model's input size (784 for Fashion-MNIST)
                         // and, so that small fuzzed records decode too, for the stored one.
                         CheckDecoded(payload, 784);
                         if (payload.size() >= 4) {
                           uint32_t stored;
                           std::memcpy(&stored, payload.data(), 4);
                           if (stored >= 1 && stored <= 4096) {
                             CheckDecoded(payload, static_cast<int>(stored));
                           }
                         }
                         return absl::OkStatus();
                       });
}

void CheckSegment(const std::string& segment, uint64_t after) {
  const std::string dir = fuzz::ScratchDir() + "/log";
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  Env* env = Env::Default();
  absl::Status made = env->CreateDirectories(dir);
  STRATA_FUZZ_CHECK(made.ok(), made.ToString());
  const std::string path = dir + "/" + SegmentFileName(1);
  absl::Status written = env->WriteFileAtomically(path, segment);
  STRATA_FUZZ_CHECK(written.ok(), written.ToString());

  Visited visited;
  absl::StatusOr<LogScan> scan = Read(dir, after, visited);
  if (!scan.ok()) {
    const absl::StatusCode code = scan.status().code();
    STRATA_FUZZ_CHECK(
        code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kFailedPrecondition,
        scan.status().ToString());
    STRATA_FUZZ_CHECK(absl::StrContains(scan.status().message(), path),
                      "the error must name the segment: " + scan.status().ToString());
    return;
  }
  STRATA_FUZZ_CHECK(scan->last_sequence >= after, "last_sequence below after");
  STRATA_FUZZ_CHECK(scan->records_visited == scan->last_sequence - after,
                    absl::StrCat("visited ", scan->records_visited, " records up to ",
                                 scan->last_sequence, " after ", after));
  STRATA_FUZZ_CHECK(visited.sequences.size() == scan->records_visited, "visitor calls");
  for (size_t i = 0; i < visited.sequences.size(); ++i) {
    STRATA_FUZZ_CHECK(visited.sequences[i] == after + 1 + i, "sequences out of order");
  }
  if (!scan->torn_tail.has_value()) return;

  const TornTail& tail = *scan->torn_tail;
  STRATA_FUZZ_CHECK(tail.path == path, "torn tail names another file");
  STRATA_FUZZ_CHECK(
      tail.offset <= segment.size() && tail.offset + tail.bytes_dropped == segment.size(),
      absl::StrCat("torn tail at ", tail.offset, " dropping ", tail.bytes_dropped, " of ",
                   segment.size(), " bytes"));
  STRATA_FUZZ_CHECK(tail.delete_file == (tail.offset == 0), "delete_file");
  absl::Status cut = CutTornTail(env, dir, tail);
  STRATA_FUZZ_CHECK(cut.ok(), cut.ToString());
  Visited again;
  absl::StatusOr<LogScan> rescan = Read(dir, after, again);
  STRATA_FUZZ_CHECK(rescan.ok(), "the log does not read after cutting its torn tail: " +
                                     rescan.status().ToString());
  STRATA_FUZZ_CHECK(!rescan->torn_tail.has_value(), "a torn tail is left after the cut");
  STRATA_FUZZ_CHECK(rescan->last_sequence == scan->last_sequence, "records lost by the cut");
  STRATA_FUZZ_CHECK(again.payloads == visited.payloads, "records changed by the cut");
}

}  // namespace
}  // namespace strata::update

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint64_t after = data[0] % 4;
  const std::string segment(reinterpret_cast<const char*>(data + 1), size - 1);
  strata::update::CheckSegment(segment, after);
  strata::update::CheckSegment(strata::update::FixChecksums(segment), after);
  return 0;
}
