// Matrix types shared by the model code.
#ifndef STRATA_MODEL_TENSOR_H_
#define STRATA_MODEL_TENSOR_H_

#include <Eigen/Core>
#include <cstdint>
#include <span>

namespace strata::model {

// A batch of vectors, one per row (row-major so that a row is one contiguous sample).
using MatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VectorF = Eigen::VectorXf;

// The value the lower tier takes for a pixel byte: b / 255, in [0, 1]. Every path that turns pixels
// into input (requests, the update log's replay, strata-train, benchmarks and tests) uses this one
// function: replaying the log reproduces the live absorbs bit for bit only while they all agree.
inline float PixelValue(uint8_t pixel) { return static_cast<float>(pixel) / 255.0f; }

// `n` pixel bytes at `pixels` as PixelValue()s at `out`.
inline void PixelsToValues(const uint8_t* pixels, Eigen::Index n, float* out) {
  for (Eigen::Index i = 0; i < n; ++i) out[i] = PixelValue(pixels[i]);
}

// 8-bit images, image after image, as rows of `cols` PixelValue()s: the scale the lower tier takes.
// pixels.size() must be a multiple of cols.
inline MatrixF PixelsToMatrix(std::span<const uint8_t> pixels, Eigen::Index cols) {
  MatrixF m(static_cast<Eigen::Index>(pixels.size()) / cols, cols);
  PixelsToValues(pixels.data(), m.size(), m.data());
  return m;
}

}  // namespace strata::model

#endif  // STRATA_MODEL_TENSOR_H_
