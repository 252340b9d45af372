#include "server/kserve_tensors.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "update/sample.h"

namespace strata::server {
namespace {

// Raw tensors are little-endian (the protocol's rule); they are copied as they are.
static_assert(std::endian::native == std::endian::little, "raw KServe tensors are little-endian");

using InputTensor = inference::ModelInferRequest::InferInputTensor;
using update::InputView;
using update::ValidateInput;

enum class ImageType { kUint8, kFp32 };

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::StatusOr<KServeOutput> OutputByName(const std::string& name) {
  if (name == kKServeLabelOutput) return KServeOutput::kLabel;
  if (name == kKServeClassIndexOutput) return KServeOutput::kClassIndex;
  if (name == kKServeScoresOutput) return KServeOutput::kScores;
  return Invalid(absl::StrCat("outputs: unknown output \"", name, "\"; this model has \"",
                              kKServeLabelOutput, "\", \"", kKServeClassIndexOutput, "\" and \"",
                              kKServeScoresOutput, "\""));
}

absl::StatusOr<std::vector<KServeOutput>> ReadOutputs(const inference::ModelInferRequest& request) {
  if (request.outputs().empty())
    return std::vector{KServeOutput::kLabel, KServeOutput::kClassIndex};
  std::vector<KServeOutput> outputs;
  for (const auto& requested : request.outputs()) {
    absl::StatusOr<KServeOutput> output = OutputByName(requested.name());
    if (!output.ok()) return output.status();
    if (std::find(outputs.begin(), outputs.end(), *output) != outputs.end()) {
      return Invalid(absl::StrCat("outputs: \"", requested.name(), "\" requested twice"));
    }
    if (requested.parameters().contains("classification")) {
      return Invalid(absl::StrCat("outputs: \"", requested.name(),
                                  "\": the classification extension is not supported; ask for "
                                  "\"label\" and \"scores\" instead"));
    }
    outputs.push_back(*output);
  }
  return outputs;
}

// Checks the one input tensor's name, datatype and shape [N, input_size]; returns its type and N.
absl::StatusOr<std::pair<ImageType, int>> ReadInputHeader(const InputTensor& input, int input_size,
                                                          int max_batch) {
  if (input.name() != kKServeInputName) {
    return Invalid(absl::StrCat("inputs[0]: unknown input \"", input.name(),
                                "\"; this model has one input, \"", kKServeInputName, "\""));
  }
  const std::string field = absl::StrCat("inputs[0] (\"", kKServeInputName, "\")");
  ImageType type;
  if (input.datatype() == "UINT8") {
    type = ImageType::kUint8;
  } else if (input.datatype() == "FP32") {
    type = ImageType::kFp32;
  } else {
    return Invalid(absl::StrCat(field, ": datatype \"", input.datatype(),
                                "\" is not supported; expected UINT8 or FP32"));
  }
  const auto& shape = input.shape();
  if (shape.size() != 2 || shape[1] != input_size || shape[0] < 0) {
    std::string got;
    for (int64_t dim : shape) absl::StrAppend(&got, got.empty() ? "" : ", ", dim);
    return Invalid(absl::StrCat(field, ": shape [", got, "], expected [N, ", input_size,
                                "] with N >= 1 images"));
  }
  if (shape[0] == 0) return Invalid(absl::StrCat(field, ": empty batch (N = 0)"));
  if (shape[0] > max_batch) {
    return absl::ResourceExhaustedError(absl::StrCat(field, ": batch of ", shape[0],
                                                     " images, expected at most ", max_batch,
                                                     " (the server's max_batch)"));
  }
  return std::pair{type, static_cast<int>(shape[0])};
}

int64_t ElementCount(const inference::InferTensorContents& c) {
  return int64_t{c.bool_contents_size()} + c.int_contents_size() + c.int64_contents_size() +
         c.uint_contents_size() + c.uint64_contents_size() + c.fp32_contents_size() +
         c.fp64_contents_size() + c.bytes_contents_size();
}

absl::Status CheckFinite(const float* values, int64_t count, int64_t first_index) {
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      return Invalid(absl::StrCat("inputs[0] (\"", kKServeInputName, "\"): element ",
                                  first_index + i, " is ",
                                  std::isnan(values[i]) ? "NaN" : "infinite",
                                  "; expected finite FP32 values (0 black, 1 white)"));
    }
  }
  return absl::OkStatus();
}

