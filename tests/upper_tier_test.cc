#include "model/upper_tier.h"

#include <Eigen/Cholesky>
#include <Eigen/QR>
#include <cmath>
#include <random>

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

double RelativeDifference(const MatrixF& a, const MatrixF& b) { return (a - b).norm() / b.norm(); }

// The ridge readout of (features, labels) computed as an ordinary least-squares problem on the
// augmented system [H; sqrt(lambda) I] W = [Y; 0] by Householder QR in float64 — a different
// algorithm from the Cholesky solve of the normal equations. Columns follow `tier`'s classes.
MatrixF QrReference(const UpperTier& tier, const MatrixF& features,
                    const std::vector<std::string>& labels, double lambda) {
  const Eigen::Index n = features.rows(), d = features.cols();
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(n + d, d);
  Eigen::MatrixXd y = Eigen::MatrixXd::Zero(n + d, tier.num_classes());
  a.topRows(n) = features.cast<double>();
  a.bottomRows(d) = std::sqrt(lambda) * Eigen::MatrixXd::Identity(d, d);
  for (Eigen::Index i = 0; i < n; ++i) y(i, tier.ClassIndex(labels[i])) = 1.0;
  return a.colPivHouseholderQr().solve(y).cast<float>();
}

// Fraction of rows whose highest score is their class.
double Accuracy(const Readout& readout, const MatrixF& features,
                const std::vector<std::string>& labels) {
  const MatrixF scores = readout.Scores(features);
  int correct = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best;
    scores.row(i).maxCoeff(&best);
    correct += readout.labels[best] == labels[i];
  }
  return static_cast<double>(correct) / scores.rows();
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
  ASSERT_TRUE(
      stream.Absorb(sorted.features.bottomRows(n - first), Classes(stream, sorted.labels, first, n))
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

// An Update stream of new labels, one sample and one new class per absorb (the float64 host
// path). Q's capacity must grow geometrically (before, every new class copied the whole D x C
// matrix: O(D C^2) for the stream), and the statistics must equal the batch fit's: Q bit for bit
// (each column receives the same additions in the same order), G and W to rounding.
TEST(UpperTierTest, ClassesAddedOneAtATimeGrowGeometricallyAndEqualTheBatchFit) {
  const int d = 40, n = 600;
  LabelledFeatures data = MakeClusters(n, d, 4, 11);
  // Every third sample keeps one of the 4 cluster labels; the others are a class of their own.
  for (int i = 0; i < n; ++i) {
    if (i % 3 != 0) data.labels[i] = "new" + std::to_string(i);
  }
  UpperTier stream(d, 1.0);
  int reallocations_seen = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t before = stream.class_reallocations();
    const int capacity = stream.class_capacity();
    ASSERT_TRUE(
        stream.Absorb(data.features.middleRows(i, 1), Classes(stream, data.labels, i, i + 1)).ok());
    ASSERT_GE(stream.class_capacity(), stream.num_classes());
    if (stream.class_reallocations() != before) {
      ++reallocations_seen;
      EXPECT_GE(stream.class_capacity(), 2 * capacity) << "sample " << i;
    }
  }
  ASSERT_EQ(stream.num_classes(), 4 + 400);
  // 16, 32, ..., 512: 6 re-allocations for 404 classes (one per new class before).
  EXPECT_EQ(stream.class_reallocations(), reallocations_seen);
  EXPECT_LE(stream.class_reallocations(), 6);

  UpperTier batch(d, 1.0);
  ASSERT_TRUE(batch.Absorb(data.features, Classes(batch, data.labels, 0, n)).ok());
  EXPECT_EQ(batch.labels(), stream.labels());
  EXPECT_TRUE(stream.cross() == batch.cross());
  const MatrixD gs = stream.gram().triangularView<Eigen::Lower>();
  const MatrixD gb = batch.gram().triangularView<Eigen::Lower>();
  EXPECT_LE((gs - gb).norm() / gb.norm(), 1e-14);
  absl::StatusOr<Readout> a = batch.Solve(), b = stream.Solve();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LE(RelativeDifference(b->weights, a->weights), 1e-9);
  // A copy keeps the statistics and the capacity's spare columns stay out of the readout.
  UpperTier copy = stream;
  EXPECT_TRUE(copy.cross() == stream.cross());
  EXPECT_EQ(copy.Solve()->weights.cols(), stream.num_classes());
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
  EXPECT_FALSE(
      UpperTier::FromStatistics(0.0, MatrixD::Identity(2, 2), MatrixD::Zero(2, 1), {"a"}, 0).ok());
  EXPECT_FALSE(
      UpperTier::FromStatistics(1.0, MatrixD::Identity(2, 2), MatrixD::Zero(2, 2), {"a", "a"}, 0)
          .ok());
  EXPECT_FALSE(
      UpperTier::FromStatistics(1.0, MatrixD::Identity(2, 2), MatrixD::Zero(3, 1), {"a"}, 0).ok());
  absl::StatusOr<UpperTier> ok =
      UpperTier::FromStatistics(1.0, MatrixD::Identity(2, 2), MatrixD::Zero(2, 1), {"a"}, 5);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->ClassIndex("a"), 0);
  EXPECT_EQ(ok->samples_seen(), 5u);
}

