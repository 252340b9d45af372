// strata-fuzz-corpus: writes the seed corpora of the fuzzers (fuzz/corpus/<target>/) from real
// components, so the seeds are what the server really reads. fuzz/make_corpus.sh runs it after
// strata-train has written a tiny real bundle.
//
//   strata-fuzz-corpus --out=DIR --bundle=PATH
//
// Writes DIR/request_validation/*: serialized PredictRequest / UpdateRequest messages (real
// Fashion-MNIST test images as pixels and as float values, and rejected ones: wrong length, NaN,
// empty and over-long labels, an empty batch), each behind the fuzzer's 2-byte prefix;
// DIR/bundle_reader/*: the bundle as given and the same model rewritten without its int8
// calibration; DIR/update_log_reader/*: segments written by UpdateLog itself (Open + Append of
// UpdateRecordBuilder payloads), whole, with a torn last record and with a zero-filled tail, each
// behind the fuzzer's 1-byte `after` prefix.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "data/dataset.h"
#include "model/bundle.h"
#include "model/tensor.h"
#include "strata/v1/strata.pb.h"
#include "update/env.h"
#include "update/update_log.h"
#include "update/update_record.h"

namespace strata {
namespace {

absl::Status Write(const std::string& dir, const std::string& name, const std::string& contents) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat(dir, ": ", error.message()));
  return base::WriteFileAtomically(dir + "/" + name, contents);
}

// The request fuzzer's prefix: byte 0 & 3 selects the model (0: a text model of at most 32-byte
// texts; 1, 2, 3: images of 3, 16, 784 values), byte 1 the batch limit (1 + byte % 64).
std::string RequestSeed(int size_selector, int max_batch, const google::protobuf::Message& m) {
  std::string seed;
  seed.push_back(static_cast<char>(size_selector));
  seed.push_back(static_cast<char>(max_batch - 1));
  return seed + m.SerializeAsString();
}