// The typed elements of an N x S image tensor, in uint_contents (UINT8) or fp32_contents (FP32).
absl::Status ReadTypedImages(const InputTensor& input, ImageType type, int n, int input_size,
                             v1::PredictRequest* predict) {
  const inference::InferTensorContents& contents = input.contents();
  const int64_t expected = int64_t{n} * input_size;
  const int64_t in_field =
      type == ImageType::kUint8 ? contents.uint_contents_size() : contents.fp32_contents_size();
  const char* field_name = type == ImageType::kUint8 ? "uint_contents" : "fp32_contents";
  if (in_field != expected || ElementCount(contents) != expected) {
    return Invalid(absl::StrCat("inputs[0] (\"", kKServeInputName, "\"): ", input.datatype(), " [",
                                n, ", ", input_size, "] needs ", expected, " elements in contents.",
                                field_name, " and none elsewhere; got ", in_field, " there and ",
                                ElementCount(contents) - in_field, " in other fields"));
  }
  for (int i = 0; i < n; ++i) {
    v1::Sample* sample = predict->add_samples();
    if (type == ImageType::kUint8) {
      std::string* pixels = sample->mutable_pixels();
      pixels->resize(input_size);
      for (int j = 0; j < input_size; ++j) {
        const uint32_t value = contents.uint_contents(i * input_size + j);
        if (value > 255) {
          return Invalid(absl::StrCat("inputs[0] (\"", kKServeInputName, "\"): element ",
                                      int64_t{i} * input_size + j, " is ", value,
                                      "; UINT8 elements must be at most 255"));
        }
        (*pixels)[j] = static_cast<char>(value);
      }
    } else {
      const float* row = contents.fp32_contents().data() + int64_t{i} * input_size;
      if (absl::Status finite = CheckFinite(row, input_size, int64_t{i} * input_size);
          !finite.ok()) {
        return finite;
      }
      sample->mutable_values()->mutable_values()->Add(row, row + input_size);
    }
  }
  return absl::OkStatus();
}

// The raw bytes of an N x S image tensor: one byte per UINT8 element, four per FP32 element.
absl::Status ReadRawImages(const std::string& raw, ImageType type, int n, int input_size,
                           v1::PredictRequest* predict) {
  const size_t width = type == ImageType::kUint8 ? 1 : sizeof(float);
  const size_t row_bytes = width * input_size;
  if (raw.size() != row_bytes * n) {
    return Invalid(absl::StrCat("raw_input_contents[0]: ", raw.size(), " bytes, expected ",
                                row_bytes * n, " for ",
                                type == ImageType::kUint8 ? "UINT8" : "FP32", " [", n, ", ",
                                input_size, "] (", width, " bytes per element)"));
  }
  std::vector<float> row(type == ImageType::kFp32 ? input_size : 0);
  for (int i = 0; i < n; ++i) {
    const char* bytes = raw.data() + row_bytes * i;
    v1::Sample* sample = predict->add_samples();
    if (type == ImageType::kUint8) {
      sample->set_pixels(bytes, row_bytes);
      continue;
    }
    // memcpy: the bytes need not be aligned for float.
    std::memcpy(row.data(), bytes, row_bytes);
    if (absl::Status finite = CheckFinite(row.data(), input_size, int64_t{i} * input_size);
        !finite.ok()) {
      return finite;
    }
    sample->mutable_values()->mutable_values()->Add(row.begin(), row.end());
  }
  return absl::OkStatus();
}

// Appends `value` as raw little-endian bytes.
template <typename T>
void AppendRaw(T value, std::string* out) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(value));
}

