// The model bundle: one file holding a fitted lower tier and the upper tier's statistics.
// The format is specified in docs/bundle-format.md.
#ifndef STRATA_MODEL_BUNDLE_H_
#define STRATA_MODEL_BUNDLE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/lower_tier.h"
#include "model/quantized_lower_tier.h"
#include "model/upper_tier.h"

namespace strata::model {

struct Bundle {
  // Shared: the feature extractor built from it (model/lower_tier_extractor.h) keeps it alive.
  std::shared_ptr<const LowerTier> lower;
  UpperTier upper;
  uint64_t version = 1;  // the model version the bundle holds
  // The int8 activation scales of `lower` (the optional "lower.int8.*" records); empty if the
  // bundle has none (then it can be served in float only). Written by strata-train.
  Int8Calibration int8 = {};
  // Which lower tier's features the readout statistics were fit on: "float" or "int8" (the
  // optional record upper.readout.features; "float" for bundles without it). The int8 readout
  // feature scales themselves live in upper.readout_scales() (records upper.readout.*).
  std::string readout_features = "float";
  // The percentile of |h_j| that set upper.readout_scales() (0 without scales).
  double readout_percentile = 0;
};

// Writes the bundle atomically: to PATH.tmp, fsync, rename to PATH, fsync of the directory.
// On failure, PATH is unchanged and the error names the file and the failing call.
absl::Status WriteBundle(const Bundle& bundle, const std::string& path);

// Reads a bundle. NOT_FOUND if the file is missing; DATA_LOSS naming the file and byte offset if it
// is truncated, corrupt (checksum mismatch) or malformed; FAILED_PRECONDITION if its format version
// is newer than this build reads.
absl::StatusOr<Bundle> ReadBundle(const std::string& path);

}  // namespace strata::model

#endif  // STRATA_MODEL_BUNDLE_H_