TEST(UpperTierTest, BothRefreshPathsMatchFloat64QrReference) {
  const int n = 600, d = 40;
  const double lambda = 0.5;
  LabelledFeatures data = MakeClusters(n, d, 4, 11);
  UpperTier tier(d, lambda);
  ASSERT_TRUE(tier.Absorb(data.features.topRows(300), Classes(tier, data.labels, 0, 300)).ok());
  absl::StatusOr<Readout> first = tier.Refresh(RefreshMode::kForceRefactor);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
  EXPECT_LT(RelativeDifference(first->weights,
                               QrReference(tier, data.features.topRows(300), data.labels, lambda)),
            1e-6);

  // The other half folded into the kept factor: the rank-k update path.
  ASSERT_TRUE(tier.Absorb(data.features.bottomRows(300), Classes(tier, data.labels, 300, n)).ok());
  EXPECT_EQ(tier.pending_factor_rows(), 300);
  absl::StatusOr<Readout> second = tier.Refresh(RefreshMode::kForceFactorUpdate);
  ASSERT_TRUE(second.ok()) << second.status();
  const RefreshReport& report = tier.last_refresh();
  EXPECT_EQ(report.path, RefreshPath::kFactorUpdate);
  EXPECT_EQ(report.rows_folded, 300);
  EXPECT_DOUBLE_EQ(report.factor_flops, 3.0 * 300 * d * d);
  EXPECT_DOUBLE_EQ(report.solve_flops, 2.0 * d * d * tier.num_classes());
  EXPECT_GT(report.min_pivot, 0);
  EXPECT_EQ(tier.pending_factor_rows(), 0);
  EXPECT_LT(
      RelativeDifference(second->weights, QrReference(tier, data.features, data.labels, lambda)),
      1e-6);
}

TEST(UpperTierTest, BlockedPathsMatchReferenceAcrossBlockEdges) {
  // Widths that are not multiples of the kernels' block sizes (64, 256), and batches larger than
  // one rotation sweep (64 vectors).
  const int n = 900, d = 300;
  const double lambda = 2.0;
  LabelledFeatures data = MakeClusters(n, d, 3, 5);
  UpperTier tier(d, lambda);
  ASSERT_TRUE(tier.Absorb(data.features.topRows(700), Classes(tier, data.labels, 0, 700)).ok());
  ASSERT_TRUE(tier.Refresh(RefreshMode::kForceRefactor).ok());
  ASSERT_TRUE(tier.Absorb(data.features.bottomRows(200), Classes(tier, data.labels, 700, n)).ok());
  absl::StatusOr<Readout> updated = tier.Refresh(RefreshMode::kForceFactorUpdate);
  ASSERT_TRUE(updated.ok()) << updated.status();
  const MatrixF reference = QrReference(tier, data.features, data.labels, lambda);
  EXPECT_LT(RelativeDifference(updated->weights, reference), 1e-6);
  absl::StatusOr<Readout> fresh = tier.Solve();
  ASSERT_TRUE(fresh.ok());
  EXPECT_LT(RelativeDifference(fresh->weights, reference), 1e-6);
  // The blocked rank-k update of G equals a plain float64 product.
  const Eigen::MatrixXd h = data.features.cast<double>();
  const Eigen::MatrixXd g = h.transpose() * h + lambda * Eigen::MatrixXd::Identity(d, d);
  const Eigen::MatrixXd lower = tier.gram().triangularView<Eigen::Lower>();
  EXPECT_LT((lower - Eigen::MatrixXd(g.triangularView<Eigen::Lower>())).norm() / g.norm(), 1e-14);
}