void WriteOutput(KServeOutput output, bool raw, const v1::PredictResponse& predicted,
                 inference::ModelInferResponse::InferOutputTensor* tensor, std::string* bytes) {
  const int n = predicted.predictions_size();
  inference::InferTensorContents* contents = raw ? nullptr : tensor->mutable_contents();
  switch (output) {
    case KServeOutput::kLabel:
      tensor->set_name(kKServeLabelOutput);
      tensor->set_datatype("BYTES");
      tensor->add_shape(n);
      for (const v1::Prediction& p : predicted.predictions()) {
        if (raw) {
          AppendRaw(static_cast<uint32_t>(p.label().size()), bytes);
          bytes->append(p.label());
        } else {
          contents->add_bytes_contents(p.label());
        }
      }
      return;
    case KServeOutput::kClassIndex:
      tensor->set_name(kKServeClassIndexOutput);
      tensor->set_datatype("INT64");
      tensor->add_shape(n);
      for (const v1::Prediction& p : predicted.predictions()) {
        const int64_t index = p.class_index();
        raw ? AppendRaw(index, bytes) : contents->add_int64_contents(index);
      }
      return;
    case KServeOutput::kScores:
      tensor->set_name(kKServeScoresOutput);
      tensor->set_datatype("FP32");
      tensor->add_shape(n);
      tensor->add_shape(n > 0 ? predicted.predictions(0).scores_size() : 0);
      for (const v1::Prediction& p : predicted.predictions()) {
        if (raw) {
          bytes->append(reinterpret_cast<const char*>(p.scores().data()),
                        sizeof(float) * p.scores_size());
        } else {
          contents->mutable_fp32_contents()->Add(p.scores().begin(), p.scores().end());
        }
      }
      return;
  }
}

// A text model's input tensor: "text", BYTES, shape [N] (1..max_batch); returns N.
absl::StatusOr<int> ReadTextHeader(const InputTensor& input, int max_batch) {
  if (input.name() != kKServeTextInputName) {
    return Invalid(absl::StrCat("inputs[0]: unknown input \"", input.name(),
                                "\"; this text model has one input, \"", kKServeTextInputName,
                                "\""));
  }
  const std::string field = absl::StrCat("inputs[0] (\"", kKServeTextInputName, "\")");
  if (input.datatype() != "BYTES") {
    return Invalid(absl::StrCat(field, ": datatype \"", input.datatype(),
                                "\" is not supported; expected BYTES (UTF-8 texts)"));
  }
  if (input.shape_size() != 1 || input.shape(0) < 1) {
    std::string got;
    for (int64_t dim : input.shape()) absl::StrAppend(&got, got.empty() ? "" : ", ", dim);
    return Invalid(absl::StrCat(field, ": shape [", got, "], expected [N] with N >= 1 texts"));
  }
  if (input.shape(0) > max_batch) {
    return absl::ResourceExhaustedError(absl::StrCat(field, ": batch of ", input.shape(0),
                                                     " texts, expected at most ", max_batch,
                                                     " (the server's max_batch)"));
  }
  return static_cast<int>(input.shape(0));
}

// Adds text `i` of the tensor to `predict` if it is one the model takes (as strata.v1 checks
// Sample.text: UTF-8, 1..max_text_bytes), else says which element is wrong and why.
absl::Status AddText(std::string text, int i, const model::InputKind& kind,
                     v1::PredictRequest* predict) {
  InputView view;
  view.kind = InputView::Kind::kText;
  view.text = text;
  absl::Status valid = ValidateInput(
      view, kind, absl::StrCat("inputs[0] (\"", kKServeTextInputName, "\") element ", i));
  if (!valid.ok()) return valid;
  predict->add_samples()->set_text(std::move(text));
  return absl::OkStatus();
}

