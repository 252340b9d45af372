#include "model/int8_quantization.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"
#include "fpga/kernels/kernels.h"

namespace strata::model {

// std::rint rounds as nearbyint does (only the inexact flag differs) and, unlike it, vectorises.
void QuantizeActivations(const float* x, size_t n, float inverse_scale, int8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    const float v = std::clamp(x[i] * inverse_scale, -kInt8Max, kInt8Max);
    out[i] = static_cast<int8_t>(std::rint(v));
  }
}

float Percentile(std::vector<float>& values, double percentile) {
  if (values.empty()) return 0;
  const double rank = std::ceil(percentile / 100.0 * static_cast<double>(values.size()));
  const size_t k =
      static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size()))) - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return values[k];
}

absl::Status QuantizeDenseWeights(const MatrixF& weights, const VectorF* bias,
                                  float activation_scale, const std::string& layer_name,
                                  fpga::DenseInt8Spec& spec, WeightQuantization& result) {
  const int in_features = spec.in_features;
  const int out_features = spec.out_features;
  spec.weights.resize(static_cast<size_t>(in_features) * out_features);
  result.dequantize.resize(out_features);
  result.min_weight_scale = std::numeric_limits<float>::max();
  result.max_weight_scale = 0;
  if (bias != nullptr) spec.bias.resize(out_features);
  for (int o = 0; o < out_features; ++o) {
    const float max_abs = weights.col(o).cwiseAbs().maxCoeff();
    const float weight_scale = max_abs > 0 ? max_abs / kInt8Max : 1.0f;
    result.min_weight_scale = std::min(result.min_weight_scale, weight_scale);
    result.max_weight_scale = std::max(result.max_weight_scale, weight_scale);
    int8_t* row = spec.weights.data() + static_cast<size_t>(o) * in_features;
    for (int i = 0; i < in_features; ++i) {
      const float v = std::clamp(weights(i, o) / weight_scale, -kInt8Max, kInt8Max);
      row[i] = static_cast<int8_t>(std::nearbyint(v));
    }
    const double accumulator_scale = static_cast<double>(activation_scale) * weight_scale;
    result.dequantize[o] = static_cast<float>(accumulator_scale);
    if (bias != nullptr) {
      const double b = std::nearbyint((*bias)(o) / accumulator_scale);
      if (std::abs(b) > fpga::kernels::kDenseMaxAbsBias) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: bias[%d] = %g is %g accumulator units, beyond the kernel's 2^30",
                            layer_name, o, (*bias)(o), b));
      }
      spec.bias[o] = static_cast<int32_t>(b);
    }
  }
  return absl::OkStatus();
}

}  // namespace strata::model
