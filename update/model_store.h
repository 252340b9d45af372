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
//
// With a VersionReservation (a server with --state_dir), no version becomes visible before a
// durable reservation covers it, which is what keeps versions growing across restarts
// (docs/model-versions-format.md).
#ifndef STRATA_UPDATE_MODEL_STORE_H_
#define STRATA_UPDATE_MODEL_STORE_H_

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
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "fpga/backend.h"
#include "fpga/energy.h"
#include "model/bundle.h"
#include "model/feature_extractor.h"
#include "model/tensor.h"
#include "model/upper_tier.h"
#include "update/version_reservation.h"

namespace strata::update {

// One published model: the frozen lower tier (shared by every version) and a solved readout.
// Immutable once published, hence safe to read from any number of threads.
struct ModelVersion {
  uint64_t version = 0;
  // The served lower tier, built once (model::MakeLowerTierExtractor) and shared by every version
  // and by recovery: float, or int8 on a backend (strata-server --device other than float).
  std::shared_ptr<const model::FeatureExtractor> extractor;
  // The energy table the lower tier's work is priced with (fpga::EnergyTableFor(device()); "cpu"
  // for float).
  fpga::EnergyTable lower_tier_energy_table;
  model::Readout readout;  // readout.labels are the classes, in class-index order
  double ridge_lambda = 0;
  uint64_t samples_seen = 0;  // samples in the statistics this readout was solved from
  // Replicated servers (update/replica.h): the update-log position whose entries the statistics
  // include (the refresh marker it was published at, or the snapshot it was restored from), and
  // their digest (StatisticsDigest). 0 and empty otherwise.
  uint64_t log_position = 0;
  std::string statistics_digest;

  // How the lower tier computes: "float", or the backend's name ("cpu", "emu", "xrt").
  const std::string& device() const { return extractor->device(); }

  // The features of `samples` (image rows of extractor->input_size() values, or texts) through
  // the served lower tier (FeatureExtractor::BatchFeatures). `counts` (not null) receives the
  // work: the backend's reported OpCounts for int8 (int8 MACs and its memory traffic; the host's
  // float stages are not counted), or for float the lower tier's estimate from the shapes
  // (model::LowerTier::Counts, fp32). INVALID_ARGUMENT if the width or kind is wrong; the
  // backend's errors (xrt). Thread-safe.
  absl::StatusOr<model::MatrixF> Features(const model::SampleBatch& samples,
                                          fpga::OpCounts* counts) const;
};

// How Load / Publish make a version, beyond the defaults (for replicated servers).
struct PublishOptions {
  // Publish: how the readout is re-solved. Replicas use kForceRefactor: the readout is then a
  // function of the statistics alone, the same on a replica restored from a snapshot.
  model::RefreshMode mode = model::RefreshMode::kAuto;
  // Recorded in the version (ModelVersion::log_position).
  uint64_t log_position = 0;
  // Whether to compute ModelVersion::statistics_digest (a pass over G: ~D^2/2 doubles).
  bool digest = false;
};

class ModelStore {
 public:
  // An empty store: Current() is null until Load() succeeds.
  ModelStore() = default;
  ModelStore(const ModelStore&) = delete;
  ModelStore& operator=(const ModelStore&) = delete;

  // Takes over `bundle`'s statistics, solves its readout and publishes it as version
  // `bundle.version` (an upper tier with no class yet publishes an empty readout: no labels, D x 0
  // weights; the first refresh after an Update brought classes solves a real one), with `extractor` as every version's lower tier (null: the float lower tier of
  // bundle.lower). FAILED_PRECONDITION if a model is already loaded; INVALID_ARGUMENT if the
  // extractor's feature width differs from the upper tier's; the upper tier's Solve() errors
  // otherwise. On error the store is unchanged. Thread-safe.
  //
  // An int8 extractor (model::MakeLowerTierExtractor with a backend; strata-server builds it once
  // and recovery replays through the same one) runs on its backend, which must outlive the store
  // and every version it published; with int8 readout scales the absorbs then run on that
  // backend's Gram kernel too.
  //
  // With `versions` (not owned; must outlive the store), every version the store makes visible, this
  // one and every later Publish(), is first covered by versions->Cover(); if that fails, Load fails
  // with its error and the store is unchanged. Without it versions are not persisted anywhere.
  // `publish` sets the version's log position and digest (its mode is not used).
  absl::Status Load(model::Bundle bundle,
                    std::shared_ptr<const model::FeatureExtractor> extractor = nullptr,
                    VersionReservation* versions = nullptr, const PublishOptions& publish = {});

  // The version being served, or null before Load(). Lock-free with respect to writers.
  std::shared_ptr<const ModelVersion> Current() const { return current_.load(); }