TEST(UpperTierTest, FactorUpdatesAfterManySmallBatchesMatchAFreshCholesky) {
  // 200 batches of 5 rows, each folded into the factor (never re-factored): the factor-update
  // path's rounding stays within 1e-6 (relative, Frobenius) of a fresh Cholesky solve.
  const int n = 1000, d = 64;
  LabelledFeatures data = MakeClusters(n, d, 5, 3);
  UpperTierOptions options;
  options.refactor_every = 1 << 30;
  UpperTier tier(d, 10.0, options);
  ASSERT_TRUE(tier.Absorb(data.features.topRows(5), Classes(tier, data.labels, 0, 5)).ok());
  ASSERT_TRUE(tier.Refresh(RefreshMode::kForceRefactor).ok());
  absl::StatusOr<Readout> updated;
  for (int begin = 5; begin < n; begin += 5) {
    ASSERT_TRUE(tier.Absorb(data.features.middleRows(begin, 5),
                            Classes(tier, data.labels, begin, begin + 5))
                    .ok());
    updated = tier.Refresh(RefreshMode::kForceFactorUpdate);
    ASSERT_TRUE(updated.ok()) << updated.status();
  }
  EXPECT_EQ(tier.last_refresh().updates_since_refactor, n / 5 - 1);
  absl::StatusOr<Readout> fresh = tier.Solve();
  ASSERT_TRUE(fresh.ok());
  EXPECT_LT(RelativeDifference(updated->weights, fresh->weights), 1e-6);
  EXPECT_EQ(updated->labels, fresh->labels);
}

TEST(UpperTierTest, AutoRefreshFollowsTheCostModel) {
  const int d = 90;
  LabelledFeatures data = MakeClusters(400, d, 3, 9);
  UpperTierOptions options;
  options.refactor_every = 3;
  options.update_flop_weight = 1.0;
  UpperTier tier(d, 1.0, options);
  // No factor yet: re-factor, whatever the batch.
  ASSERT_TRUE(tier.Absorb(data.features.topRows(100), Classes(tier, data.labels, 0, 100)).ok());
  EXPECT_EQ(tier.Refresh(RefreshMode::kForceFactorUpdate).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(tier.Refresh().ok());
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
  EXPECT_DOUBLE_EQ(tier.last_refresh().factor_flops, d * d * d / 3.0);
  // 3 k D^2 < D^3 / 3 for k < D / 9 = 10 rows: a factor update.
  int row = 100;
  for (int update = 1; update <= 3; ++update, row += 9) {
    ASSERT_TRUE(
        tier.Absorb(data.features.middleRows(row, 9), Classes(tier, data.labels, row, row + 9))
            .ok());
    absl::StatusOr<RefreshReport> plan = tier.PlanRefresh();
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->path, RefreshPath::kFactorUpdate);
    EXPECT_EQ(plan->reason, "cost model");
    ASSERT_TRUE(tier.Refresh().ok());
    EXPECT_EQ(tier.last_refresh().path, RefreshPath::kFactorUpdate);
    EXPECT_EQ(tier.last_refresh().updates_since_refactor, update);
    EXPECT_DOUBLE_EQ(tier.last_refresh().flops(), plan->flops());
  }
  // refactor_every = 3 updates in a row: the next one re-factors from G.
  ASSERT_TRUE(
      tier.Absorb(data.features.middleRows(row, 2), Classes(tier, data.labels, row, row + 2)).ok());
  row += 2;
  ASSERT_TRUE(tier.Refresh().ok());
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
  EXPECT_EQ(tier.last_refresh().reason, "periodic re-factor");
  // A batch of 10 rows costs 3 * 10 * D^2 = D^3 / 3: no longer cheaper, re-factor.
  ASSERT_TRUE(
      tier.Absorb(data.features.middleRows(row, 10), Classes(tier, data.labels, row, row + 10))
          .ok());
  ASSERT_TRUE(tier.Refresh().ok());
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
  EXPECT_EQ(tier.last_refresh().reason, "cost model");
}

