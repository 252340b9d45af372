#include "server/reports.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"

namespace strata::server {
namespace {

void CountCall(v1::RpcCount* count, const grpc::Status& status) {
  if (status.ok()) {
    count->set_ok(count->ok() + 1);
  } else {
    count->set_failed(count->failed() + 1);
  }
}

}  // namespace

void CallStats::Finished(RpcMethod method, const grpc::Status& status, int samples,
                         absl::Time start) {
  {
    absl::MutexLock lock(&mu_);
    switch (method) {
      case RpcMethod::kPredict:
        CountCall(counters_.mutable_predict(), status);
        if (status.ok()) counters_.set_samples_predicted(counters_.samples_predicted() + samples);
        break;
      case RpcMethod::kExtractFeatures:
        CountCall(counters_.mutable_extract_features(), status);
        if (status.ok()) counters_.set_samples_extracted(counters_.samples_extracted() + samples);
        break;
      case RpcMethod::kUpdate:
        CountCall(counters_.mutable_update(), status);
        break;
      case RpcMethod::kGetModelInfo:
        CountCall(counters_.mutable_get_model_info(), status);
        break;
      case RpcMethod::kGetStats:
      case RpcMethod::kSnapshot:
        break;  // Stats has no counters for them
      case RpcMethod::kServerLive:
      case RpcMethod::kServerReady:
      case RpcMethod::kModelReady:
      case RpcMethod::kServerMetadata:
      case RpcMethod::kModelMetadata:
      case RpcMethod::kModelInfer:
      case RpcMethod::kRepositoryIndex:
        break;  // KServe v2's (server/kserve_service.h): counted in the metrics only
    }
  }
  if (metrics_ == nullptr) return;
  if (method == RpcMethod::kPredict) metrics_->ObservePredictBatch(samples);
  metrics_->ObserveRpc(method, static_cast<absl::StatusCode>(status.error_code()),
                       absl::Now() - start);
}

v1::Stats CallStats::Counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void FillPhaseEnergy(const update::StreamEnergy& phases, v1::PhaseEnergy* energy) {
  energy->set_lower_tier_inference_joules(phases.lower_tier_inference);
  energy->set_readout_inference_joules(phases.readout_inference);
  energy->set_absorb_joules(phases.absorb);
  energy->set_refresh_joules(phases.refresh);
  energy->set_total_joules(phases.lower_tier_inference + phases.readout_inference + phases.absorb +
                           phases.refresh);
}

update::StreamEnergy MeterTotals(const update::EnergyMeter& meter) {
  const std::array<update::PhaseEnergy, update::kNumEnergyPhases> totals = meter.Totals();
  const auto joules = [&totals](update::EnergyPhase phase) {
    return totals[static_cast<int>(phase)].joules;
  };
  update::StreamEnergy phases;
  phases.lower_tier_inference = joules(update::EnergyPhase::kLowerTierInference);
  phases.readout_inference = joules(update::EnergyPhase::kReadoutInference);
  phases.absorb = joules(update::EnergyPhase::kAbsorb);
  phases.refresh = joules(update::EnergyPhase::kRefresh);
  return phases;
}

void FillEnergyStats(const update::EnergyMeter& meter, const std::string& table_name,
                     v1::Stats* stats) {
  const update::StreamEnergy phases = MeterTotals(meter);
  FillPhaseEnergy(phases, stats->mutable_energy());
  stats->mutable_energy_by_tier()->set_lower_tier_joules(phases.lower_tier_inference);
  stats->mutable_energy_by_tier()->set_upper_tier_joules(phases.readout_inference + phases.absorb +
                                                         phases.refresh);
  v1::EnergyTable* table = stats->mutable_energy_table();
  table->set_name(table_name);
  table->set_int8_mac_pj(meter.table().int8_mac_pj);
  table->set_fp32_mac_pj(meter.table().fp32_mac_pj);
  table->set_fp64_mac_pj(meter.table().fp64_mac_pj);
  table->set_dram_pj_per_byte(meter.table().dram_pj_per_byte);
  table->set_host_link_pj_per_byte(meter.table().host_link_pj_per_byte);
}

void FillUpdateStats(const update::UpdatePipeline& pipeline, v1::Stats* stats) {
  const update::PipelineCounters updates = pipeline.counters();
  stats->set_samples_absorbed(updates.samples_absorbed);
  stats->set_samples_rejected(updates.samples_rejected);
  stats->set_updates_applied(updates.updates_applied);
  stats->set_prequential_samples(updates.prequential_samples);
  stats->set_prequential_errors(updates.prequential_errors);
  stats->set_pending_samples(updates.pending_samples);
  stats->set_samples_skipped(updates.samples_skipped_confident);
  if (updates.samples_skipped_confident > 0) {
    v1::SampleCount* skipped = stats->add_skipped_by_reason();
    skipped->set_reason("confident-correct");
    skipped->set_count(updates.samples_skipped_confident);
  }
  stats->set_gram_staged_samples(updates.gram_staged_samples);

  const update::UpdatePolicy& policy = pipeline.policy();
  const update::UpdatePolicyStats decisions = policy.Stats();
  stats->set_update_policy(std::string(policy.name()));
  for (int i = 0; i < update::kNumDecisionReasons; ++i) {
    const auto reason = static_cast<update::DecisionReason>(i);
    const uint64_t count = decisions.count(reason);
    if (count == 0) continue;
    v1::DecisionCount* decision = stats->add_decisions();
    decision->set_reason(std::string(update::DecisionReasonName(reason)));
    decision->set_applied(update::DecisionReasonApplies(reason));
    decision->set_count(count);
  }
  stats->set_drift_alarms(decisions.drift_alarms);
  stats->set_classes_forgotten(decisions.classes_forgotten);
  if (policy.kind() == update::PolicyKind::kEnergyAware) {
    stats->set_budget_balance_joules(decisions.budget_balance_joules);
  }
}

void FillModelInfo(const update::ModelVersion& model, int max_batch, v1::ModelInfo* info) {
  const model::InputKind kind = model.extractor->input_kind();
  info->set_input_kind(kind.name());
  if (kind.is_text()) {
    info->set_max_text_bytes(kind.max_text_bytes);
    info->set_max_text_tokens(kind.max_tokens);
  } else {
    info->set_input_height(kind.image.height);
    info->set_input_width(kind.image.width);
    info->set_input_channels(kind.image.channels);
    info->set_input_size(model.extractor->input_size());
  }
  info->set_feature_size(model.extractor->feature_size());
  for (const std::string& label : model.readout.labels) info->add_labels(label);
  info->set_model_version(model.version);
  for (std::string& stage : model.extractor->Describe()) {
    info->add_lower_tier_stages(std::move(stage));
  }
  info->set_upper_tier(
      absl::StrCat("ridge readout: ", model.extractor->feature_size(), " features -> ",
                   model.readout.labels.size(),
                   " classes, solved by Cholesky from exact sufficient statistics (lambda ",
                   model.ridge_lambda, ")"));
  info->set_ridge_lambda(model.ridge_lambda);
  info->set_samples_seen(model.samples_seen);
  info->set_max_batch(max_batch);
  info->set_device(model.device());
  info->set_log_position(model.log_position);
  info->set_statistics_digest(model.statistics_digest);
}

}  // namespace strata::server
