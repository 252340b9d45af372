#include "update/update_record.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "update/sample.h"

namespace strata::update {
namespace {

constexpr uint8_t kPixels = 1;
constexpr uint8_t kValues = 2;
constexpr uint8_t kText = 3;  // format version 2

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Reads a T at `offset` if it fits, advancing `offset`.
template <typename T>
bool Get(absl::string_view in, size_t& offset, T& value) {
  if (in.size() - offset < sizeof(T)) return false;
  std::memcpy(&value, in.data() + offset, sizeof(T));
  offset += sizeof(T);
  return true;
}

}  // namespace

UpdateRecordBuilder::UpdateRecordBuilder(int input_size) : input_size_(input_size) {}

void UpdateRecordBuilder::AddLabel(absl::string_view label, uint8_t encoding) {
  Put<uint16_t>(samples_, static_cast<uint16_t>(label.size()));
  samples_.append(label.data(), label.size());
  Put<uint8_t>(samples_, encoding);
  ++count_;
}

void UpdateRecordBuilder::AddPixels(absl::string_view label, absl::string_view pixels) {
  AddLabel(label, kPixels);
  samples_.append(pixels.data(), pixels.size());
}

void UpdateRecordBuilder::AddValues(absl::string_view label, const float* values) {
  AddLabel(label, kValues);
  samples_.append(reinterpret_cast<const char*>(values), sizeof(float) * input_size_);
}

void UpdateRecordBuilder::AddText(absl::string_view label, absl::string_view text) {
  AddLabel(label, kText);
  Put<uint32_t>(samples_, static_cast<uint32_t>(text.size()));
  samples_.append(text.data(), text.size());
}

std::string UpdateRecordBuilder::Finish() {
  std::string payload;
  payload.reserve(8 + samples_.size());
  Put<uint32_t>(payload, static_cast<uint32_t>(input_size_));
  Put<uint32_t>(payload, static_cast<uint32_t>(count_));
  payload += samples_;
  samples_.clear();
  count_ = 0;
  return payload;
}

namespace {

// Reads sample `i`'s input at `offset` (after its encoding byte) into `record`: a text for a text
// model (input_size 0), else an image row. DATA_LOSS naming the sample if it does not fit.
absl::Status DecodeInput(absl::string_view payload, size_t& offset, uint32_t i, uint8_t encoding,
                         int input_size, UpdateRecord& record) {
  auto cut_short = [i] {
    return absl::DataLossError(absl::StrCat("update record: sample ", i, " cut short"));
  };
  if (input_size == 0) {
    uint32_t length = 0;
    if (encoding != kText) {
      return absl::DataLossError(absl::StrCat("update record: sample ", i, " has encoding ",
                                              encoding, " in a text model's record"));
    }
    if (!Get(payload, offset, length)) return cut_short();
    if (payload.size() - offset < length) return cut_short();
    record.inputs.texts.emplace_back(payload.substr(offset, length));
    offset += length;
    return absl::OkStatus();
  }
  float* row = record.inputs.values.row(i).data();
  if (encoding == kPixels) {
    if (payload.size() - offset < static_cast<size_t>(input_size)) return cut_short();
    model::PixelsToValues(reinterpret_cast<const uint8_t*>(payload.data() + offset), input_size,
                          row);
    offset += input_size;
  } else if (encoding == kValues) {
    const size_t bytes = sizeof(float) * input_size;
    if (payload.size() - offset < bytes) return cut_short();
    std::memcpy(row, payload.data() + offset, bytes);
    offset += bytes;
  } else {
    return absl::DataLossError(
        absl::StrCat("update record: sample ", i, " has unknown encoding ", encoding));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<UpdateRecord> DecodeUpdateRecord(absl::string_view payload, int input_size) {
  size_t offset = 0;
  uint32_t stored_input_size = 0, count = 0;
  if (!Get(payload, offset, stored_input_size) || !Get(payload, offset, count)) {
    return absl::DataLossError("update record: shorter than its 8-byte header");
  }
  if (stored_input_size != static_cast<uint32_t>(input_size)) {
    return absl::DataLossError(absl::StrCat("update record: input size ", stored_input_size,
                                            ", but the model's lower tier reads ", input_size,
                                            " (0: a text model)"));
  }
  // Every sample takes at least 2 + 1 + 1 + max(input_size, 4) bytes: bounds `count` before
  // allocating.
  if (count == 0 || count > payload.size() / (4 + static_cast<size_t>(input_size))) {
    return absl::DataLossError(absl::StrCat("update record: implausible sample count ", count));
  }
  UpdateRecord record;
  if (input_size > 0) {
    record.inputs.values.resize(count, input_size);
  } else {
    record.inputs.texts.reserve(count);
  }
  record.labels.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t label_length = 0;
    if (!Get(payload, offset, label_length) || label_length == 0 || label_length > kMaxLabelBytes ||
        payload.size() - offset < label_length) {
      return absl::DataLossError(absl::StrCat("update record: bad label of sample ", i));
    }
    record.labels.emplace_back(payload.substr(offset, label_length));
    offset += label_length;
    uint8_t encoding = 0;
    if (!Get(payload, offset, encoding)) {
      return absl::DataLossError(absl::StrCat("update record: sample ", i, " cut short"));
    }
    if (absl::Status s = DecodeInput(payload, offset, i, encoding, input_size, record); !s.ok()) {
      return s;
    }
  }
  if (offset != payload.size()) {
    return absl::DataLossError(
        absl::StrCat("update record: ", payload.size() - offset, " bytes after the last sample"));
  }
  return record;
}

}  // namespace strata::update
