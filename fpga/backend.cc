#include "fpga/backend.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "fpga/kernels/kernels.h"

namespace strata::fpga {

OpCounts& OpCounts::operator+=(const OpCounts& other) {
  int8_macs += other.int8_macs;
  fp32_macs += other.fp32_macs;
  fp64_macs += other.fp64_macs;
  dram_bytes += other.dram_bytes;
  host_to_device_bytes += other.host_to_device_bytes;
  device_to_host_bytes += other.device_to_host_bytes;
  return *this;
}

OpCounts operator+(OpCounts a, const OpCounts& b) { return a += b; }

std::string ToString(const OpCounts& c) {
  return absl::StrCat("int8_macs=", c.int8_macs, " fp32_macs=", c.fp32_macs,
                      " fp64_macs=", c.fp64_macs, " dram_bytes=", c.dram_bytes,
                      " host_to_device_bytes=", c.host_to_device_bytes,
                      " device_to_host_bytes=", c.device_to_host_bytes);
}

absl::Status DenseInt8Spec::Validate() const {
  if (in_features < 1 || in_features > kernels::kDenseMaxInFeatures) {
    return absl::InvalidArgumentError(absl::StrCat("dense spec: in_features ", in_features,
                                                   " outside [1, ", kernels::kDenseMaxInFeatures,
                                                   "]"));
  }
  if (out_features < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dense spec: out_features ", out_features, " < 1"));
  }
  const uint64_t outs = static_cast<uint64_t>(out_features);
  if (weights.size() != outs * static_cast<uint64_t>(in_features)) {
    return absl::InvalidArgumentError(absl::StrCat("dense spec: weights has ", weights.size(),
                                                   " values, expected ", out_features, " x ",
                                                   in_features));
  }
  if (!bias.empty() && bias.size() != outs) {
    return absl::InvalidArgumentError(absl::StrCat("dense spec: bias has ", bias.size(),
                                                   " values, expected ", out_features, " or 0"));
  }
  for (size_t o = 0; o < bias.size(); ++o) {
    if (bias[o] > kernels::kDenseMaxAbsBias || bias[o] < -kernels::kDenseMaxAbsBias) {
      return absl::InvalidArgumentError(
          absl::StrCat("dense spec: bias[", o, "] = ", bias[o], " outside [-2^30, 2^30]"));
    }
  }
  if (!raw_output) {
    if (scales.size() != outs) {
      return absl::InvalidArgumentError(absl::StrCat("dense spec: scales has ", scales.size(),
                                                     " values, expected ", out_features));
    }
    for (size_t o = 0; o < scales.size(); ++o) {
      if (scales[o].shift < -31 || scales[o].shift > 30 || scales[o].multiplier < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("dense spec: scales[", o, "] = {", scales[o].multiplier, ", ",
                         scales[o].shift, "}: need multiplier >= 0 and shift in [-31, 30]"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace strata::fpga