TEST(UpperTierTest, NewClassAfterARefreshKeepsTheFactorUsable) {
  const int n = 600, d = 32;
  LabelledFeatures data = MakeClusters(n, d, 4, 21);
  std::vector<int> order;  // class "c3" only in the second half
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < n; ++i) {
      if ((data.labels[i] == "c3") == (pass == 1)) order.push_back(i);
    }
  }
  LabelledFeatures sorted{MatrixF(n, d), {}};
  for (int i = 0; i < n; ++i) {
    sorted.features.row(i) = data.features.row(order[i]);
    sorted.labels.push_back(data.labels[order[i]]);
  }
  UpperTier tier(d, 1.0);
  ASSERT_TRUE(tier.Absorb(sorted.features.topRows(300), Classes(tier, sorted.labels, 0, 300)).ok());
  ASSERT_TRUE(tier.Refresh().ok());
  ASSERT_TRUE(
      tier.Absorb(sorted.features.bottomRows(300), Classes(tier, sorted.labels, 300, n)).ok());
  absl::StatusOr<Readout> updated = tier.Refresh(RefreshMode::kForceFactorUpdate);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->weights.cols(), 4);
  EXPECT_LT(
      RelativeDifference(updated->weights, QrReference(tier, sorted.features, sorted.labels, 1.0)),
      1e-6);
}

TEST(UpperTierTest, KeepFactorOffAlwaysRefactors) {
  LabelledFeatures data = MakeClusters(100, 8);
  UpperTierOptions options;
  options.keep_factor = false;
  UpperTier tier(8, 1.0, options);
  ASSERT_TRUE(tier.Absorb(data.features, Classes(tier, data.labels, 0, 100)).ok());
  ASSERT_TRUE(tier.Refresh().ok());
  ASSERT_TRUE(tier.Absorb(data.features.topRows(1), Classes(tier, data.labels, 0, 1)).ok());
  EXPECT_EQ(tier.pending_factor_rows(), 0);
  absl::Status forced = tier.Refresh(RefreshMode::kForceFactorUpdate).status();
  EXPECT_EQ(forced.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(forced.message()), ::testing::HasSubstr("keep_factor is off"));
  ASSERT_TRUE(tier.Refresh().ok());
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
}