absl::Status WriteRequests(const std::string& dir, const data::LabeledImages& images) {
  const int n = static_cast<int>(images.image_size());
  v1::PredictRequest pixels;
  for (int i = 0; i < 3; ++i) {
    pixels.add_samples()->set_pixels(images.image(i), n);
  }
  v1::PredictRequest values;
  v1::FloatVector* floats = values.add_samples()->mutable_values();
  for (int j = 0; j < n; ++j) floats->add_values(model::PixelValue(images.image(3)[j]));
  values.set_return_scores(true);

  v1::UpdateRequest update;
  for (int i = 0; i < 4; ++i) {
    v1::LabeledSample* sample = update.add_samples();
    sample->set_label(images.labels[i]);
    if (i % 2 == 0) {
      sample->mutable_sample()->set_pixels(images.image(i), n);
    } else {
      for (int j = 0; j < n; ++j) {
        sample->mutable_sample()->mutable_values()->add_values(
            model::PixelValue(images.image(i)[j]));
      }
    }
  }
  v1::UpdateRequest rejected;  // one bad sample per reason, and one good one
  rejected.add_samples()->set_label("");
  rejected.add_samples()->set_label(std::string(257, 'x'));
  v1::LabeledSample* shorter = rejected.add_samples();
  shorter->set_label("Bag");
  shorter->mutable_sample()->set_pixels(images.image(0), n - 4);
  v1::LabeledSample* nan = rejected.add_samples();
  nan->set_label("Coat");
  for (int j = 0; j < n; ++j) {
    nan->mutable_sample()->mutable_values()->add_values(
        j == 17 ? std::numeric_limits<float>::quiet_NaN() : 0.5f);
  }
  v1::LabeledSample* good = rejected.add_samples();
  good->set_label(images.labels[5]);
  good->mutable_sample()->set_pixels(images.image(5), n);

  // Small input sizes (selector 1: 3 values, 2: 16) let the fuzzer reach valid samples.
  v1::UpdateRequest small;
  for (const std::string& label : {"a", "Trouser"}) {
    v1::LabeledSample* sample = small.add_samples();
    sample->set_label(label);
    sample->mutable_sample()->set_pixels(std::string(3, '\x80'));
  }
  v1::PredictRequest small_values;
  for (int j = 0; j < 16; ++j) {
    small_values.add_samples()->mutable_values()->add_values(j / 16.0f);
  }

  // A text model (selector 0): texts good and bad, and the model field.
  v1::PredictRequest texts;
  texts.set_model("news");
  for (const char* text : {"Rain tomorrow.", "caf\xc3\xa9 au lait", "x"}) {
    texts.add_samples()->set_text(text);
  }
  v1::UpdateRequest text_update;
  text_update.set_model("news");
  for (const char* text : {"Heavy snow tonight.", "", "0123456789012345678901234567890123"}) {
    v1::LabeledSample* sample = text_update.add_samples();
    sample->set_label("weather");
    sample->mutable_sample()->set_text(text);
  }
  text_update.add_samples()->set_label("pixels");
  text_update.mutable_samples(3)->mutable_sample()->set_pixels("abc");

  for (absl::Status s : {
           Write(dir, "predict_texts", RequestSeed(0, 64, texts)),
           Write(dir, "update_texts", RequestSeed(0, 64, text_update)),
           Write(dir, "predict_pixels", RequestSeed(3, 64, pixels)),
           Write(dir, "predict_values", RequestSeed(3, 64, values)),
           Write(dir, "predict_over_limit", RequestSeed(3, 2, pixels)),
           Write(dir, "predict_empty", RequestSeed(3, 64, v1::PredictRequest())),
           Write(dir, "update_mixed", RequestSeed(3, 64, update)),
           Write(dir, "update_rejected", RequestSeed(3, 64, rejected)),
           Write(dir, "update_small", RequestSeed(1, 64, small)),
           Write(dir, "predict_small_values", RequestSeed(2, 64, small_values)),
       }) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status WriteBundles(const std::string& dir, const std::string& bundle_path) {
  absl::StatusOr<std::string> bytes = base::ReadFile(bundle_path);
  if (!bytes.ok()) return bytes.status();
  if (absl::Status s = Write(dir, "tiny.bundle", *bytes); !s.ok()) return s;
  absl::StatusOr<model::Bundle> bundle = model::ReadBundle(bundle_path);
  if (!bundle.ok()) return bundle.status();
  if (bundle->int8.empty()) return absl::OkStatus();
  bundle->int8 = {};
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  return model::WriteBundle(*bundle, dir + "/tiny_float_only.bundle");
}

// Writes records with the real UpdateLog into a scratch directory and returns the segment file.
absl::StatusOr<std::string> LogSegment(const std::string& scratch,
                                       const std::vector<std::string>& payloads) {
  std::error_code error;
  std::filesystem::remove_all(scratch, error);
  update::Env* env = update::Env::Default();
  if (absl::Status s = env->CreateDirectories(scratch); !s.ok()) return s;
  {
    absl::StatusOr<std::unique_ptr<update::FileUpdateLog>> log =
        update::FileUpdateLog::Open(env, scratch, 1);
    if (!log.ok()) return log.status();
    uint64_t last = 0;
    for (const std::string& payload : payloads) {
      absl::StatusOr<uint64_t> sequence = (*log)->Append(payload);
      if (!sequence.ok()) return sequence.status();
      last = *sequence;
    }
    if (last > 0) {
      if (absl::Status s = (*log)->Sync(last); !s.ok()) return s;
    }
  }
  return env->ReadFile(scratch + "/" + update::SegmentFileName(1));
}

absl::Status WriteLogSegments(const std::string& dir, const data::LabeledImages& images) {
  const int n = static_cast<int>(images.image_size());
  std::vector<std::string> payloads;
  for (int r = 0; r < 3; ++r) {  // three Update messages of 1, 2 and 3 samples
    update::UpdateRecordBuilder builder(n);
    for (int i = 0; i <= r; ++i) {
      const size_t image = static_cast<size_t>(r * 3 + i);
      if (i == 1) {
        std::vector<float> values(n);
        model::PixelsToValues(images.image(image), n, values.data());
        builder.AddValues(images.labels[image], values.data());
      } else {
        builder.AddPixels(images.labels[image],
                          absl::string_view(reinterpret_cast<const char*>(images.image(image)), n));
      }
    }
    payloads.push_back(builder.Finish());
  }
  // Records of a 3-value model: small enough for the fuzzer to rewrite whole.
  std::vector<std::string> small;
  for (const char* label : {"x", "Bag"}) {
    update::UpdateRecordBuilder builder(3);
    builder.AddPixels(label, "\x01\x80\xff");
    small.push_back(builder.Finish());
  }

  const std::string scratch =
      std::filesystem::temp_directory_path() / absl::StrCat("strata-fuzz-corpus-", getpid());
  absl::StatusOr<std::string> whole = LogSegment(scratch, payloads);
  absl::StatusOr<std::string> tiny = LogSegment(scratch, small);
  absl::StatusOr<std::string> empty = LogSegment(scratch, {});
  std::error_code error;
  std::filesystem::remove_all(scratch, error);
  for (const auto* s : {&whole, &tiny, &empty}) {
    if (!s->ok()) return s->status();
  }
  const std::string after0(1, '\0'), after1(1, '\1');
  const std::string torn = whole->substr(0, whole->size() - 100);  // a crash mid-append
  const std::string zero_tail = *tiny + std::string(64, '\0');     // extended, never written
  for (absl::Status s : {
           Write(dir, "fashion_3_records", after0 + *whole),
           Write(dir, "fashion_3_records_after_1", after1 + *whole),
           Write(dir, "fashion_torn_last_record", after0 + torn),
           Write(dir, "small_2_records", after0 + *tiny),
           Write(dir, "small_zero_tail", after0 + zero_tail),
           Write(dir, "header_only", after0 + *empty),
           Write(dir, "torn_header", after0 + empty->substr(0, 10)),
       }) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::string out, bundle;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--out=", 0) == 0) out = arg.substr(6);
    if (arg.rfind("--bundle=", 0) == 0) bundle = arg.substr(9);
  }
  if (out.empty() || bundle.empty()) {
    std::fprintf(stderr, "usage: strata-fuzz-corpus --out=DIR --bundle=PATH\n");
    return 2;
  }
  absl::StatusOr<data::LabeledImages> images = data::Load("fashion-mnist:test", {0, 16});
  absl::Status status = images.status();
  if (status.ok()) status = WriteRequests(out + "/request_validation", *images);
  if (status.ok()) status = WriteBundles(out + "/bundle_reader", bundle);
  if (status.ok()) status = WriteLogSegments(out + "/update_log_reader", *images);
  if (!status.ok()) {
    std::fprintf(stderr, "strata-fuzz-corpus: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::Main(argc, argv); }