  // Adds labelled feature rows to the upper tier's statistics. labels[i] is the label of row i; a
  // label not seen before becomes a new class. Returns the labels that became new classes, in the
  // order first seen. FAILED_PRECONDITION before Load(); INVALID_ARGUMENT if the row count differs
  // from labels.size() or the width from the feature size (then nothing is absorbed). The current
  // version is unchanged until Publish(). Thread-safe; serialised with other Absorb / Publish calls.
  // If `num_classes` is not null it receives the number of classes after the absorb.
  //
  // For a bundle with int8 readout scales served on an int8 backend, the rows go through the
  // backend's Gram accumulator (model::UpperTier::AttachGramBackend); then `gram_counts` (if not
  // null) receives the backend's OpCounts of the blocks this absorb completed (rows are staged and
  // accumulated gram_block_rows at a time; the rest is reported by Publish as
  // RefreshPlan::absorb_counts), `on_gram_backend` (if not null) is set to true, and
  // the caller prices that work with the backend's energy table. Otherwise the float64 host path
  // absorbed them, *on_gram_backend is false and the caller prices them from the shapes.
  absl::StatusOr<std::vector<std::string>> Absorb(const model::MatrixF& features,
                                                  std::span<const std::string> labels,
                                                  int* num_classes = nullptr,
                                                  fpga::OpCounts* gram_counts = nullptr,
                                                  bool* on_gram_backend = nullptr);

  // Forgetting on drift (model::UpperTier::Forget): zeroes the Q columns of `labels` and decays
  // the statistics by `decay`. Returns the work, for the energy meter (priced with the host
  // table). FAILED_PRECONDITION before Load(); INVALID_ARGUMENT for a label that is no class or a
  // decay outside (0, 1]; then nothing changes. The current version is unchanged until Publish().
  // Thread-safe; serialised with Absorb / Publish.
  absl::StatusOr<fpga::OpCounts> Forget(std::span<const std::string> labels, double decay);

  // Rows absorbed but staged for the Gram kernel's next block (UpperTier::staged_gram_rows()) as of
  // the last Absorb / Forget / Publish; 0 on the float64 host path. Lock-free.
  uint64_t staged_gram_rows() const { return staged_rows_.load(std::memory_order_relaxed); }

  // What a refresh would do now (UpperTier::PlanRefresh(kAuto)) and the shapes it would run on,
  // for pricing it before deciding. FAILED_PRECONDITION before Load(). Thread-safe; waits for a
  // running Absorb / Publish (call it from the writer's thread, not a gRPC callback).
  struct RefreshPlan {
    model::RefreshReport report;
    int feature_size = 0;
    int num_classes = 0;
    // Publish only: folding the Gram accumulator's integer sums into the float64 statistics
    // (read-back from the backend plus D^2/2 fp64 MACs); zero without an int8 readout.
    fpga::OpCounts fold_counts;
    // Publish only: the Gram kernel's work on rows that were absorbed but still staged, run just
    // before the fold; absorb work (priced like Absorb's gram_counts), zero without staged rows.
    fpga::OpCounts absorb_counts;
  };
  absl::StatusOr<RefreshPlan> PlanRefresh();

  // Solves the readout from the statistics (UpperTier::Refresh(kAuto)) and publishes it as version
  // current + 1. Returns the published version; if `done` is not null it receives what the refresh
  // did (its report and shapes, for energy accounting). FAILED_PRECONDITION before Load(); with a
  // VersionReservation, its error if current + 1 cannot be covered (checked before any work: then
  // nothing changed, not even the factor); the solver's error otherwise. On error the current
  // version is unchanged, and the absorbed samples stay for the next Publish(). Readers are not
  // blocked while it solves or reserves. Thread-safe; serialised with other Absorb / Publish calls,
  // so versions are published in order.
  // `publish` chooses the refresh mode and what the version records (PublishOptions).
  absl::StatusOr<std::shared_ptr<const ModelVersion>> Publish(RefreshPlan* done = nullptr,
                                                              const PublishOptions& publish = {});

  // For a replica catching up (update/replica.h): does to the statistics exactly what Publish would
  // (folds a Gram accumulator's integer sums in, so the float64 sums stay bit-identical with a
  // replica that published here) and makes the next Publish number its version one higher, but
  // solves and publishes nothing now. FAILED_PRECONDITION before Load(). Thread-safe.
  absl::Status SkipPublish();

  // Calls `visit(upper, version)` with the statistics and the current version, with writers
  // excluded for the duration (so the statistics include exactly the Absorb() calls that returned
  // before). For snapshots. FAILED_PRECONDITION before Load(); otherwise OK. Thread-safe; `visit`
  // must not call back into the store.
  absl::Status VisitStatistics(
      absl::FunctionRef<void(const model::UpperTier& upper, uint64_t version)> visit);

 private:
  // Serialises writers. Readers never take it.
  absl::Mutex mu_;
  std::shared_ptr<const model::FeatureExtractor> extractor_ ABSL_GUARDED_BY(mu_);
  fpga::EnergyTable lower_tier_energy_table_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<model::UpperTier> upper_ ABSL_GUARDED_BY(mu_);  // null before Load()
  VersionReservation* versions_ ABSL_GUARDED_BY(mu_) = nullptr;   // not owned; may be null
  // SkipPublish calls since the last Publish: that many version numbers are skipped.
  uint64_t skipped_versions_ ABSL_GUARDED_BY(mu_) = 0;

  std::atomic<uint64_t> staged_rows_{0};  // see staged_gram_rows()
  // Written only with mu_ held (so versions increase), read without it.
  std::atomic<std::shared_ptr<const ModelVersion>> current_;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_MODEL_STORE_H_
