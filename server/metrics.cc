#include "server/metrics.h"

#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace strata::server {

const char* RpcMethodName(RpcMethod method) {
  switch (method) {
    case RpcMethod::kPredict:
      return "Predict";
    case RpcMethod::kExtractFeatures:
      return "ExtractFeatures";
    case RpcMethod::kUpdate:
      return "Update";
    case RpcMethod::kGetModelInfo:
      return "GetModelInfo";
    case RpcMethod::kGetStats:
      return "GetStats";
    case RpcMethod::kSnapshot:
      return "Snapshot";
    case RpcMethod::kServerLive:
      return "ServerLive";
    case RpcMethod::kServerReady:
      return "ServerReady";
    case RpcMethod::kModelReady:
      return "ModelReady";
    case RpcMethod::kServerMetadata:
      return "ServerMetadata";
    case RpcMethod::kModelMetadata:
      return "ModelMetadata";
    case RpcMethod::kModelInfer:
      return "ModelInfer";
    case RpcMethod::kRepositoryIndex:
      return "RepositoryIndex";
  }
  return "?";
}

// The series read from the service at scrape time. Registered with the Exposer beside the registry.
class Metrics::StateCollectable final : public prometheus::Collectable {
 public:
  explicit StateCollectable(const Metrics* metrics) : metrics_(metrics) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily energy{
        "strata_energy_joules_total",
        "Estimated joules spent by each model, by tier and phase (the per-operation energy model "
        "of GetStats).",
        prometheus::MetricType::Counter,
        {}};
    prometheus::MetricFamily version{"strata_model_version",
                                     "Version number of each served model's current version.",
                                     prometheus::MetricType::Gauge,
                                     {}};
    prometheus::MetricFamily backend{
        "strata_backend_info",
        "Always 1; the labels say where each model's lower tier computes (float, cpu, emu, xrt) "
        "and which energy table prices the work.",
        prometheus::MetricType::Gauge,
        {}};
    for (const ServedState& state : metrics_->ReadState()) {
      auto add_energy = [&energy, &state](const char* tier, const char* phase, double joules) {
        prometheus::ClientMetric metric;
        metric.label = {{"model", state.model}, {"phase", phase}, {"tier", tier}};
        metric.counter.value = joules;
        energy.metric.push_back(std::move(metric));
      };
      add_energy("lower", "lower_tier_inference", state.lower_tier_inference_joules);
      add_energy("upper", "readout_inference", state.readout_inference_joules);
      add_energy("upper", "absorb", state.absorb_joules);
      add_energy("upper", "refresh", state.refresh_joules);
      if (!state.loaded) continue;
      prometheus::ClientMetric value;
      value.label = {{"model", state.model}};
      value.gauge.value = static_cast<double>(state.model_version);
      version.metric.push_back(std::move(value));
      prometheus::ClientMetric info;
      info.label = {
          {"device", state.device}, {"energy_table", state.energy_table}, {"model", state.model}};
      info.gauge.value = 1;
      backend.metric.push_back(std::move(info));
    }
    std::vector<prometheus::MetricFamily> families;
    for (prometheus::MetricFamily* family : {&energy, &version, &backend}) {
      if (!family->metric.empty()) families.push_back(std::move(*family));
    }
    return families;
  }

 private:
  const Metrics* const metrics_;
};

