// Small random data sets for the model tests.
#ifndef STRATA_TESTS_MODEL_TEST_UTIL_H_
#define STRATA_TESTS_MODEL_TEST_UTIL_H_

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/architecture.h"
#include "model/tensor.h"

namespace strata::model {

// `n` feature rows of width `d` drawn from 3 Gaussian clusters, with labels "c0".."c2".
struct LabelledFeatures {
  MatrixF features;
  std::vector<std::string> labels;
};

inline LabelledFeatures MakeClusters(int n, int d, int classes = 3, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  MatrixF centres(classes, d);
  for (Eigen::Index i = 0; i < centres.size(); ++i) centres.data()[i] = 2 * normal(rng);
  LabelledFeatures out{MatrixF(n, d), {}};
  for (int i = 0; i < n; ++i) {
    const int c = static_cast<int>(rng() % classes);
    for (int j = 0; j < d; ++j) out.features(i, j) = centres(c, j) + normal(rng);
    out.labels.push_back(absl::StrCat("c", c));
  }
  return out;
}

// Images with values in [0, 1]: smooth blobs, so PCA has structure to find.
inline MatrixF MakeImages(int n, int height, int width, uint64_t seed = 2) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  MatrixF images(n, height * width);
  for (int i = 0; i < n; ++i) {
    const float cy = uniform(rng) * height, cx = uniform(rng) * width;
    const float radius = 1.0f + 3.0f * uniform(rng);
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const float r2 = (y - cy) * (y - cy) + (x - cx) * (x - cx);
        images(i, y * width + x) =
            std::min(1.0f, std::exp(-r2 / (radius * radius)) + 0.1f * uniform(rng));
      }
    }
  }
  return images;
}

// A small lower tier with two convs and every stage kind, for 10x8 images (MakeImages(n, 10, 8)).
inline Architecture SmallArchitecture() {
  absl::StatusOr<Architecture> a = ParseArchitecture(R"(
    input 10 8 1
    conv patch=3 filters=4 pca_images=50
    split_relu
    pool size=2            # 5x4x8
    conv patch=3 filters=6 center=0
    split_relu
    pool size=2            # 2x2x12: the odd row is dropped
    sqrt
    standardise
    expand units=7 bias_scale=0.5
    elm_ae units=5 lambda=0.1
  )");
  EXPECT_TRUE(a.ok()) << a.status();
  return *a;
}

}  // namespace strata::model

#endif  // STRATA_TESTS_MODEL_TEST_UTIL_H_
