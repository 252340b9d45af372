#include "model/upper_tier.h"

#include <cmath>

#include <Eigen/Cholesky>

#include "absl/strings/str_cat.h"

namespace strata::model {

UpperTier::UpperTier(int feature_size, double lambda)
    : lambda_(lambda),
      gram_(lambda * MatrixD::Identity(feature_size, feature_size)),
      cross_(MatrixD::Zero(feature_size, 0)) {}

int UpperTier::ClassIndex(absl::string_view label) const {
  auto it = index_.find(label);
  return it == index_.end() ? -1 : it->second;
}

int UpperTier::ClassIndexOrAdd(absl::string_view label) {
  auto [it, inserted] = index_.try_emplace(label, num_classes());
  if (inserted) {
    labels_.emplace_back(label);
    cross_.conservativeResize(Eigen::NoChange, num_classes());
    cross_.col(num_classes() - 1).setZero();
  }
  return it->second;
}

absl::Status UpperTier::Absorb(const MatrixF& features, std::span<const int> classes) {
  if (features.cols() != feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier absorb: features have ",
                                                   features.cols(), " columns, expected ",
                                                   feature_size()));
  }
  if (static_cast<size_t>(features.rows()) != classes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier absorb: ", features.rows(),
                                                   " feature rows but ", classes.size(),
                                                   " class indices"));
  }
  for (size_t i = 0; i < classes.size(); ++i) {
    if (classes[i] < 0 || classes[i] >= num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat("upper tier absorb: class index ", classes[i],
                                                     " of sample ", i, " is not in 0..",
                                                     num_classes() - 1));
    }
  }
  if (classes.empty()) return absl::OkStatus();
  const MatrixD h = features.cast<double>();
  // A symmetric rank-k update touches only the lower triangle: half the flops of a full product,
  // and G stays exactly symmetric by construction.
  gram_.selfadjointView<Eigen::Lower>().rankUpdate(h.transpose());
  for (size_t i = 0; i < classes.size(); ++i) {
    cross_.col(classes[i]) += h.row(static_cast<Eigen::Index>(i)).transpose();
  }
  samples_seen_ += classes.size();
  return absl::OkStatus();
}

absl::StatusOr<Readout> UpperTier::Solve() const {
  if (num_classes() == 0) {
    return absl::FailedPreconditionError("upper tier solve: no class has been seen yet");
  }
  Eigen::LLT<Eigen::MatrixXd, Eigen::Lower> cholesky(gram_);  // reads the lower triangle only
  if (cholesky.info() != Eigen::Success) {
    return absl::InternalError(
        "upper tier solve: G is not positive definite (do the statistics hold NaN or Inf?)");
  }
  Readout readout;
  readout.weights = cholesky.solve(cross_).cast<float>();
  if (!readout.weights.allFinite()) {
    return absl::InternalError("upper tier solve: the readout is not finite");
  }
  readout.labels = labels_;
  return readout;
}

absl::StatusOr<UpperTier> UpperTier::FromStatistics(double lambda, MatrixD gram, MatrixD cross,
                                                    std::vector<std::string> labels,
                                                    uint64_t samples_seen) {
  if (!(lambda > 0) || !std::isfinite(lambda)) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier: lambda = ", lambda,
                                                   ", expected a finite value > 0"));
  }
  if (gram.rows() != gram.cols()) {
    return absl::InvalidArgumentError(
        absl::StrCat("upper tier: G is ", gram.rows(), "x", gram.cols(), ", expected square"));
  }
  if (cross.rows() != gram.rows() || cross.cols() != static_cast<Eigen::Index>(labels.size())) {
    return absl::InvalidArgumentError(absl::StrCat("upper tier: Q is ", cross.rows(), "x",
                                                   cross.cols(), ", expected ", gram.rows(), "x",
                                                   labels.size()));
  }
  UpperTier tier(0, lambda);
  tier.gram_ = std::move(gram);
  tier.cross_ = std::move(cross);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("upper tier: label ", i, " is empty"));
    }
    if (!tier.index_.try_emplace(labels[i], static_cast<int>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("upper tier: label \"", labels[i], "\" appears twice"));
    }
  }
  tier.labels_ = std::move(labels);
  tier.samples_seen_ = samples_seen;
  return tier;
}

}  // namespace strata::model
