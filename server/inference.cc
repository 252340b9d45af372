#include "server/inference.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/request_parsing.h"
#include "server/validation.h"

namespace strata::server {
namespace {

// Predict on a model whose upper tier has no class yet (a bundle written with
// strata-train --empty_upper, before any Update brought a label).
absl::Status NoClasses() {
  return absl::FailedPreconditionError(
      "the model has no classes yet: stream labelled samples with Update first");
}

// Appends one Prediction per row of `scores` (samples x classes): the best class and its label,
// and the scores if asked.
template <typename Scores>
void AddPredictions(const Scores& scores, const std::vector<std::string>& labels,
                    bool return_scores, v1::PredictResponse* response) {
  response->mutable_predictions()->Reserve(response->predictions_size() +
                                           static_cast<int>(scores.rows()));
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index best = 0;
    scores.row(i).maxCoeff(&best);
    v1::Prediction* prediction = response->add_predictions();
    prediction->set_label(labels[best]);
    prediction->set_class_index(static_cast<uint32_t>(best));
    if (return_scores) {
      // Row-major: a row's scores are contiguous.
      prediction->mutable_scores()->Add(scores.row(i).data(), scores.row(i).data() + scores.cols());
    }
  }
}

}  // namespace

absl::Status NotLoadedError() {
  return absl::UnavailableError("the model is not loaded yet; retry later");
}

Inference::Inference(update::ModelStore* store, update::EnergyMeter* meter, int max_batch,
                     Metrics* metrics)
    : store_(store), meter_(meter), max_batch_(max_batch), metrics_(metrics) {}

absl::StatusOr<Inference::LowerTierResult> Inference::RunLowerTier(
    const google::protobuf::RepeatedPtrField<v1::Sample>& samples, v1::TierEnergy* energy) {
  LowerTierResult result;
  result.model = store_->Current();
  if (result.model == nullptr) return NotLoadedError();
  absl::StatusOr<model::SampleBatch> batch =
      ReadBatch(samples, result.model->extractor->input_kind(), max_batch_);
  if (!batch.ok()) return batch.status();
  fpga::OpCounts lower_counts;
  absl::StatusOr<model::MatrixF> features = result.model->Features(*batch, &lower_counts);
  if (!features.ok()) return features.status();
  result.features = *std::move(features);
  if (metrics_ != nullptr) {
    metrics_->ObserveLowerTierBatch(static_cast<int>(result.features.rows()));
  }
  energy->set_lower_tier_joules(meter_->Charge(update::EnergyPhase::kLowerTierInference,
                                               lower_counts,
                                               result.model->lower_tier_energy_table));
  return result;
}

absl::Status Inference::ExtractFeatures(const v1::ExtractFeaturesRequest& request,
                                        v1::ExtractFeaturesResponse* response) {
  absl::StatusOr<LowerTierResult> lower =
      RunLowerTier(request.samples(), response->mutable_energy());
  if (!lower.ok()) return lower.status();
  const model::MatrixF& features = lower->features;
  for (Eigen::Index i = 0; i < features.rows(); ++i) {
    auto* values = response->add_features()->mutable_values();
    values->Add(features.row(i).data(), features.row(i).data() + features.cols());
  }
  response->set_model_version(lower->model->version);
  return absl::OkStatus();
}

absl::Status Inference::Predict(const v1::PredictRequest& request, v1::PredictResponse* response) {
  absl::StatusOr<LowerTierResult> lower =
      RunLowerTier(request.samples(), response->mutable_energy());
  if (!lower.ok()) return lower.status();
  const update::ModelVersion& model = *lower->model;
  if (model.readout.labels.empty()) return NoClasses();
  const model::MatrixF scores = model.readout.Scores(lower->features);
  const int rows = static_cast<int>(scores.rows());
  response->mutable_energy()->set_upper_tier_joules(
      meter_->Charge(update::EnergyPhase::kReadoutInference, model.readout.Counts(rows)));
  AddPredictions(scores, model.readout.labels, request.return_scores(), response);
  response->set_model_version(model.version);
  response->set_log_position(model.log_position);
  return absl::OkStatus();
}