TEST(UpperTierTest, ForgettingDecaysOnlyTheDataPart) {
  const int d = 6;
  const double lambda = 2.0, alpha = 0.5;
  LabelledFeatures data = MakeClusters(20, d, 2, 4);
  UpperTier tier(d, lambda);
  EXPECT_EQ(tier.forgetting(), 1.0);
  EXPECT_EQ(tier.set_forgetting(0.0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.set_forgetting(1.5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.set_forgetting(std::nan("")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.forgetting(), 1.0);
  ASSERT_TRUE(tier.Absorb(data.features.topRows(10), Classes(tier, data.labels, 0, 10)).ok());
  ASSERT_TRUE(tier.Refresh().ok());
  const Eigen::MatrixXd g0 = tier.gram().selfadjointView<Eigen::Lower>();
  const Eigen::MatrixXd q0 = tier.cross();
  ASSERT_TRUE(tier.set_forgetting(alpha).ok());
  EXPECT_EQ(tier.forgetting(), alpha);
  ASSERT_TRUE(tier.Absorb(data.features.bottomRows(10), Classes(tier, data.labels, 10, 20)).ok());

  // G = alpha (G0 - lambda I) + lambda I + H^T H;  Q = alpha Q0 + H^T Y.
  const Eigen::MatrixXd h = data.features.bottomRows(10).cast<double>();
  Eigen::MatrixXd y = Eigen::MatrixXd::Zero(10, tier.num_classes());
  for (int i = 0; i < 10; ++i) y(i, tier.ClassIndex(data.labels[10 + i])) = 1;
  const Eigen::MatrixXd id = Eigen::MatrixXd::Identity(d, d);
  const Eigen::MatrixXd g = alpha * (g0 - lambda * id) + lambda * id + h.transpose() * h;
  const Eigen::MatrixXd q = alpha * q0 + h.transpose() * y;
  const Eigen::MatrixXd g1 = tier.gram().selfadjointView<Eigen::Lower>();
  EXPECT_LT((g1 - g).norm() / g.norm(), 1e-14);
  EXPECT_LT((Eigen::MatrixXd(tier.cross()) - q).norm() / q.norm(), 1e-14);
  // lambda I is not decayed, so the kept factor cannot be updated: the refresh re-factors.
  EXPECT_EQ(tier.Refresh(RefreshMode::kForceFactorUpdate).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(tier.Refresh().ok());
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
}

TEST(UpperTierTest, ForgetZeroesTheClassColumnsThenDecaysTheDataPart) {
  const int d = 6;
  const double lambda = 2.0, decay = 0.25;
  LabelledFeatures data = MakeClusters(30, d, 3, 5);
  UpperTier tier(d, lambda);
  ASSERT_TRUE(tier.Absorb(data.features.topRows(20), Classes(tier, data.labels, 0, 20)).ok());
  ASSERT_TRUE(tier.Refresh().ok());
  const Eigen::MatrixXd g0 = tier.gram().selfadjointView<Eigen::Lower>();
  const Eigen::MatrixXd q0 = tier.cross();
  // Bad input changes nothing.
  EXPECT_EQ(tier.Forget(std::vector<int>{0}, 0.0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier.Forget(std::vector<int>{7}, 0.5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Eigen::MatrixXd(tier.cross()), q0);

  // Columns only: G (and so the kept factor) stays; the factor can still be updated.
  ASSERT_TRUE(tier.Forget(std::vector<int>{1}, 1.0).ok());
  Eigen::MatrixXd q = q0;
  q.col(1).setZero();
  EXPECT_EQ(Eigen::MatrixXd(tier.cross()), q);
  EXPECT_EQ(Eigen::MatrixXd(tier.gram().selfadjointView<Eigen::Lower>()), g0);
  EXPECT_TRUE(tier.PlanRefresh(RefreshMode::kForceFactorUpdate).ok());

  fpga::OpCounts counts;
  ASSERT_TRUE(tier.Forget(std::vector<int>{2}, decay, &counts).ok());
  EXPECT_EQ(counts.fp64_macs, static_cast<uint64_t>(d * (d + 1) / 2 + d * 3));
  ASSERT_TRUE(tier.Absorb(data.features.bottomRows(10), Classes(tier, data.labels, 20, 30)).ok());
  // G = decay (G0 - lambda I) + lambda I + H^T H;  Q = decay Q0 (columns 1, 2 zeroed) + H^T Y.
  const Eigen::MatrixXd h = data.features.bottomRows(10).cast<double>();
  Eigen::MatrixXd y = Eigen::MatrixXd::Zero(10, tier.num_classes());
  for (int i = 0; i < 10; ++i) y(i, tier.ClassIndex(data.labels[20 + i])) = 1;
  const Eigen::MatrixXd id = Eigen::MatrixXd::Identity(d, d);
  const Eigen::MatrixXd g = decay * (g0 - lambda * id) + lambda * id + h.transpose() * h;
  q.col(2).setZero();
  q = decay * q + h.transpose() * y;
  EXPECT_LT((Eigen::MatrixXd(tier.gram().selfadjointView<Eigen::Lower>()) - g).norm() / g.norm(),
            1e-14);
  EXPECT_LT((Eigen::MatrixXd(tier.cross()) - q).norm() / q.norm(), 1e-14);
  EXPECT_EQ(tier.Refresh(RefreshMode::kForceFactorUpdate).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(tier.Refresh().ok());
  EXPECT_EQ(tier.last_refresh().path, RefreshPath::kRefactor);
}

TEST(UpperTierTest, ForgettingOfOneIsExactlyTheDefault) {
  LabelledFeatures data = MakeClusters(500, 20, 3, 8);
  UpperTier plain(20, 3.0);
  UpperTierOptions options;
  options.forgetting = 1.0;
  UpperTier forgetting(20, 3.0, options);
  for (int begin = 0; begin < 500; begin += 50) {
    ASSERT_TRUE(plain
                    .Absorb(data.features.middleRows(begin, 50),
                            Classes(plain, data.labels, begin, begin + 50))
                    .ok());
    ASSERT_TRUE(forgetting
                    .Absorb(data.features.middleRows(begin, 50),
                            Classes(forgetting, data.labels, begin, begin + 50))
                    .ok());
  }
  const MatrixD a = plain.gram().triangularView<Eigen::Lower>();
  const MatrixD b = forgetting.gram().triangularView<Eigen::Lower>();
  EXPECT_EQ(a, b);
  EXPECT_EQ(plain.cross(), forgetting.cross());
}

TEST(UpperTierTest, ForgettingFollowsALabelSwapFaster) {
  // Two classes; after 2,000 samples their labels swap. With alpha < 1 the old mapping fades and the
  // readout follows the new one within a few hundred samples; with alpha = 1 the old samples still
  // outweigh the new ones.
  const int d = 16;
  std::mt19937_64 rng(17);
  std::normal_distribution<float> normal;
  MatrixF centres(2, d);
  for (Eigen::Index i = 0; i < centres.size(); ++i) centres.data()[i] = normal(rng);
  auto batch = [&](int rows, bool swapped, MatrixF& features, std::vector<std::string>& labels) {
    features.resize(rows, d);
    labels.clear();
    for (int i = 0; i < rows; ++i) {
      const int c = static_cast<int>(rng() % 2);
      for (int j = 0; j < d; ++j) features(i, j) = centres(c, j) + normal(rng);
      labels.push_back((c == 1) != swapped ? "b" : "a");
    }
  };
  UpperTierOptions forgetful_options;
  forgetful_options.forgetting = 0.8;
  UpperTier exact(d, 1.0), forgetful(d, 1.0, forgetful_options);
  MatrixF features;
  std::vector<std::string> labels;
  for (int b = 0; b < 40; ++b) {  // 2,000 samples of the old mapping
    batch(50, false, features, labels);
    ASSERT_TRUE(exact.Absorb(features, Classes(exact, labels, 0, 50)).ok());
    ASSERT_TRUE(forgetful.Absorb(features, Classes(forgetful, labels, 0, 50)).ok());
  }
  for (int b = 0; b < 8; ++b) {  // 400 samples of the new one
    batch(50, true, features, labels);
    ASSERT_TRUE(exact.Absorb(features, Classes(exact, labels, 0, 50)).ok());
    ASSERT_TRUE(forgetful.Absorb(features, Classes(forgetful, labels, 0, 50)).ok());
  }
  MatrixF held_out;
  std::vector<std::string> held_out_labels;
  batch(1000, true, held_out, held_out_labels);
  absl::StatusOr<Readout> exact_readout = exact.Refresh(), forgetful_readout = forgetful.Refresh();
  ASSERT_TRUE(exact_readout.ok() && forgetful_readout.ok());
  const double exact_accuracy = Accuracy(*exact_readout, held_out, held_out_labels);
  const double forgetful_accuracy = Accuracy(*forgetful_readout, held_out, held_out_labels);
  EXPECT_LT(exact_accuracy, 0.5);  // still mostly the old mapping
  EXPECT_GT(forgetful_accuracy, 0.9);
}

TEST(UpperTierTest, ClassIncrementalPhasesEndAtTheJointReadout) {
  // Ten classes arriving two per phase in five phases; no sample is kept between phases. The
  // statistics after the last phase are the joint ones, so the readout is the joint readout.
  const int n = 5000, d = 48;
  LabelledFeatures data = MakeClusters(n, d, 10, 13);
  UpperTier joint(d, 5.0);
  ASSERT_TRUE(joint.Absorb(data.features, Classes(joint, data.labels, 0, n)).ok());
  UpperTier phased(d, 5.0);
  for (int phase = 0; phase < 5; ++phase) {
    std::vector<int> rows;
    for (int i = 0; i < n; ++i) {
      const int c = data.labels[i][1] - '0';
      if (c / 2 == phase) rows.push_back(i);
    }
    MatrixF features(static_cast<Eigen::Index>(rows.size()), d);
    std::vector<std::string> labels;
    for (size_t r = 0; r < rows.size(); ++r) {
      features.row(static_cast<Eigen::Index>(r)) = data.features.row(rows[r]);
      labels.push_back(data.labels[rows[r]]);
    }
    ASSERT_TRUE(phased.AbsorbLabeled(features, labels).ok());
    EXPECT_EQ(phased.num_classes(), 2 * (phase + 1));
    ASSERT_TRUE(phased.Refresh().ok());
  }
  absl::StatusOr<Readout> a = joint.Solve(), b = phased.Refresh();
  ASSERT_TRUE(a.ok() && b.ok());
  // Same classes, possibly in another order: compare column by label.
  for (int c = 0; c < 10; ++c) {
    const std::string& label = b->labels[c];
    const int j = joint.ClassIndex(label);
    ASSERT_GE(j, 0);
    EXPECT_LT((b->weights.col(c) - a->weights.col(j)).norm() / a->weights.col(j).norm(), 1e-6)
        << label;
  }
}

TEST(UpperTierTest, TwentyThousandSingleSampleUpdatesStayStable) {
  // The short version of strata-bench-upper's 1,000,000-update stability run.
  const int d = 256, updates = 20000;
  std::mt19937_64 rng(23);
  std::normal_distribution<float> normal;
  UpperTier tier(d, 1.0);
  for (int c = 0; c < 4; ++c) tier.ClassIndexOrAdd(absl::StrCat("c", c));
  MatrixF row(1, d);
  MatrixF probe(200, d);
  for (Eigen::Index i = 0; i < probe.size(); ++i) probe.data()[i] = normal(rng);
  absl::StatusOr<Readout> readout;
  int factor_updates = 0;
  for (int i = 0; i < updates; ++i) {
    const int c = static_cast<int>(rng() % 4);
    // Correlated features with very different scales: a harder G than isotropic noise.
    for (int j = 0; j < d; ++j) {
      row(0, j) = (j % 8 == 0 ? 30.0f : 1.0f) * normal(rng) + (j < 8 ? c : 0);
    }
    ASSERT_TRUE(tier.Absorb(row, std::vector<int>{c}).ok());
    if ((i + 1) % 10 == 0) {  // 10 rows: 3 k D^2 < D^3 / 3 / 2, the factor-update path
      readout = tier.Refresh();
      ASSERT_TRUE(readout.ok()) << readout.status();
      ASSERT_TRUE(readout->weights.allFinite());
      ASSERT_GT(tier.last_refresh().min_pivot, 0);
      factor_updates += tier.last_refresh().path == RefreshPath::kFactorUpdate;
    }
  }
  EXPECT_GT(factor_updates, 1500);  // the cheap path did most of the 2,000 refreshes
  EXPECT_TRUE(tier.gram().allFinite());
  // G is SPD: a fresh Cholesky of its lower triangle succeeds with positive pivots.
  Eigen::LLT<Eigen::MatrixXd> cholesky(Eigen::MatrixXd(tier.gram()));
  ASSERT_EQ(cholesky.info(), Eigen::Success);
  EXPECT_GT(Eigen::MatrixXd(cholesky.matrixL()).diagonal().minCoeff(), 0);
  // Predictions from the incrementally refreshed readout match a fresh solve.
  absl::StatusOr<Readout> fresh = tier.Solve();
  ASSERT_TRUE(fresh.ok());
  const MatrixF a = readout->Scores(probe), b = fresh->Scores(probe);
  EXPECT_LT((a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff(), 1e-5);
  EXPECT_LT(RelativeDifference(readout->weights, fresh->weights), 1e-5);
}

}  // namespace
}  // namespace strata::model
