#include "update/sample.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "model/tensor.h"
#include "unicode/utf8.h"

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

std::optional<size_t> FirstInvalidUtf8Byte(absl::string_view bytes) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const int32_t length = static_cast<int32_t>(bytes.size());
  int32_t offset = 0;
  while (offset < length) {
    const int32_t start = offset;
    UChar32 c = 0;
    U8_NEXT(data, offset, length, c);
    if (c < 0) return static_cast<size_t>(start);
  }
  return std::nullopt;
}

namespace {

absl::Status ValidateText(const InputView& input, const model::InputKind& kind,
                          absl::string_view field) {
  switch (input.kind) {
    case InputView::Kind::kPixels:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".pixels: this model takes text, not pixels"));
    case InputView::Kind::kValues:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".values: this model takes text, not values"));
    case InputView::Kind::kNone:
      return absl::InvalidArgumentError(absl::StrCat(field, ": no text set, expected text"));
    case InputView::Kind::kText:
      break;
  }
  if (input.text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".text: empty text, expected 1..",
                                                   kind.max_text_bytes, " bytes of UTF-8"));
  }
  if (input.text.size() > static_cast<size_t>(kind.max_text_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".text: ", input.text.size(), " bytes, expected at most ", kind.max_text_bytes));
  }
  if (std::optional<size_t> bad = FirstInvalidUtf8Byte(input.text); bad.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".text: not valid UTF-8 at byte ", *bad));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateInput(const InputView& input, const model::InputKind& kind,
                           absl::string_view field) {
  if (kind.is_text()) return ValidateText(input, kind, field);
  const int input_size = kind.image.size();
  switch (input.kind) {
    case InputView::Kind::kText:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".text: this model takes images (pixels or values), not text"));
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
