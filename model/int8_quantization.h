// Symmetric int8 quantisation helpers shared by every int8 model on an fpga::Backend: the image
// lower tier (model/quantized_lower_tier.h) and the text encoder (text/text_encoder.h).
//
// Symmetric (zero points 0), as the kernels require:
//   weights      per output channel o: s_w[o] = max_i |w[o][i]| / 127, w_q = round(w / s_w[o]);
//   activations  x_q = clamp(round(x / s_x), -127, 127), rounding half to even (the default FP
//                environment), with the caller's s_x (per tensor or per row).
#ifndef STRATA_MODEL_INT8_QUANTIZATION_H_
#define STRATA_MODEL_INT8_QUANTIZATION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fpga/backend.h"
#include "model/tensor.h"

namespace strata::model {

inline constexpr float kInt8Max = 127.0f;

// x_q = clamp(round(x * inverse_scale), -127, 127) for n values at x into out.
void QuantizeActivations(const float* x, size_t n, float inverse_scale, int8_t* out);

// The |x| value at `percentile` (in (0, 100]) of `values` (magnitudes); reorders them. 0 if empty.
float Percentile(std::vector<float>& values, double percentile);

// What QuantizeDenseWeights chose, beyond the spec.
struct WeightQuantization {
  std::vector<float> dequantize;  // s_x * s_w[o] per output channel (s_w[o] with s_x = 1)
  float min_weight_scale = 0;     // min and max of s_w over the output channels
  float max_weight_scale = 0;
};

// Quantises one dense layer's float weights per output channel into `spec` (whose in_features and
// out_features must be set): weights is in_features x out_features (w[o][i] = weights(i, o)).
// If `bias` is not null, spec.bias[o] = round(bias[o] / (s_x s_w[o])) in int32, which needs one
// activation scale s_x for every row; callers with per-row scales pass null and add the bias after
// dequantising. INVALID_ARGUMENT, its message starting with `layer_name`, if a bias is beyond the
// kernel's 2^30.
absl::Status QuantizeDenseWeights(const MatrixF& weights, const VectorF* bias,
                                  float activation_scale, const std::string& layer_name,
                                  fpga::DenseInt8Spec& spec, WeightQuantization& result);

}  // namespace strata::model

#endif  // STRATA_MODEL_INT8_QUANTIZATION_H_
