// libFuzzer target: the service's request validation (server/validation.h) and the update-record
// encoding the service writes for every accepted sample (update/update_record.h).
//
// Input: byte 0 picks the model's input size (small sizes let the fuzzer build valid samples), byte 1
// the batch limit; the rest is parsed as a strata.v1.PredictRequest and as a strata.v1.UpdateRequest
// (the same bytes often parse as both: field 1 is the sample list in each).
//
// Invariants checked (beyond "no crash, leak, out-of-bounds read or undefined behaviour"):
//  - ReadBatch succeeds exactly when the batch holds 1..max_batch samples and every sample passes
//    ReadSample; its errors are INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for an over-long batch;
//    on success every value is finite and pixel rows equal byte / 255.
//  - ValidateLabel accepts exactly the labels of 1..kMaxLabelBytes bytes.
//  - The service's own parsing (server/request_parsing.h): ParseRequest succeeds exactly when
//    protobuf parses the bytes, and when it fails it says why (INVALID_ARGUMENT with a reason from
//    DescribeParseFailure); ReadUpdateMessage keeps every readable sample and, when the whole
//    message does not parse, reports at least one unreadable sample or an unreadable rest.
//  - A sample accepted the way the Update handler accepts it, encoded with UpdateRecordBuilder,
//    decodes with DecodeUpdateRecord to the same labels and bit-identical inputs (what recovery
//    replays is what was validated).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "server/request_parsing.h"
#include "server/validation.h"
#include "strata/v1/strata.pb.h"
#include "update/update_record.h"

