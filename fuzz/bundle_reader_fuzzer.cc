// libFuzzer target: the model bundle reader (model/bundle.h, over base/record_file.h).
//
// ReadBundle takes a path, so each input is written to a file in a per-process scratch directory.
// Every input is read twice: as it is, and with its header fixed up (payload size, payload CRC,
// header CRC recomputed). Random mutations almost never pass the CRC-32C checks, so without the
// second read the fuzzer would only ever exercise the checksum code; with it, mutations reach the
// record parser, the lower tier's loader and the upper tier's statistics checks.
//
// Invariants checked (beyond "no crash, leak, out-of-bounds read or undefined behaviour"):
//  - errors are DATA_LOSS or FAILED_PRECONDITION (the file exists, so never NOT_FOUND) with a
//    message naming the file;
//  - a bundle that reads is usable: the tiers agree on the feature width, the lower tier computes
//    features of that width for an image, the int8 calibration has one scale per quantised stage;
//  - it round-trips: WriteBundle then ReadBundle gives back the same model bit for bit.
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "base/crc32c.h"
#include "base/file.h"
#include "fuzz/fuzz_util.h"
#include "model/bundle.h"

namespace strata::model {
namespace {

constexpr size_t kHeaderBytes = 32;  // base/record_file.cc; docs/bundle-format.md "Layout"

template <typename T>
void Put(std::string& file, size_t offset, T value) {
  std::memcpy(file.data() + offset, &value, sizeof(T));
}

// The file with a header that matches its payload (only the integrity fields change).
std::string FixHeader(std::string file) {
  if (file.size() < kHeaderBytes) return file;
  Put<uint64_t>(file, 16, file.size() - kHeaderBytes);
  Put<uint32_t>(file, 24, base::Crc32c(file.data() + kHeaderBytes, file.size() - kHeaderBytes));
  Put<uint32_t>(file, 28, base::Crc32c(file.data(), 28));
  return file;
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof(double)) == 0; }

// Bitwise equality of two matrices; of their lower triangles only if `lower` (the Gram matrix's
// strict upper triangle is unspecified, model/upper_tier.h).
bool SameMatrix(const MatrixD& a, const MatrixD& b, bool lower = false) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    for (Eigen::Index j = 0; j < (lower ? i + 1 : a.cols()); ++j) {
      if (!SameBits(a(i, j), b(i, j))) return false;
    }
  }
  return true;
}

void CheckBundle(const std::string& contents) {
  const std::string path = fuzz::ScratchDir() + "/model.bundle";
  absl::Status written = base::WriteFileAtomically(path, contents);
  STRATA_FUZZ_CHECK(written.ok(), written.ToString());
  absl::StatusOr<Bundle> bundle = ReadBundle(path);
  if (!bundle.ok()) {
    const absl::StatusCode code = bundle.status().code();
    STRATA_FUZZ_CHECK(
        code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kFailedPrecondition,
        bundle.status().ToString());
    STRATA_FUZZ_CHECK(absl::StrContains(bundle.status().message(), path),
                      "the error must name the file: " + bundle.status().ToString());
    return;
  }
  const int d = bundle->lower->feature_size();
  STRATA_FUZZ_CHECK(d > 0 && bundle->upper.feature_size() == d, "tiers disagree on feature width");
  STRATA_FUZZ_CHECK(
      bundle->upper.gram().rows() == d && bundle->upper.cross().rows() == d &&
          bundle->upper.cross().cols() == static_cast<long>(bundle->upper.labels().size()),
      "upper tier statistics have the wrong shape");
  if (!bundle->int8.empty()) {
    const size_t k = static_cast<size_t>(QuantizedLowerTier::QuantizedStageCount(*bundle->lower));
    STRATA_FUZZ_CHECK(bundle->int8.activation_scales.size() == k &&
                          bundle->int8.max_abs_activations.size() == k &&
                          bundle->int8.clipped_fractions.size() == k,
                      "int8 calibration does not match the lower tier");
  }
  const MatrixF image = MatrixF::Constant(1, bundle->lower->input_size(), 0.5f);
  const MatrixF features = bundle->lower->Features(image);
  STRATA_FUZZ_CHECK(features.rows() == 1 && features.cols() == d, "feature width");

  // Round trip through the writer.
  const std::string copy = fuzz::ScratchDir() + "/copy.bundle";
  absl::Status rewritten = WriteBundle(*bundle, copy);
  STRATA_FUZZ_CHECK(rewritten.ok(), rewritten.ToString());
  absl::StatusOr<Bundle> again = ReadBundle(copy);
  STRATA_FUZZ_CHECK(again.ok(), "a rewritten bundle does not read: " + again.status().ToString());
  STRATA_FUZZ_CHECK(again->version == bundle->version, "version");
  STRATA_FUZZ_CHECK(again->upper.labels() == bundle->upper.labels(), "labels");
  STRATA_FUZZ_CHECK(again->upper.samples_seen() == bundle->upper.samples_seen(), "samples_seen");
  STRATA_FUZZ_CHECK(SameBits(again->upper.lambda(), bundle->upper.lambda()), "lambda");
  STRATA_FUZZ_CHECK(SameMatrix(again->upper.gram(), bundle->upper.gram(), /*lower=*/true), "gram");
  STRATA_FUZZ_CHECK(SameMatrix(again->upper.cross(), bundle->upper.cross()), "cross");
  STRATA_FUZZ_CHECK(again->int8.activation_scales == bundle->int8.activation_scales, "int8 scales");
  const MatrixF features_again = again->lower->Features(image);
  STRATA_FUZZ_CHECK(
      features_again.size() == features.size() &&
          std::memcmp(features_again.data(), features.data(), sizeof(float) * features.size()) == 0,
      "features differ after the round trip");
}

}  // namespace
}  // namespace strata::model

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string contents(reinterpret_cast<const char*>(data), size);
  strata::model::CheckBundle(contents);
  strata::model::CheckBundle(strata::model::FixHeader(contents));
  return 0;
}
