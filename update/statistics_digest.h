// A digest of the upper tier's sufficient statistics, so that anyone can check that two replicas
// hold the same statistics bit for bit (ModelInfo.statistics_digest, Stats.statistics_digest).
#ifndef STRATA_UPDATE_STATISTICS_DIGEST_H_
#define STRATA_UPDATE_STATISTICS_DIGEST_H_

#include <string>

#include "model/upper_tier.h"

namespace strata::update {

// "crc32c:<16 hex digits>": the CRC-32C of G's lower triangle (row by row, the float64
// bytes as stored) and the CRC-32C of Q's class columns, the labels (each with its length), the
// sample count and lambda. Equal statistics give equal digests on any machine of the same byte
// order; a difference in any bit of G or Q changes one of the two CRCs. Reads gram() and cross(),
// which fold a Gram accumulator's unfolded rows in first: call it where the caller's folds happen
// anyway (after a refresh), so that computing a digest never changes when the statistics fold.
std::string StatisticsDigest(const model::UpperTier& upper);

}  // namespace strata::update

#endif  // STRATA_UPDATE_STATISTICS_DIGEST_H_
