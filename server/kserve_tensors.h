// KServe v2 tensors to and from strata.v1 Predict messages: what the KServe front-end
// (server/kserve_service.h) does between the wire and the batcher, free of gRPC calls.
//
// A ModelInfer request carries one input tensor: for an image model "image", UINT8 or FP32, shape
// [N, S], its N x S elements either typed (InferTensorContents) or raw (raw_input_contents,
// little-endian); for a text model "text", BYTES, shape [N], its N texts typed (bytes_contents)
// or raw (each a u32 little-endian length then its bytes, as Triton serialises BYTES). It becomes
// a strata.v1 PredictRequest of N samples (pixels for UINT8, values for FP32, text for BYTES), so
// the samples run through exactly what strata.v1 Predict runs (which validates each text). The PredictResponse becomes the
// requested output tensors: "label" BYTES [N], "class_index" INT64 [N], "scores" FP32 [N, C], in
// raw_output_contents when the request was raw, in typed contents otherwise.
//
// Every function here is pure and thread-safe. Errors are INVALID_ARGUMENT naming the tensor and
// what was expected, except a batch over the limit (RESOURCE_EXHAUSTED, as strata.v1's).
#ifndef STRATA_SERVER_KSERVE_TENSORS_H_
#define STRATA_SERVER_KSERVE_TENSORS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "model/feature_extractor.h"
#include "strata/v1/strata.pb.h"

namespace strata::server {

// The tensor names of the served model (proto/inference/grpc_service.proto).
inline constexpr char kKServeInputName[] = "image";
inline constexpr char kKServeTextInputName[] = "text";
inline constexpr char kKServeLabelOutput[] = "label";
inline constexpr char kKServeClassIndexOutput[] = "class_index";
inline constexpr char kKServeScoresOutput[] = "scores";

enum class KServeOutput { kLabel, kClassIndex, kScores };

// What a ModelInfer request asks for, once read.
struct InferPlan {
  // The request's image tensor as N strata.v1 samples.
  v1::PredictRequest predict;
  // The outputs to return, in order (default: label, class_index).
  std::vector<KServeOutput> outputs;
  // The request used raw_input_contents: the outputs go in raw_output_contents.
  bool raw = false;
};

// Reads `request`'s tensors for a model that takes `kind` (images of kind.image.size() values, or
// texts) and a batch limit of `max_batch`. Checks the input's name, datatype, shape, element count
// and values (UINT8 elements <= 255, FP32 finite; a raw BYTES tensor's framing) and the requested
// outputs (known names, each once, no "classification" parameter). Does not look at the model
// name or version.
absl::StatusOr<InferPlan> ReadInferRequest(const inference::ModelInferRequest& request,
                                           const model::InputKind& kind, int max_batch);

// Writes the outputs `plan` asks for from `predicted` (which has one prediction per image of
// plan.predict, with scores if plan asked for "scores") into `response` (outputs and, for a raw
// plan, raw_output_contents). Leaves the response's other fields alone.
void WriteInferOutputs(const InferPlan& plan, const v1::PredictResponse& predicted,
                       inference::ModelInferResponse* response);

}  // namespace strata::server

#endif  // STRATA_SERVER_KSERVE_TENSORS_H_
