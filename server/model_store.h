// The model a server serves: immutable published versions, and the statistics updates go into.
//
// Readers (Predict, ExtractFeatures, GetModelInfo) call Current() and keep the returned
// std::shared_ptr<const ModelVersion> for the whole request: every sample of the request sees the
// same version, and a version stays alive while any request holds it. Current() is an atomic load;
// it never waits for an Absorb or a Publish (the TensorFlow Serving "servable handle" pattern).
//
// Writers (Update streams) call Absorb() to add labelled feature rows to the upper tier's
// sufficient statistics, then Publish() to solve a new readout from them and swap it in. Absorbed
// samples affect predictions only once a Publish() has run; a Publish() includes everything absorbed
// by any caller before it. Publish() refreshes by model::UpperTier::Refresh(kAuto): a Cholesky
// re-factorisation, or a cheaper rank-k update of the factor the previous refresh kept (so the
// store holds one D x D factor besides G once anything was published after Load()).
#ifndef STRATA_SERVER_MODEL_STORE_H_
#define STRATA_SERVER_MODEL_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/tensor.h"
#include "model/upper_tier.h"

namespace strata::server {

// One published model: the frozen lower tier (shared by every version) and a solved readout.
// Immutable once published, hence safe to read from any number of threads.
struct ModelVersion {
  uint64_t version = 0;
  std::shared_ptr<const model::LowerTier> lower;
  model::Readout readout;  // readout.labels are the classes, in class-index order
  double ridge_lambda = 0;
  uint64_t samples_seen = 0;  // samples in the statistics this readout was solved from
};

class ModelStore {
 public:
  // An empty store: Current() is null until Load() succeeds.
  ModelStore() = default;
  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  // Takes over `bundle`, solves its readout and publishes it as version `bundle.version`.
  // FAILED_PRECONDITION if a model is already loaded; INVALID_ARGUMENT if the lower tier's feature
  // width differs from the upper tier's; the upper tier's Solve() errors otherwise. On error the
  // store is unchanged. Thread-safe.
  absl::Status Load(model::Bundle bundle);

  // The version being served, or null before Load(). Lock-free with respect to writers.
  std::shared_ptr<const ModelVersion> Current() const { return current_.load(); }

  // Adds labelled feature rows to the upper tier's statistics. labels[i] is the label of row i; a
  // label not seen before becomes a new class. Returns the labels that became new classes, in the
  // order first seen. FAILED_PRECONDITION before Load(); INVALID_ARGUMENT if the row count differs
  // from labels.size() or the width from the feature size (then nothing is absorbed). The current
  // version is unchanged until Publish(). Thread-safe; serialised with other Absorb / Publish calls.
  // If `num_classes` is not null it receives the number of classes after the absorb.
  absl::StatusOr<std::vector<std::string>> Absorb(const model::MatrixF& features,
                                                  std::span<const std::string> labels,
                                                  int* num_classes = nullptr);

  // What a refresh would do now (UpperTier::PlanRefresh(kAuto)) and the shapes it would run on,
  // for pricing it before deciding. FAILED_PRECONDITION before Load(). Thread-safe; waits for a
  // running Absorb / Publish (call it from the writer's thread, not a gRPC callback).
  struct RefreshPlan {
    model::RefreshReport report;
    int feature_size = 0;
    int num_classes = 0;
  };
  absl::StatusOr<RefreshPlan> PlanRefresh();

  // Solves the readout from the statistics (UpperTier::Refresh(kAuto)) and publishes it as version
  // current + 1. Returns the published version; if `done` is not null it receives what the refresh
  // did (its report and shapes, for energy accounting). FAILED_PRECONDITION before Load(); the
  // solver's error otherwise (then the current version is unchanged). Readers are not blocked while
  // it solves. Thread-safe; serialised with other Absorb / Publish calls, so versions are published
  // in order.
  absl::StatusOr<std::shared_ptr<const ModelVersion>> Publish(RefreshPlan* done = nullptr);

  // Calls `visit(upper, version)` with the statistics and the current version, with writers
  // excluded for the duration (so the statistics include exactly the Absorb() calls that returned
  // before). For snapshots. FAILED_PRECONDITION before Load(); otherwise OK. Thread-safe; `visit`
  // must not call back into the store.
  absl::Status VisitStatistics(
      absl::FunctionRef<void(const model::UpperTier& upper, uint64_t version)> visit);

 private:
  // Serialises writers. Readers never take it.
  absl::Mutex mu_;
  std::shared_ptr<const model::LowerTier> lower_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<model::UpperTier> upper_ ABSL_GUARDED_BY(mu_);  // null before Load()

  // Written only with mu_ held (so versions increase), read without it.
  std::atomic<std::shared_ptr<const ModelVersion>> current_;
};

}  // namespace strata::server

#endif  // STRATA_SERVER_MODEL_STORE_H_
