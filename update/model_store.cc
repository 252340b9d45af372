#include "update/model_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "model/lower_tier_extractor.h"
#include "update/statistics_digest.h"

namespace strata::update {

absl::StatusOr<model::MatrixF> ModelVersion::Features(const model::SampleBatch& samples,
                                                      fpga::OpCounts* counts) const {
  return extractor->BatchFeatures(samples, counts);
}

absl::Status ModelStore::Load(model::Bundle bundle,
                              std::shared_ptr<const model::FeatureExtractor> extractor,
                              VersionReservation* versions, const PublishOptions& publish) {
  if (extractor == nullptr) {
    extractor = std::make_shared<const model::FloatLowerTierExtractor>(bundle.lower);
  }
  absl::MutexLock lock(&mu_);
  if (upper_ != nullptr) return absl::FailedPreconditionError("a model is already loaded");
  if (extractor->feature_size() != bundle.upper.feature_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bundle: the lower tier yields ", extractor->feature_size(),
                     " features but the upper tier reads ", bundle.upper.feature_size()));
  }
  // An upper tier without classes (strata-train --empty_upper: the stream brings every class)
  // serves an empty readout until the first refresh; Predict refuses it (FAILED_PRECONDITION).
  absl::StatusOr<model::Readout> readout =
      bundle.upper.num_classes() == 0
          ? model::Readout{model::MatrixF(bundle.upper.feature_size(), 0), {}}
          : bundle.upper.Solve();
  if (!readout.ok()) return readout.status();

  auto version = std::make_shared<ModelVersion>();
  version->version = bundle.version;
  version->extractor = extractor;
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(extractor->device());
  version->lower_tier_energy_table = table.ok() ? *table : *fpga::EnergyTableFor("cpu");
  version->readout = *std::move(readout);
  version->ridge_lambda = bundle.upper.lambda();
  version->samples_seen = bundle.upper.samples_seen();
  version->log_position = publish.log_position;
  if (publish.digest) version->statistics_digest = StatisticsDigest(bundle.upper);

  extractor_ = std::move(extractor);
  lower_tier_energy_table_ = version->lower_tier_energy_table;
  upper_ = std::make_unique<model::UpperTier>(std::move(bundle.upper));
  if (extractor_->backend() != nullptr && upper_->int8_readout()) {
    // Absorbs go through the backend's Gram kernel (docs/upper-tier.md).
    if (absl::Status s = upper_->AttachGramBackend(extractor_->backend()); !s.ok()) {
      upper_.reset();
      return s;
    }
  }
  // Last: the version becomes visible with the store below, and only once a durable reservation
  // covers it.
  if (versions != nullptr) {
    if (absl::Status covered = versions->Cover(version->version); !covered.ok()) {
      upper_.reset();
      return covered;
    }
  }
  versions_ = versions;
  current_.store(std::move(version));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ModelStore::Absorb(const model::MatrixF& features,
                                                            std::span<const std::string> labels,
                                                            int* num_classes,
                                                            fpga::OpCounts* gram_counts,
                                                            bool* on_gram_backend) {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  fpga::OpCounts counts;
  absl::StatusOr<std::vector<std::string>> new_labels =
      upper_->AbsorbLabeled(features, labels, &counts);
  if (!new_labels.ok()) return new_labels.status();
  if (gram_counts != nullptr) *gram_counts = counts;
  if (on_gram_backend != nullptr) {
    // The same condition UpperTier::Absorb routes rows to the accumulator by (a staged absorb
    // reports no work yet but is still not host float64 work).
    *on_gram_backend =
        upper_->gram_backend() != nullptr && upper_->int8_readout() && upper_->forgetting() == 1.0;
  }
  if (num_classes != nullptr) *num_classes = upper_->num_classes();
  staged_rows_.store(upper_->staged_gram_rows(), std::memory_order_relaxed);
  return new_labels;
}

absl::StatusOr<fpga::OpCounts> ModelStore::Forget(std::span<const std::string> labels,
                                                  double decay) {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  std::vector<int> classes;
  for (const std::string& label : labels) {
    const int index = upper_->ClassIndex(label);
    if (index < 0)
      return absl::InvalidArgumentError(absl::StrCat("forget: no class '", label, "'"));
    classes.push_back(index);
  }
  fpga::OpCounts counts;
  if (absl::Status s = upper_->Forget(classes, decay, &counts); !s.ok()) return s;
  staged_rows_.store(upper_->staged_gram_rows(), std::memory_order_relaxed);
  return counts;
}

absl::StatusOr<ModelStore::RefreshPlan> ModelStore::PlanRefresh() {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  absl::StatusOr<model::RefreshReport> report = upper_->PlanRefresh(model::RefreshMode::kAuto);
  if (!report.ok()) return report.status();
  RefreshPlan plan;
  plan.report = *std::move(report);
  plan.feature_size = upper_->feature_size();
  plan.num_classes = upper_->num_classes();
  return plan;
}

absl::StatusOr<std::shared_ptr<const ModelVersion>> ModelStore::Publish(
    RefreshPlan* done, const PublishOptions& publish) {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  const uint64_t next = current_.load()->version + 1 + skipped_versions_;
  // Reserve before any work: a version must never be visible before a durable reservation covers
  // it, and a failed reservation should leave the store exactly as it was.
  if (versions_ != nullptr) {
    if (absl::Status covered = versions_->Cover(next); !covered.ok()) return covered;
  }
  fpga::OpCounts fold_counts, absorb_counts;
  if (absl::Status folded = upper_->FoldGram(&fold_counts, &absorb_counts); !folded.ok()) {
    return folded;
  }
  staged_rows_.store(upper_->staged_gram_rows(), std::memory_order_relaxed);
  absl::StatusOr<model::Readout> readout = upper_->Refresh(publish.mode);
  if (!readout.ok()) return readout.status();
  if (done != nullptr) {
    *done = RefreshPlan{upper_->last_refresh(), upper_->feature_size(), upper_->num_classes(),
                        fold_counts, absorb_counts};
  }

  auto version = std::make_shared<ModelVersion>();
  version->version = next;
  version->extractor = extractor_;
  version->lower_tier_energy_table = lower_tier_energy_table_;
  version->readout = *std::move(readout);
  version->ridge_lambda = upper_->lambda();
  version->samples_seen = upper_->samples_seen();
  skipped_versions_ = 0;
  version->log_position = publish.log_position;
  // After the refresh, which folded every absorbed row in: reading G changes nothing.
  if (publish.digest) version->statistics_digest = StatisticsDigest(*upper_);
  std::shared_ptr<const ModelVersion> published = version;
  current_.store(published);
  return published;
}

absl::Status ModelStore::SkipPublish() {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  if (absl::Status folded = upper_->FoldGram(); !folded.ok()) return folded;
  ++skipped_versions_;
  return absl::OkStatus();
}

absl::Status ModelStore::VisitStatistics(
    absl::FunctionRef<void(const model::UpperTier& upper, uint64_t version)> visit) {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  visit(*upper_, current_.load()->version);
  return absl::OkStatus();
}

}  // namespace strata::update