namespace strata::server {
namespace {

using update::DecodeUpdateRecord;
using update::UpdateRecord;
using update::UpdateRecordBuilder;

// 0: a text model (texts of at most kMaxTextBytes); else images of that many values (784:
// Fashion-MNIST's 28x28).
constexpr int kInputSizes[4] = {0, 3, 16, 784};
constexpr int kMaxTextBytes = 32;

model::InputKind KindOf(int input_size) {
  return input_size == 0 ? model::InputKind::Text(kMaxTextBytes, 16)
                         : model::InputKind::Image(model::Shape{1, input_size, 1});
}

void CheckPredictBatch(const v1::PredictRequest& request, int input_size, int max_batch) {
  const model::InputKind kind = KindOf(input_size);
  absl::StatusOr<model::SampleBatch> batch = ReadBatch(request.samples(), kind, max_batch);
  const int n = request.samples_size();
  bool all_valid = true;
  model::SampleBatch one;
  one.values.resize(input_size > 0 ? 1 : 0, input_size);
  for (int i = 0; i < n && all_valid; ++i) {
    all_valid =
        ReadSample(request.samples(i), kind, absl::StrCat("samples[", i, "]"), &one, 0).ok();
  }
  if (n > max_batch) {
    STRATA_FUZZ_CHECK(batch.status().code() == absl::StatusCode::kResourceExhausted,
                      batch.status().ToString());
    return;
  }
  if (n == 0 || !all_valid) {
    STRATA_FUZZ_CHECK(batch.status().code() == absl::StatusCode::kInvalidArgument,
                      batch.status().ToString());
    STRATA_FUZZ_CHECK(!batch.status().message().empty(), "an error must say what is wrong");
    return;
  }
  STRATA_FUZZ_CHECK(batch.ok(), batch.status().ToString());
  STRATA_FUZZ_CHECK(batch->size() == n, "batch size");
  if (kind.is_text()) {
    for (int i = 0; i < n; ++i) {
      const std::string& text = batch->texts[i];
      STRATA_FUZZ_CHECK(text == request.samples(i).text(), absl::StrCat("samples[", i, "] text"));
      STRATA_FUZZ_CHECK(!text.empty() && text.size() <= kMaxTextBytes &&
                            !update::FirstInvalidUtf8Byte(text).has_value(),
                        absl::StrCat("samples[", i, "]: an accepted text is 1..limit of UTF-8"));
    }
    return;
  }
  STRATA_FUZZ_CHECK(batch->values.rows() == n && batch->values.cols() == input_size, "batch shape");
  for (int i = 0; i < n; ++i) {
    const v1::Sample& sample = request.samples(i);
    for (int j = 0; j < input_size; ++j) {
      const float v = batch->values(i, j);
      STRATA_FUZZ_CHECK(std::isfinite(v), absl::StrCat("samples[", i, "] value ", j));
      if (sample.input_case() == v1::Sample::kPixels) {
        const float expected =
            static_cast<float>(static_cast<uint8_t>(sample.pixels()[j])) / 255.0f;
        STRATA_FUZZ_CHECK(v == expected, absl::StrCat("samples[", i, "] pixel ", j));
      }
    }
  }
}

void CheckUpdate(const v1::UpdateRequest& request, int input_size) {
  // The Update handler's path (server/service.cc): validate each labelled sample, then encode the
  // accepted ones into one update-log record.
  const model::InputKind kind = KindOf(input_size);
  UpdateRecordBuilder builder(input_size);
  std::vector<std::string> labels;
  std::vector<std::vector<float>> inputs;
  std::vector<std::string> texts;
  model::SampleBatch scratch;
  scratch.values.resize(input_size > 0 ? 1 : 0, input_size);
  for (int i = 0; i < request.samples_size(); ++i) {
    const v1::LabeledSample& sample = request.samples(i);
    const absl::Status label = ValidateLabel(sample.label(), "label");
    const bool label_ok = !sample.label().empty() && sample.label().size() <= kMaxLabelBytes;
    STRATA_FUZZ_CHECK(label.ok() == label_ok, label.ToString());
    if (!label.ok()) {
      STRATA_FUZZ_CHECK(label.code() == absl::StatusCode::kInvalidArgument, label.ToString());
      continue;
    }
    scratch.texts.clear();
    const absl::Status input = ReadSample(sample.sample(), kind, "sample", &scratch, 0);
    if (!input.ok()) {
      STRATA_FUZZ_CHECK(input.code() == absl::StatusCode::kInvalidArgument, input.ToString());
      continue;
    }
    if (kind.is_text()) {
      builder.AddText(sample.label(), scratch.texts[0]);
      texts.push_back(scratch.texts[0]);
    } else if (sample.sample().input_case() == v1::Sample::kPixels) {
      builder.AddPixels(sample.label(), sample.sample().pixels());
    } else {
      builder.AddValues(sample.label(), scratch.values.data());
    }
    if (!kind.is_text()) {
      inputs.emplace_back(scratch.values.data(), scratch.values.data() + input_size);
    }
    labels.push_back(sample.label());
  }
  if (builder.count() == 0) return;  // the service writes no record for an all-rejected message
  const std::string payload = builder.Finish();
  absl::StatusOr<UpdateRecord> record = DecodeUpdateRecord(payload, input_size);
  STRATA_FUZZ_CHECK(record.ok(), record.status().ToString());
  STRATA_FUZZ_CHECK(record->labels == labels, "labels differ after the record round trip");
  STRATA_FUZZ_CHECK(record->inputs.texts == texts, "texts differ after the record round trip");
  STRATA_FUZZ_CHECK(record->inputs.values.rows() == static_cast<long>(inputs.size()) &&
                        (inputs.empty() || record->inputs.values.cols() == input_size),
                    "record shape");
  for (size_t i = 0; i < inputs.size(); ++i) {
    STRATA_FUZZ_CHECK(std::memcmp(record->inputs.values.row(i).data(), inputs[i].data(),
                                  sizeof(float) * input_size) == 0,
                      absl::StrCat("sample ", i, " differs after the record round trip"));
  }
  // The decoder must reject the record for a model of another input size.
  STRATA_FUZZ_CHECK(!DecodeUpdateRecord(payload, input_size + 1).ok(), "input size not checked");
}

void CheckParsing(const uint8_t* data, size_t size, bool predict_parses, bool update_parses) {
  const grpc::Slice slice(data, size);
  const grpc::ByteBuffer buffer(&slice, 1);
  v1::PredictRequest predict;
  const absl::Status parsed = ParseRequest(buffer, &predict);
  STRATA_FUZZ_CHECK(parsed.ok() == predict_parses, parsed.ToString());
  if (!parsed.ok()) {
    STRATA_FUZZ_CHECK(parsed.code() == absl::StatusCode::kInvalidArgument, parsed.ToString());
    const std::string reason =
        DescribeParseFailure(*v1::PredictRequest::descriptor(),
                             absl::string_view(reinterpret_cast<const char*>(data), size));
    STRATA_FUZZ_CHECK(!reason.empty(), "protobuf refused bytes the walk found nothing wrong in");
  }
  const ParsedUpdateMessage update = ReadUpdateMessage(buffer);
  if (update_parses) {
    STRATA_FUZZ_CHECK(update.unreadable.empty() && update.unreadable_rest.empty(),
                      "a parseable message reported unreadable samples");
    return;
  }
  bool reported = !update.unreadable_rest.empty() || !update.unreadable_header.empty();
  for (const std::string& reason : update.unreadable) reported = reported || !reason.empty();
  STRATA_FUZZ_CHECK(reported, "an unparseable Update message reported nothing unreadable");
  STRATA_FUZZ_CHECK(update.unreadable.size() == static_cast<size_t>(update.request.samples_size()),
                    "unreadable reasons not aligned with the samples");
  for (int i = 0; i < update.request.samples_size(); ++i) {
    if (update.unreadable[i].empty()) {
      // A readable sample round-trips: re-encoding and parsing it alone succeeds.
      v1::LabeledSample again;
      STRATA_FUZZ_CHECK(again.ParseFromString(update.request.samples(i).SerializeAsString()),
                        absl::StrCat("samples[", i, "] does not round-trip"));
    }
  }
}

}  // namespace
}  // namespace strata::server

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // Most inputs hold invalid UTF-8 in a string field, which protobuf logs on every parse failure:
  // noise that would drown the fuzzer's own output.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::server;
  if (size < 2) return 0;
  const int input_size = kInputSizes[data[0] & 3];
  const int max_batch = 1 + data[1] % 64;
  data += 2;
  size -= 2;
  strata::v1::PredictRequest predict;
  const bool predict_parses = predict.ParseFromArray(data, static_cast<int>(size));
  if (predict_parses) CheckPredictBatch(predict, input_size, max_batch);
  strata::v1::UpdateRequest update;
  const bool update_parses = update.ParseFromArray(data, static_cast<int>(size));
  if (update_parses) CheckUpdate(update, input_size);
  CheckParsing(data, size, predict_parses, update_parses);
  return 0;
}
