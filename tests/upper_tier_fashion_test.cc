// The upper tier on real Fashion-MNIST features from a small lower tier: class-incremental
// learning (five phases of two classes, no sample kept) ends at the joint-training readout and
// accuracy.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"

namespace strata::model {
namespace {

double Accuracy(const Readout& readout, const MatrixF& features,
                const std::vector<std::string>& labels) {
  return 100.0 * readout.CountCorrect(features, labels) / features.rows();
}

TEST(UpperTierFashionTest, ClassIncrementalPhasesEqualJointTraining) {
  absl::StatusOr<data::LabeledImages> train = data::Load("fashion-mnist:train", {0, 6000});
  absl::StatusOr<data::LabeledImages> test = data::Load("fashion-mnist:test", {0, 2000});
  ASSERT_TRUE(train.ok()) << train.status();
  ASSERT_TRUE(test.ok()) << test.status();
  LowerTierSpec spec;
  spec.expansion = 512;
  spec.pca_images = 2000;
  const MatrixF train_images = PixelsToMatrix(train->pixels, train->image_size());
  absl::StatusOr<LowerTier> lower = LowerTier::Fit(spec, train_images);
  ASSERT_TRUE(lower.ok()) << lower.status();
  const MatrixF train_features = lower->Features(train_images);
  const MatrixF test_features = lower->Features(PixelsToMatrix(test->pixels, test->image_size()));
  const int d = lower->feature_size();
  const double lambda = 30.0;

  UpperTier joint(d, lambda);
  ASSERT_TRUE(joint.AbsorbLabeled(train_features, train->labels).ok());
  absl::StatusOr<Readout> joint_readout = joint.Solve();
  ASSERT_TRUE(joint_readout.ok()) << joint_readout.status();

  // Phase p brings the classes numbered 2p and 2p+1 (Fashion-MNIST's order); each phase's samples
  // are absorbed and dropped.
  UpperTier phased(d, lambda);
  absl::StatusOr<Readout> phased_readout;
  for (int phase = 0; phase < 5; ++phase) {
    const std::string first = data::kFashionMnistClasses[2 * phase];
    const std::string second = data::kFashionMnistClasses[2 * phase + 1];
    std::vector<Eigen::Index> rows;
    for (size_t i = 0; i < train->size(); ++i) {
      if (train->labels[i] == first || train->labels[i] == second) rows.push_back(i);
    }
    MatrixF features(static_cast<Eigen::Index>(rows.size()), d);
    std::vector<std::string> phase_labels;
    for (size_t r = 0; r < rows.size(); ++r) {
      features.row(static_cast<Eigen::Index>(r)) = train_features.row(rows[r]);
      phase_labels.push_back(train->labels[rows[r]]);
    }
    ASSERT_TRUE(phased.AbsorbLabeled(features, phase_labels).ok());
    phased_readout = phased.Refresh();
    ASSERT_TRUE(phased_readout.ok()) << phased_readout.status();
    EXPECT_EQ(phased.num_classes(), 2 * (phase + 1));
  }
  EXPECT_EQ(phased.samples_seen(), joint.samples_seen());
  ASSERT_EQ(phased_readout->labels.size(), 10u);
  // The class order differs between the two tiers: compare columns by label.
  MatrixF aligned(d, 10);
  for (int c = 0; c < 10; ++c) {
    const int j = phased.ClassIndex(joint_readout->labels[c]);
    ASSERT_GE(j, 0);
    aligned.col(c) = phased_readout->weights.col(j);
  }
  const double relative = (aligned - joint_readout->weights).norm() / joint_readout->weights.norm();
  EXPECT_LT(relative, 1e-6);
  const double joint_accuracy = Accuracy(*joint_readout, test_features, test->labels);
  const double phased_accuracy = Accuracy(*phased_readout, test_features, test->labels);
  EXPECT_NEAR(phased_accuracy, joint_accuracy, 0.05);
  EXPECT_GT(joint_accuracy, 80.0);  // a sanity floor: the features carry the classes
  RecordProperty("joint_accuracy", absl::StrCat(joint_accuracy));
  RecordProperty("phased_accuracy", absl::StrCat(phased_accuracy));
  RecordProperty("relative_difference", absl::StrCat(relative));
}

}  // namespace
}  // namespace strata::model
