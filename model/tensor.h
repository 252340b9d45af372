// Matrix types shared by the model code.
#ifndef STRATA_MODEL_TENSOR_H_
#define STRATA_MODEL_TENSOR_H_

#include <cstdint>
#include <span>

#include <Eigen/Core>

namespace strata::model {

// A batch of vectors, one per row (row-major so that a row is one contiguous sample).
using MatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VectorF = Eigen::VectorXf;

// 8-bit images, image after image, as rows of `cols` floats pixel / 255 in [0, 1]: the scale the
// lower tier takes. pixels.size() must be a multiple of cols.
inline MatrixF PixelsToMatrix(std::span<const uint8_t> pixels, Eigen::Index cols) {
  MatrixF m(static_cast<Eigen::Index>(pixels.size()) / cols, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = pixels[i] / 255.0f;
  return m;
}

}  // namespace strata::model

#endif  // STRATA_MODEL_TENSOR_H_