const std::vector<double>& Metrics::LatencyBuckets() {
  static const auto* buckets =
      new std::vector<double>{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *buckets;
}

const std::vector<double>& Metrics::BatchBuckets() {
  static const auto* buckets =
      new std::vector<double>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  return *buckets;
}

Metrics::Metrics(const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()),
      state_(std::make_shared<StateCollectable>(this)) {
  prometheus::Registry& registry = *registry_;
  requests_ =
      &prometheus::BuildCounter()
           .Name("strata_rpc_requests_total")
           .Help("Finished strata.v1.Strata and KServe v2 calls, by method and gRPC status code.")
           .Register(registry);
  auto& latency = prometheus::BuildHistogram()
                      .Name("strata_rpc_latency_seconds")
                      .Help("Time from a call's arrival in the service to its Finish(), by method.")
                      .Register(registry);
  for (int m = 0; m < kNumRpcMethods; ++m) {
    latency_[m] =
        &latency.Add({{"method", RpcMethodName(static_cast<RpcMethod>(m))}}, LatencyBuckets());
  }
  predict_batch_ = &prometheus::BuildHistogram()
                        .Name("strata_predict_batch_images")
                        .Help("Images per Predict or KServe ModelInfer request.")
                        .Register(registry)
                        .Add({}, BatchBuckets());
  lower_tier_batch_ = &prometheus::BuildHistogram()
                           .Name("strata_lower_tier_batch_rows")
                           .Help(
                               "Rows per lower-tier run on the inference path (with dynamic "
                               "batching, the images of several requests).")
                           .Register(registry)
                           .Add({}, BatchBuckets());
  samples_absorbed_ = &prometheus::BuildCounter()
                           .Name("strata_samples_absorbed_total")
                           .Help("Labelled samples absorbed into the upper tier's statistics.")
                           .Register(registry)
                           .Add({});
  samples_rejected_ = &prometheus::BuildCounter()
                           .Name("strata_samples_rejected_total")
                           .Help("Update samples rejected as invalid (bad label or pixels).")
                           .Register(registry)
                           .Add({});
  update_messages_ = &prometheus::BuildCounter()
                          .Name("strata_update_messages_total")
                          .Help("Update stream messages processed.")
                          .Register(registry)
                          .Add({});
  auto& refreshes = prometheus::BuildCounter()
                        .Name("strata_refreshes_total")
                        .Help(
                            "Upper-tier versions published, by solve path (refactor: Cholesky "
                            "from scratch; factor_update: rank-k update of the kept factor).")
                        .Register(registry);
  refreshes_refactor_ = &refreshes.Add({{"path", "refactor"}});
  refreshes_factor_update_ = &refreshes.Add({{"path", "factor_update"}});
  up_ = &prometheus::BuildGauge()
             .Name("strata_up")
             .Help("1 while the server reports SERVING (model loaded, state recovered), else 0.")
             .Register(registry)
             .Add({});
  prometheus::BuildGauge()
      .Name("strata_build_info")
      .Help("Always 1; the label is the strata-server version.")
      .Register(registry)
      .Add({{"version", version}})
      .Set(1);
}

Metrics::~Metrics() {
  absl::MutexLock lock(&exposer_mu_);
  exposer_.reset();
}

absl::StatusOr<int> Metrics::Serve(const std::string& address) {
  absl::MutexLock lock(&exposer_mu_);
  if (exposer_ != nullptr) return absl::InvalidArgumentError("the metrics endpoint is already up");
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Two threads: a scrape every few seconds needs no more, and the cores belong to the model.
    exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  exposer->RegisterCollectable(registry_);
  exposer->RegisterCollectable(state_);
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty() || ports[0] <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": no listening port"));
  }
  exposer_ = std::move(exposer);
  return ports[0];
}

std::string Metrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<prometheus::MetricFamily> state = state_->Collect();
  families.insert(families.end(), std::make_move_iterator(state.begin()),
                  std::make_move_iterator(state.end()));
  return prometheus::TextSerializer().Serialize(families);
}

void Metrics::ObserveRpc(RpcMethod method, absl::StatusCode code, absl::Duration latency) {
  const int m = static_cast<int>(method);
  int c = static_cast<int>(code);
  if (c < 0 || c >= kNumCodes) c = static_cast<int>(absl::StatusCode::kUnknown);
  std::atomic<prometheus::Counter*>& slot = requests_by_[m][c];
  prometheus::Counter* counter = slot.load(std::memory_order_acquire);
  if (counter == nullptr) {
    // First call with this pair: bind it. Family::Add returns the existing series for the same
    // labels, so two threads racing here get the same counter.
    counter =
        &requests_->Add({{"method", RpcMethodName(method)},
                         {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}});
    slot.store(counter, std::memory_order_release);
  }
  counter->Increment();
  latency_[m]->Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::ObservePredictBatch(int images) { predict_batch_->Observe(images); }

void Metrics::ObserveLowerTierBatch(int rows) { lower_tier_batch_->Observe(rows); }

void Metrics::AddUpdateMessage(int absorbed, int rejected) {
  update_messages_->Increment();
  if (absorbed > 0) samples_absorbed_->Increment(absorbed);
  if (rejected > 0) samples_rejected_->Increment(rejected);
}

void Metrics::AddRefresh(model::RefreshPath path) {
  (path == model::RefreshPath::kFactorUpdate ? refreshes_factor_update_ : refreshes_refactor_)
      ->Increment();
}

void Metrics::SetServing(bool serving) { up_->Set(serving ? 1 : 0); }

void Metrics::SetStateSource(StateSource source) {
  absl::MutexLock lock(&source_mu_);
  source_ = std::move(source);
}

std::vector<ServedState> Metrics::ReadState() const {
  // Held while the source runs, so SetStateSource(nullptr) waits for a scrape in progress.
  absl::MutexLock lock(&source_mu_);
  return source_ ? source_() : std::vector<ServedState>{};
}

}  // namespace strata::server