int Inference::GatherPredictBatch(std::span<const PredictCall> calls, const model::InputKind& kind,
                                  BatchScratch* scratch, FinishPredict finish) {
  int total = 0;
  for (const PredictCall& call : calls) total += call.request->samples_size();
  // Resized only when the batch's image count changes; row-major, so each image is one row.
  model::SampleBatch& inputs = scratch->inputs;
  inputs.values.resize(kind.is_text() ? 0 : std::max(total, 1), kind.image.size());
  inputs.texts.clear();
  scratch->first_row.assign(calls.size(), -1);
  int rows = 0;
  for (size_t c = 0; c < calls.size(); ++c) {
    const PredictCall& call = calls[c];
    if (call.context->IsCancelled()) {
      finish(call, grpc::Status::CANCELLED);
      continue;
    }
    const auto& samples = call.request->samples();
    absl::Status valid = CheckBatchSize(samples.size(), max_batch_);
    for (int i = 0; valid.ok() && i < samples.size(); ++i) {
      valid = ReadSample(samples[i], kind, absl::StrCat("samples[", i, "]"), &inputs, rows + i);
    }
    if (!valid.ok()) {
      inputs.texts.resize(rows);  // drops the bad call's texts
      finish(call, ToGrpcStatus(valid));
      continue;
    }
    scratch->first_row[c] = rows;
    rows += samples.size();
  }
  // Keeps the first `rows` rows (row-major: the valid requests' images, in order).
  if (rows > 0 && rows < inputs.values.rows()) {
    inputs.values.conservativeResize(rows, Eigen::NoChange);
  }
  return rows;
}

void Inference::PredictBatch(std::span<const PredictCall> calls, BatchScratch* scratch,
                             FinishPredict finish) {
  // One version for the whole batch, so every request in it is answered by exactly one version.
  const std::shared_ptr<const update::ModelVersion> model = store_->Current();
  if (model == nullptr) {
    for (const PredictCall& call : calls) finish(call, ToGrpcStatus(NotLoadedError()));
    return;
  }
  const int rows = GatherPredictBatch(calls, model->extractor->input_kind(), scratch, finish);
  if (rows == 0) return;
  if (model->readout.labels.empty()) {
    for (size_t c = 0; c < calls.size(); ++c) {
      if (scratch->first_row[c] >= 0) finish(calls[c], ToGrpcStatus(NoClasses()));
    }
    return;
  }
  fpga::OpCounts lower_counts;
  absl::StatusOr<model::MatrixF> features = model->Features(scratch->inputs, &lower_counts);
  if (!features.ok()) {
    for (size_t c = 0; c < calls.size(); ++c) {
      if (scratch->first_row[c] >= 0) finish(calls[c], ToGrpcStatus(features.status()));
    }
    return;
  }
  // The lower tier's and the readout's work are exactly proportional to the rows (TierEnergy), so
  // each request is charged its share of the batch: the same joules it would cost alone.
  const double lower_joules = meter_->Charge(update::EnergyPhase::kLowerTierInference, lower_counts,
                                             model->lower_tier_energy_table);
  scratch->scores.resize(rows, static_cast<Eigen::Index>(model->readout.labels.size()));
  scratch->scores.noalias() = *features * model->readout.weights;
  const double readout_joules =
      meter_->Charge(update::EnergyPhase::kReadoutInference, model->readout.Counts(rows));
  for (size_t c = 0; c < calls.size(); ++c) {
    if (scratch->first_row[c] < 0) continue;
    const PredictCall& call = calls[c];
    const int n = call.request->samples_size();
    const double share = static_cast<double>(n) / rows;
    v1::PredictResponse* response = call.response;
    response->mutable_energy()->set_lower_tier_joules(lower_joules * share);
    response->mutable_energy()->set_upper_tier_joules(readout_joules * share);
    AddPredictions(scratch->scores.middleRows(scratch->first_row[c], n), model->readout.labels,
                   call.request->return_scores(), response);
    response->set_model_version(model->version);
    response->set_log_position(model->log_position);
    finish(call, grpc::Status::OK);
  }
}

}  // namespace strata::server
