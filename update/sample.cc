#include "update/sample.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "model/tensor.h"

namespace strata::update {

absl::Status ValidateLabel(absl::string_view label, absl::string_view field) {
  if (label.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": empty label, expected 1..", kMaxLabelBytes, " bytes"));
  }
  if (label.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": label of ", label.size(), " bytes, expected 1..", kMaxLabelBytes));
  }
  return absl::OkStatus();
}

absl::Status ValidateInput(const InputView& input, int input_size, absl::string_view field) {
  switch (input.kind) {
    case InputView::Kind::kPixels:
      if (input.pixels.size() != static_cast<size_t>(input_size)) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".pixels: expected ", input_size,
                                                       " bytes, got ", input.pixels.size()));
      }
      return absl::OkStatus();
    case InputView::Kind::kValues:
      if (input.values.size() != static_cast<size_t>(input_size)) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".values.values: expected ", input_size, " floats, got ", input.values.size()));
      }
      for (int i = 0; i < input_size; ++i) {
        const float v = input.values[i];
        if (!std::isfinite(v)) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ".values.values[", i, "]: expected a finite float, got ",
                           std::isnan(v) ? "NaN" : (v > 0 ? "Inf" : "-Inf")));
        }
      }
      return absl::OkStatus();
    case InputView::Kind::kNone:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": neither pixels nor values set, expected one of them"));
}

void ConvertInput(const InputView& input, float* out) {
  if (input.kind == InputView::Kind::kPixels) {
    model::PixelsToValues(reinterpret_cast<const uint8_t*>(input.pixels.data()),
                          static_cast<Eigen::Index>(input.pixels.size()), out);
  } else if (input.kind == InputView::Kind::kValues) {
    std::memcpy(out, input.values.data(), sizeof(float) * input.values.size());
  }
}

}  // namespace strata::update
