// The upper tier: a ridge-regression readout kept as exact sufficient statistics.
//
//   G = sum_i h_i h_i^T + lambda I     (D x D, float64)
//   Q = sum_i h_i y_i^T                (D x C, float64; y_i one-hot over the classes)
//   W = G^-1 Q                         (solved by Cholesky, never by an explicit inverse)
//
// Absorbing samples only adds to G and Q, so the readout after any sequence of absorbs equals the
// batch fit on the union of the samples (up to float64 rounding). A label never seen before adds a
// class: a zero column in Q, which is exact, since every earlier sample's target for the new class
// was 0.
#ifndef STRATA_MODEL_UPPER_TIER_H_
#define STRATA_MODEL_UPPER_TIER_H_

#include <cstdint>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "model/tensor.h"

namespace strata::model {

// A solved readout: scores = features * weights.
struct Readout {
  MatrixF weights;  // D x C
  std::vector<std::string> labels;

  // Class scores for a batch of feature rows: rows x C.
  MatrixF Scores(const MatrixF& features) const { return features * weights; }
};

class UpperTier {
 public:
  // An empty readout over `feature_size` features with ridge parameter `lambda` > 0.
  UpperTier(int feature_size, double lambda);

  // The class index of `label`, adding it as a new class if it is new.
  int ClassIndexOrAdd(absl::string_view label);
  // The class index of `label`, or -1.
  int ClassIndex(absl::string_view label) const;

  // Adds the samples (one feature row each) with their class indices to G and Q.
  // INVALID_ARGUMENT if the widths or counts disagree or a class index is out of range.
  absl::Status Absorb(const MatrixF& features, std::span<const int> classes);

  // Solves W = G^-1 Q by Cholesky. FAILED_PRECONDITION if there is no class yet; INTERNAL if G is
  // not positive definite (impossible with lambda > 0 unless the statistics hold NaN).
  absl::StatusOr<Readout> Solve() const;

  int feature_size() const { return static_cast<int>(gram_.rows()); }
  int num_classes() const { return static_cast<int>(labels_.size()); }
  double lambda() const { return lambda_; }
  uint64_t samples_seen() const { return samples_seen_; }
  const std::vector<std::string>& labels() const { return labels_; }

  // The statistics, for the bundle and snapshots. G is symmetric and only its lower triangle is
  // kept up to date: read gram() through gram().triangularView<Eigen::Lower>() or
  // selfadjointView<Eigen::Lower>(); its strict upper triangle is unspecified.
  const MatrixD& gram() const { return gram_; }
  const MatrixD& cross() const { return cross_; }
  // Rebuilds an upper tier from stored statistics; INVALID_ARGUMENT if shapes disagree.
  static absl::StatusOr<UpperTier> FromStatistics(double lambda, MatrixD gram, MatrixD cross,
                                                   std::vector<std::string> labels,
                                                   uint64_t samples_seen);

 private:
  double lambda_;
  MatrixD gram_;   // D x D, lambda I + sum h h^T, lower triangle
  MatrixD cross_;  // D x C
  std::vector<std::string> labels_;
  absl::flat_hash_map<std::string, int> index_;
  uint64_t samples_seen_ = 0;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_UPPER_TIER_H_
