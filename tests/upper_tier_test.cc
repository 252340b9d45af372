#include "model/upper_tier.h"

#include <Eigen/QR>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model_test_util.h"

namespace strata::model {
namespace {

// Class indices for labels, adding new ones in order of first appearance.
std::vector<int> Classes(UpperTier& tier, const std::vector<std::string>& labels, size_t begin,
                         size_t end) {
  std::vector<int> classes;
  for (size_t i = begin; i < end; ++i) classes.push_back(tier.ClassIndexOrAdd(labels[i]));
  return classes;
}

double RelativeDifference(const MatrixF& a, const MatrixF& b) {
  return (a - b).norm() / b.norm();
}

TEST(UpperTierTest, CholeskySolveMatchesFloat64QrReference) {
  const int n = 400, d = 24;
  const double lambda = 0.5;
  LabelledFeatures data = MakeClusters(n, d);
  UpperTier tier(d, lambda);
  ASSERT_TRUE(tier.Absorb(data.features, Classes(tier, data.labels, 0, n)).ok());
  absl::StatusOr<Readout> readout = tier.Solve();
  ASSERT_TRUE(readout.ok()) << readout.status();

  // Reference: ridge as an ordinary least-squares problem on the augmented system
  // [H; sqrt(lambda) I] W = [Y; 0], solved by Householder QR in float64 — a different algorithm
  // from the Cholesky solve of the normal equations.
  const int c = tier.num_classes();
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(n + d, d);
  Eigen::MatrixXd y = Eigen::MatrixXd::Zero(n + d, c);
  a.topRows(n) = data.features.cast<double>();
  a.bottomRows(d) = std::sqrt(lambda) * Eigen::MatrixXd::Identity(d, d);
  for (int i = 0; i < n; ++i) y(i, tier.ClassIndex(data.labels[i])) = 1.0;
  const Eigen::MatrixXd reference = a.colPivHouseholderQr().solve(y);
  EXPECT_LT(RelativeDifference(readout->weights, reference.cast<float>()), 1e-6);
  EXPECT_EQ(readout->labels, tier.labels());
}

TEST(UpperTierTest, HundredIncrementalAbsorbsEqualTheBatchFit) {
  const int n = 3000, d = 64;
  LabelledFeatures data = MakeClusters(n, d, 5);
  UpperTier batch(d, 10.0);
  ASSERT_TRUE(batch.Absorb(data.features, Classes(batch, data.labels, 0, n)).ok());
  UpperTier incremental(d, 10.0);
  for (int b = 0; b < 100; ++b) {
    const int begin = b * n / 100, end = (b + 1) * n / 100;
    ASSERT_TRUE(incremental
                    .Absorb(data.features.middleRows(begin, end - begin),
                            Classes(incremental, data.labels, begin, end))
                    .ok());
  }
  EXPECT_EQ(incremental.samples_seen(), static_cast<uint64_t>(n));
  absl::StatusOr<Readout> a = batch.Solve(), b = incremental.Solve();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(RelativeDifference(b->weights, a->weights), 1e-5);
  EXPECT_EQ(a->labels, b->labels);
}

TEST(UpperTierTest, NewLabelMidStreamIsExact) {
  const int n = 900, d = 16;
  LabelledFeatures data = MakeClusters(n, d, 3, 7);
  // Reorder so that class "c2" appears only in the last third of the stream.
  std::vector<int> order;
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < n; ++i) {
      if ((data.labels[i] == "c2") == (pass == 1)) order.push_back(i);
    }
  }
  LabelledFeatures sorted{MatrixF(n, d), {}};
  for (int i = 0; i < n; ++i) {
    sorted.features.row(i) = data.features.row(order[i]);
    sorted.labels.push_back(data.labels[order[i]]);
  }
  const int first = static_cast<int>(
      std::count_if(sorted.labels.begin(), sorted.labels.end(), [](auto& l) { return l != "c2"; }));

  UpperTier stream(d, 1.0);
  ASSERT_TRUE(
      stream.Absorb(sorted.features.topRows(first), Classes(stream, sorted.labels, 0, first)).ok());
  EXPECT_EQ(stream.num_classes(), 2);
  EXPECT_EQ(stream.ClassIndex("c2"), -1);
  absl::StatusOr<Readout> before = stream.Solve();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->weights.cols(), 2);
  ASSERT_TRUE(stream
                  .Absorb(sorted.features.bottomRows(n - first),
                          Classes(stream, sorted.labels, first, n))
                  .ok());
  EXPECT_EQ(stream.num_classes(), 3);
  EXPECT_EQ(stream.ClassIndex("c2"), 2);

  UpperTier batch(d, 1.0);
  ASSERT_TRUE(batch.Absorb(sorted.features, Classes(batch, sorted.labels, 0, n)).ok());
  absl::StatusOr<Readout> a = batch.Solve(), b = stream.Solve();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(RelativeDifference(b->weights, a->weights), 1e-5);
  // And the new class is predicted for its own samples.
  MatrixF scores = b->Scores(sorted.features.bottomRows(n - first));
  int predicted_new = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    predicted_new += best == 2;
  }
  EXPECT_GT(predicted_new, 0.9 * scores.rows());
}

TEST(UpperTierTest, RejectsBadInputAndLeavesStatisticsUnchanged) {
  UpperTier tier(4, 1.0);
  EXPECT_EQ(tier.Solve().status().code(), absl::StatusCode::kFailedPrecondition);
  tier.ClassIndexOrAdd("a");
  const MatrixD gram = tier.gram();  // copied whole: nothing may change
  EXPECT_EQ(tier.Absorb(MatrixF::Ones(2, 3), std::vector<int>{0, 0}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.Absorb(MatrixF::Ones(2, 4), std::vector<int>{0}).code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status s = tier.Absorb(MatrixF::Ones(2, 4), std::vector<int>{0, 1});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("class index 1 of sample 1"));
  EXPECT_EQ(tier.gram(), gram);
  EXPECT_EQ(tier.samples_seen(), 0u);
}

TEST(UpperTierTest, FromStatisticsValidates) {
  EXPECT_FALSE(UpperTier::FromStatistics(0.0, MatrixD::Identity(2, 2), MatrixD::Zero(2, 1), {"a"},
                                         0)
                   .ok());
  EXPECT_FALSE(UpperTier::FromStatistics(1.0, MatrixD::Identity(2, 2), MatrixD::Zero(2, 2),
                                         {"a", "a"}, 0)
                   .ok());
  EXPECT_FALSE(
      UpperTier::FromStatistics(1.0, MatrixD::Identity(2, 2), MatrixD::Zero(3, 1), {"a"}, 0).ok());
  absl::StatusOr<UpperTier> ok =
      UpperTier::FromStatistics(1.0, MatrixD::Identity(2, 2), MatrixD::Zero(2, 1), {"a"}, 5);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->ClassIndex("a"), 0);
  EXPECT_EQ(ok->samples_seen(), 5u);
}

}  // namespace
}  // namespace strata::model
