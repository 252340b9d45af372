#include "update/statistics_digest.h"

#include <cstdint>

#include "absl/strings/str_format.h"
#include "base/crc32c.h"

namespace strata::update {

std::string StatisticsDigest(const model::UpperTier& upper) {
  const model::MatrixD& gram = upper.gram();
  const Eigen::Index d = gram.rows();
  uint32_t gram_crc = 0;
  for (Eigen::Index i = 0; i < d; ++i) {
    // Row-major: the lower part of row i (columns 0..i) is contiguous.
    gram_crc = base::Crc32cExtend(gram_crc, gram.row(i).data(), sizeof(double) * (i + 1));
  }
  const model::MatrixD cross = upper.cross();
  uint32_t rest_crc = base::Crc32c(cross.data(), sizeof(double) * cross.size());
  for (const std::string& label : upper.labels()) {
    const uint64_t length = label.size();
    rest_crc = base::Crc32cExtend(rest_crc, &length, sizeof(length));
    rest_crc = base::Crc32cExtend(rest_crc, label.data(), label.size());
  }
  const uint64_t samples = upper.samples_seen();
  const double lambda = upper.lambda();
  rest_crc = base::Crc32cExtend(rest_crc, &samples, sizeof(samples));
  rest_crc = base::Crc32cExtend(rest_crc, &lambda, sizeof(lambda));
  return absl::StrFormat("crc32c:%08x%08x", gram_crc, rest_crc);
}

}  // namespace strata::update
