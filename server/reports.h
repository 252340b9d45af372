// What the service reports about itself: in GetStats, GetModelInfo and the metrics.
//
// CallStats counts finished calls (ok / failed per method, samples predicted and extracted) and
// reports each to the Prometheus metrics; the Fill* functions turn the figures other parts own (the
// update pipeline's counters, the policy's decisions, the energy meter's totals, the served model
// version) into replies.
#ifndef STRATA_SERVER_REPORTS_H_
#define STRATA_SERVER_REPORTS_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/metrics.h"
#include "strata/v1/strata.pb.h"
#include "update/energy_meter.h"
#include "update/model_store.h"
#include "update/pipeline.h"

namespace strata::server {

class CallStats {
 public:
  // `metrics` (not owned, may be null) receives every finished call.
  explicit CallStats(Metrics* metrics) : metrics_(metrics) {}

  // Counts one finished `method` call that started at `start`: ok or failed by `status`, and on
  // success its `samples` in the method's sample counter (Predict, ExtractFeatures). Thread-safe.
  void Finished(RpcMethod method, const grpc::Status& status, int samples, absl::Time start)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The counters so far (the RPC counts and samples_predicted / samples_extracted of Stats).
  v1::Stats Counters() const ABSL_LOCKS_EXCLUDED(mu_);

  Metrics* metrics() const { return metrics_; }

 private:
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  v1::Stats counters_ ABSL_GUARDED_BY(mu_);
};

// The meter's cumulative joules by phase.
update::StreamEnergy MeterTotals(const update::EnergyMeter& meter);

// Sets the four phases of `energy` and their total.
void FillPhaseEnergy(const update::StreamEnergy& phases, v1::PhaseEnergy* energy);

// The meter's cumulative joules by phase and by tier, and its table named `table_name`.
void FillEnergyStats(const update::EnergyMeter& meter, const std::string& table_name,
                     v1::Stats* stats);

// The pipeline's sample counters and its policy's decisions.
void FillUpdateStats(const update::UpdatePipeline& pipeline, v1::Stats* stats);

// The served model's description: input shape, labels, stages, version, device.
void FillModelInfo(const update::ModelVersion& model, int max_batch, v1::ModelInfo* info);

}  // namespace strata::server

#endif  // STRATA_SERVER_REPORTS_H_
