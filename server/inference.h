// The model work of ExtractFeatures and Predict, free of gRPC reactors: validating a request's
// samples against the served version, running them through its lower tier and readout (one
// request, or a batch of Predict calls at once), charging the joules and filling the response.
// StrataService (server/service.h) admits and finishes the RPCs and decides where this runs: on the
// PredictBatcher's workers or an inference WorkQueue.
#ifndef STRATA_SERVER_INFERENCE_H_
#define STRATA_SERVER_INFERENCE_H_

#include <memory>
#include <span>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "model/tensor.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "strata/v1/strata.pb.h"
#include "update/energy_meter.h"
#include "update/model_store.h"

namespace strata::server {

// UNAVAILABLE: no model is loaded yet (every RPC's answer until the store holds one).
absl::Status NotLoadedError();

class Inference {
 public:
  // `store` and `meter` are not owned and must outlive this; `metrics` may be null. Requests of
  // more than `max_batch` samples are refused (RESOURCE_EXHAUSTED).
  Inference(update::ModelStore* store, update::EnergyMeter* meter, int max_batch, Metrics* metrics);

  // One request on the current version. UNAVAILABLE before a model is loaded; INVALID_ARGUMENT
  // or RESOURCE_EXHAUSTED naming the bad sample or the batch size; Predict on a model without
  // classes is FAILED_PRECONDITION. Thread-safe.
  absl::Status ExtractFeatures(const v1::ExtractFeaturesRequest& request,
                               v1::ExtractFeaturesResponse* response);
  absl::Status Predict(const v1::PredictRequest& request, v1::PredictResponse* response);

  // Answers a batch of Predict calls with one version: a cancelled or invalid call is finished
  // alone, before compute; the others' samples (images, or texts for a text model) run through the
  // lower tier and the readout at once,
  // each call charged its share of the batch's joules (the same it would cost alone). Calls
  // `finish` exactly once per call. Thread-safe (each worker its own `scratch`).
  using FinishPredict = absl::FunctionRef<void(const PredictCall&, const grpc::Status&)>;
  void PredictBatch(std::span<const PredictCall> calls, BatchScratch* scratch,
                    FinishPredict finish);

 private:
  // The version a request runs on and its samples' lower-tier features.
  struct LowerTierResult {
    std::shared_ptr<const update::ModelVersion> model;
    model::MatrixF features;
  };
  // Validates `samples` against the current version, runs them through its lower tier and charges
  // the lower tier's joules to the meter and to `energy`.
  absl::StatusOr<LowerTierResult> RunLowerTier(
      const google::protobuf::RepeatedPtrField<v1::Sample>& samples, v1::TierEnergy* energy);
  // Validates each call of the batch and copies the valid ones' samples into scratch->inputs (one
  // row per image, or one text per text), recording each call's first row in scratch->first_row
  // (-1: finished here, alone, cancelled or invalid). Returns the rows gathered.
  int GatherPredictBatch(std::span<const PredictCall> calls, const model::InputKind& kind,
                         BatchScratch* scratch, FinishPredict finish);

  update::ModelStore* const store_;
  update::EnergyMeter* const meter_;
  const int max_batch_;
  Metrics* const metrics_;
};

}  // namespace strata::server

#endif  // STRATA_SERVER_INFERENCE_H_
