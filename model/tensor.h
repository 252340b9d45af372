// Matrix types shared by the model code.
#ifndef STRATA_MODEL_TENSOR_H_
#define STRATA_MODEL_TENSOR_H_

#include <Eigen/Core>

namespace strata::model {

// A batch of vectors, one per row (row-major so that a row is one contiguous sample).
using MatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VectorF = Eigen::VectorXf;

}  // namespace strata::model

#endif  // STRATA_MODEL_TENSOR_H_