// The N texts of a text tensor, typed (bytes_contents) or raw (u32 length + bytes each), as
// strata.v1 samples, each checked by AddText.
absl::Status ReadTexts(const inference::ModelInferRequest& request, int n,
                       const model::InputKind& kind, v1::PredictRequest* predict) {
  const InputTensor& input = request.inputs(0);
  const std::string field = absl::StrCat("inputs[0] (\"", kKServeTextInputName, "\")");
  if (request.raw_input_contents().empty()) {
    if (ElementCount(input.contents()) != input.contents().bytes_contents_size() ||
        input.contents().bytes_contents_size() != n) {
      return Invalid(absl::StrCat(field, ": shape [", n, "] needs ", n,
                                  " elements in contents.bytes_contents"));
    }
    for (int i = 0; i < n; ++i) {
      if (absl::Status added = AddText(input.contents().bytes_contents(i), i, kind, predict);
          !added.ok()) {
        return added;
      }
    }
    return absl::OkStatus();
  }
  if (request.raw_input_contents_size() != 1 || ElementCount(input.contents()) != 0) {
    return Invalid(absl::StrCat(field,
                                ": raw_input_contents must hold one entry and contents "
                                "must then be empty"));
  }
  absl::string_view raw = request.raw_input_contents(0);
  for (int i = 0; i < n; ++i) {
    uint32_t length = 0;
    if (raw.size() < sizeof(length)) {
      return Invalid(absl::StrCat(field, ": raw contents end before text ", i, "'s length"));
    }
    std::memcpy(&length, raw.data(), sizeof(length));
    raw.remove_prefix(sizeof(length));
    if (raw.size() < length) {
      return Invalid(absl::StrCat(field, ": raw text ", i, " runs past the end"));
    }
    if (absl::Status added = AddText(std::string(raw.substr(0, length)), i, kind, predict);
        !added.ok()) {
      return added;
    }
    raw.remove_prefix(length);
  }
  if (!raw.empty()) {
    return Invalid(absl::StrCat(field, ": ", raw.size(), " raw bytes after the last text"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<InferPlan> ReadInferRequest(const inference::ModelInferRequest& request,
                                           const model::InputKind& kind, int max_batch) {
  InferPlan plan;
  absl::StatusOr<std::vector<KServeOutput>> outputs = ReadOutputs(request);
  if (!outputs.ok()) return outputs.status();
  plan.outputs = *std::move(outputs);
  const char* input_name = kind.is_text() ? kKServeTextInputName : kKServeInputName;
  if (request.inputs_size() != 1) {
    return Invalid(absl::StrCat("inputs: ", request.inputs_size(),
                                " tensors, expected exactly one, \"", input_name, "\""));
  }
  plan.predict.set_return_scores(std::find(plan.outputs.begin(), plan.outputs.end(),
                                           KServeOutput::kScores) != plan.outputs.end());
  plan.raw = !request.raw_input_contents().empty();
  if (kind.is_text()) {
    absl::StatusOr<int> n = ReadTextHeader(request.inputs(0), max_batch);
    if (!n.ok()) return n.status();
    if (absl::Status read = ReadTexts(request, *n, kind, &plan.predict); !read.ok()) {
      return read;
    }
    return plan;
  }
  const int input_size = kind.image.size();
  const InputTensor& input = request.inputs(0);
  absl::StatusOr<std::pair<ImageType, int>> header = ReadInputHeader(input, input_size, max_batch);
  if (!header.ok()) return header.status();
  const auto [type, n] = *header;
  absl::Status read;
  if (!plan.raw) {
    read = ReadTypedImages(input, type, n, input_size, &plan.predict);
  } else if (request.raw_input_contents_size() != 1) {
    read = Invalid(absl::StrCat("raw_input_contents: ", request.raw_input_contents_size(),
                                " entries, expected one per input (1)"));
  } else if (ElementCount(input.contents()) != 0) {
    read = Invalid(absl::StrCat("inputs[0] (\"", kKServeInputName,
                                "\"): contents must be empty when raw_input_contents is used"));
  } else {
    read = ReadRawImages(request.raw_input_contents(0), type, n, input_size, &plan.predict);
  }
  if (!read.ok()) return read;
  return plan;
}

void WriteInferOutputs(const InferPlan& plan, const v1::PredictResponse& predicted,
                       inference::ModelInferResponse* response) {
  for (KServeOutput output : plan.outputs) {
    std::string* bytes = plan.raw ? response->add_raw_output_contents() : nullptr;
    WriteOutput(output, plan.raw, predicted, response->add_outputs(), bytes);
  }
}

}  // namespace strata::server
