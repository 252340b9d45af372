#include "update/model_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace strata::update {

absl::StatusOr<model::MatrixF> ModelVersion::Features(const model::MatrixF& images,
                                                      fpga::OpCounts* counts) const {
  if (images.cols() != lower->input_size()) {
    return absl::InvalidArgumentError(absl::StrCat("lower tier: images have ", images.cols(),
                                                   " values, the input has ",
                                                   lower->input_size()));
  }
  if (int8_lower != nullptr) {
    *counts = fpga::OpCounts{};
    return int8_lower->Features(images, counts);
  }
  *counts = lower->Counts(static_cast<int>(images.rows()));
  return lower->Features(images);
}

absl::Status CheckInt8Scales(const model::Bundle& bundle, absl::string_view backend) {
  if (!bundle.int8.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the bundle has no int8 activation scales (records lower.int8.*, which strata-train writes "
      "since the int8 devices exist), so its lower tier cannot run on the ",
      backend, " backend; serve it with --device=float (or auto), or re-train it with "
      "strata-train"));
}

absl::Status ModelStore::Load(model::Bundle bundle, fpga::Backend* int8_backend,
                              VersionReservation* versions) {
  absl::MutexLock lock(&mu_);
  if (upper_ != nullptr) return absl::FailedPreconditionError("a model is already loaded");
  if (bundle.lower.feature_size() != bundle.upper.feature_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bundle: the lower tier yields ", bundle.lower.feature_size(),
        " features but the upper tier reads ", bundle.upper.feature_size()));
  }
  absl::StatusOr<model::Readout> readout = bundle.upper.Solve();
  if (!readout.ok()) return readout.status();

  auto lower = std::make_shared<const model::LowerTier>(std::move(bundle.lower));
  std::shared_ptr<const model::QuantizedLowerTier> int8_lower;
  if (int8_backend != nullptr) {
    if (absl::Status scales = CheckInt8Scales(bundle, int8_backend->info().name); !scales.ok()) {
      return scales;
    }
    absl::StatusOr<model::QuantizedLowerTier> quantized =
        model::QuantizedLowerTier::FromCalibration(*lower, bundle.int8, *int8_backend);
    if (!quantized.ok()) return quantized.status();
    // The quantised tier points into the float tier's stages: keep both alive together.
    struct Int8Tier {
      std::shared_ptr<const model::LowerTier> lower;
      model::QuantizedLowerTier int8;
    };
    auto tier = std::make_shared<const Int8Tier>(Int8Tier{lower, *std::move(quantized)});
    int8_lower = std::shared_ptr<const model::QuantizedLowerTier>(tier, &tier->int8);
  }
  auto version = std::make_shared<ModelVersion>();
  version->version = bundle.version;
  version->lower = lower;
  version->int8_lower = int8_lower;
  version->device = int8_backend != nullptr ? int8_backend->info().name : "float";
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor(version->device);
  version->lower_tier_energy_table = table.ok() ? *table : *fpga::EnergyTableFor("cpu");
  version->readout = *std::move(readout);
  version->ridge_lambda = bundle.upper.lambda();
  version->samples_seen = bundle.upper.samples_seen();

  lower_ = std::move(lower);
  int8_lower_ = std::move(int8_lower);
  device_ = version->device;
  lower_tier_energy_table_ = version->lower_tier_energy_table;
  upper_ = std::make_unique<model::UpperTier>(std::move(bundle.upper));
  if (int8_backend != nullptr && upper_->int8_readout()) {
    // Absorbs go through the backend's Gram kernel (docs/upper-tier.md).
    if (absl::Status s = upper_->AttachGramBackend(int8_backend); !s.ok()) {
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
    *on_gram_backend = upper_->gram_backend() != nullptr && upper_->int8_readout() &&
                       upper_->forgetting() == 1.0;
  }
  if (num_classes != nullptr) *num_classes = upper_->num_classes();
  return new_labels;
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

absl::StatusOr<std::shared_ptr<const ModelVersion>> ModelStore::Publish(RefreshPlan* done) {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  const uint64_t next = current_.load()->version + 1;
  // Reserve before any work: a version must never be visible before a durable reservation covers
  // it, and a failed reservation should leave the store exactly as it was.
  if (versions_ != nullptr) {
    if (absl::Status covered = versions_->Cover(next); !covered.ok()) return covered;
  }
  fpga::OpCounts fold_counts, absorb_counts;
  if (absl::Status folded = upper_->FoldGram(&fold_counts, &absorb_counts); !folded.ok()) {
    return folded;
  }
  absl::StatusOr<model::Readout> readout = upper_->Refresh(model::RefreshMode::kAuto);
  if (!readout.ok()) return readout.status();
  if (done != nullptr) {
    *done = RefreshPlan{upper_->last_refresh(), upper_->feature_size(), upper_->num_classes(),
                        fold_counts, absorb_counts};
  }

  auto version = std::make_shared<ModelVersion>();
  version->version = next;
  version->lower = lower_;
  version->int8_lower = int8_lower_;
  version->device = device_;
  version->lower_tier_energy_table = lower_tier_energy_table_;
  version->readout = *std::move(readout);
  version->ridge_lambda = upper_->lambda();
  version->samples_seen = upper_->samples_seen();
  std::shared_ptr<const ModelVersion> published = version;
  current_.store(published);
  return published;
}

absl::Status ModelStore::VisitStatistics(
    absl::FunctionRef<void(const model::UpperTier& upper, uint64_t version)> visit) {
  absl::MutexLock lock(&mu_);
  if (upper_ == nullptr) return absl::FailedPreconditionError("no model loaded");
  visit(*upper_, current_.load()->version);
  return absl::OkStatus();
}

}  // namespace strata::update
