#include "update/update_policy.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace strata::update {

// ---- JouleBucket ------------------------------------------------------------------------------

JouleBucket::JouleBucket(double watts, double capacity_joules, absl::Time start)
    : watts_(std::max(watts, 0.0)),
      capacity_(std::max(capacity_joules, 0.0)),
      balance_(capacity_),
      last_(start) {}

void JouleBucket::Refill(absl::Time now) {
  if (now <= last_) return;
  balance_ = std::min(capacity_, balance_ + watts_ * absl::ToDoubleSeconds(now - last_));
  last_ = now;
}

bool JouleBucket::TryTake(double joules) {
  if (joules > balance_) return false;
  balance_ -= joules;
  return true;
}

void JouleBucket::ForceTake(double joules) { balance_ -= joules; }

// ---- Names ------------------------------------------------------------------------------------

absl::string_view DecisionReasonName(DecisionReason reason) {
  switch (reason) {
    case DecisionReason::kNewClass:
      return "new-class";
    case DecisionReason::kEveryMessage:
      return "every-message";
    case DecisionReason::kSamplesDue:
      return "samples-due";
    case DecisionReason::kTimeDue:
      return "time-due";
    case DecisionReason::kDrift:
      return "drift";
    case DecisionReason::kGainPays:
      return "gain-pays";
    case DecisionReason::kStreamEnd:
      return "stream-end";
    case DecisionReason::kUntilStreamEnd:
      return "until-stream-end";
    case DecisionReason::kNoSamples:
      return "no-samples";
    case DecisionReason::kNotDue:
      return "not-due";
    case DecisionReason::kGainTooSmall:
      return "gain-too-small";
    case DecisionReason::kBudgetExhausted:
      return "budget-exhausted";
  }
  return "unknown";
}

absl::string_view UpdatePolicy::name() const {
  switch (kind_) {
    case PolicyKind::kStreamEnd:
      return "stream-end";
    case PolicyKind::kEager:
      return "eager";
    case PolicyKind::kPeriodic:
      return "periodic";
    case PolicyKind::kEnergyAware:
      return "energy-aware";
  }
  return "unknown";
}

// ---- UpdatePolicy -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<UpdatePolicy>> UpdatePolicy::Create(
    absl::string_view name, const UpdatePolicyOptions& options, absl::Time start) {
  PolicyKind kind;
  if (name == "stream-end") {
    // Decides from the stream's end alone: no options, no drift detector.
    return std::unique_ptr<UpdatePolicy>(
        new UpdatePolicy(PolicyKind::kStreamEnd, options, nullptr, start));
  }
  if (name == "eager") {
    kind = PolicyKind::kEager;
  } else if (name == "periodic") {
    kind = PolicyKind::kPeriodic;
  } else if (name == "energy-aware") {
    kind = PolicyKind::kEnergyAware;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown update policy '", std::string(name),
        "' (expected stream-end, eager, periodic or energy-aware)"));
  }
  if (options.period_samples < 0 || options.period < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("period_samples and period must be >= 0");
  }
  if (!(options.joules_per_error >= 0) || !(options.budget_watts >= 0) ||
      !(options.burst_joules >= 0)) {
    return absl::InvalidArgumentError("joules_per_error, budget_watts, burst_joules must be >= 0");
  }
  if (options.window_samples < 1 || options.reference_samples < 1 ||
      options.min_horizon_samples < 0) {
    return absl::InvalidArgumentError(
        "window_samples and reference_samples must be >= 1, min_horizon_samples >= 0");
  }
  absl::StatusOr<std::unique_ptr<DriftDetector>> detector =
      MakeDriftDetector(options.drift_detector);
  if (!detector.ok()) return detector.status();
  return std::unique_ptr<UpdatePolicy>(
      new UpdatePolicy(kind, options, *std::move(detector), start));
}

UpdatePolicy::UpdatePolicy(PolicyKind kind, const UpdatePolicyOptions& options,
                           std::unique_ptr<DriftDetector> detector, absl::Time start)
    : kind_(kind),
      options_(options),
      detector_(std::move(detector)),
      bucket_(options.budget_watts, options.burst_joules, start),
      last_refresh_time_(start) {}

Decision UpdatePolicy::OnMessage(const UpdateMessage& message) {
  absl::MutexLock lock(&mutex_);
  stats_.messages += 1;
  bool drift = false;
  for (const uint8_t error : message.prequential_errors) {
    const int e = error != 0 ? 1 : 0;
    stats_.samples += 1;
    stats_.prequential_errors += e;
    if (detector_ != nullptr && detector_->Add(e)) drift = true;
    ++samples_since_refresh_;
    if (reference_count_ < options_.reference_samples) {
      ++reference_count_;
      reference_errors_ += e;
      if (reference_count_ == options_.reference_samples && error_before_refresh_ >= 0) {
        // The last refresh's realised effect: error before it minus error right after it.
        last_gain_rate_ = error_before_refresh_ -
                          static_cast<double>(reference_errors_) /
                              static_cast<double>(reference_count_);
        last_gain_samples_ = samples_before_refresh_;
        error_before_refresh_ = -1;
      }
    }
    window_.push_back(static_cast<uint8_t>(e));
    window_errors_ += e;
    if (static_cast<int64_t>(window_.size()) > options_.window_samples) {
      window_errors_ -= window_.front();
      window_.pop_front();
    }
  }
  if (drift) stats_.drift_alarms += 1;
  bucket_.Refill(message.now);

  Decision decision = Decide(message, drift);
  decision.refresh_joules = message.refresh_joules;
  stats_.by_reason[static_cast<int>(decision.reason)] += 1;
  if (decision.apply) {
    stats_.refreshes += 1;
    stats_.approved_refresh_joules += message.refresh_joules;
    RecordRefresh(message);
  } else {
    stats_.deferrals += 1;
  }
  stats_.budget_balance_joules = bucket_.balance();
  return decision;
}

Decision UpdatePolicy::Decide(const UpdateMessage& message, bool drift) {
  Decision d;
  if (kind_ == PolicyKind::kStreamEnd) {
    d.reason = message.prequential_errors.empty() ? DecisionReason::kNoSamples
                                                  : DecisionReason::kUntilStreamEnd;
    return d;
  }
  if (message.new_class) {
    if (kind_ == PolicyKind::kEnergyAware) bucket_.ForceTake(message.refresh_joules);
    d.apply = true;
    d.reason = DecisionReason::kNewClass;
    return d;
  }
  if (samples_since_refresh_ == 0) {
    d.reason = DecisionReason::kNoSamples;
    return d;
  }
  switch (kind_) {
    case PolicyKind::kEager:
      if (message.prequential_errors.empty()) {
        d.reason = DecisionReason::kNoSamples;
        return d;
      }
      d.apply = true;
      d.reason = DecisionReason::kEveryMessage;
      return d;
    case PolicyKind::kPeriodic:
      if (options_.period_samples > 0 && samples_since_refresh_ >= options_.period_samples) {
        d.apply = true;
        d.reason = DecisionReason::kSamplesDue;
      } else if (options_.period > absl::ZeroDuration() &&
                 message.now - last_refresh_time_ >= options_.period) {
        d.apply = true;
        d.reason = DecisionReason::kTimeDue;
      } else {
        d.reason = DecisionReason::kNotDue;
      }
      return d;
    case PolicyKind::kEnergyAware:
    case PolicyKind::kStreamEnd:  // decided above
      break;
  }
  d.expected_gain_joules = ExpectedGainErrors() * options_.joules_per_error;
  const bool pays = d.expected_gain_joules >= message.refresh_joules;
  if (!drift && !pays) {
    d.reason = DecisionReason::kGainTooSmall;
    return d;
  }
  if (!bucket_.TryTake(message.refresh_joules)) {
    d.reason = DecisionReason::kBudgetExhausted;
    return d;
  }
  d.apply = true;
  d.reason = drift ? DecisionReason::kDrift : DecisionReason::kGainPays;
  return d;
}

std::optional<Decision> UpdatePolicy::OnStreamEnd(uint64_t accepted_samples, absl::Time now) {
  if (kind_ != PolicyKind::kStreamEnd || accepted_samples == 0) return std::nullopt;
  absl::MutexLock lock(&mutex_);
  Decision decision;
  decision.apply = true;
  decision.reason = DecisionReason::kStreamEnd;
  stats_.by_reason[static_cast<int>(decision.reason)] += 1;
  stats_.refreshes += 1;
  RecordRefresh(UpdateMessage{{}, false, 0, now});
  return decision;
}

double UpdatePolicy::WindowError() const {
  return window_.empty() ? 0
                         : static_cast<double>(window_errors_) / static_cast<double>(window_.size());
}

double UpdatePolicy::ExpectedGainErrors() const {
  const double s = static_cast<double>(samples_since_refresh_);
  double rate = 0;
  // Staleness: the readout's error has risen above what it was right after its refresh.
  if (reference_count_ >= options_.reference_samples) {
    const double e_ref =
        static_cast<double>(reference_errors_) / static_cast<double>(reference_count_);
    rate = std::max(rate, WindowError() - e_ref);
  }
  // Learning curve: the last refresh removed last_gain_rate_ errors per sample after
  // last_gain_samples_ new samples; expect as much again, pro rata, from the samples since.
  if (last_gain_rate_ > 0 && last_gain_samples_ > 0) {
    rate = std::max(rate, last_gain_rate_ *
                              std::min(1.0, s / static_cast<double>(last_gain_samples_)));
  }
  return rate * std::max(static_cast<double>(options_.min_horizon_samples), s);
}

void UpdatePolicy::RecordRefresh(const UpdateMessage& message) {
  const absl::Time now = message.now;
  // The error just before the refresh, on the data it is meant for. A new class changes the
  // distribution at this message, so that is the message's own error; otherwise the window's,
  // which is only meaningful when full.
  if (message.new_class && !message.prequential_errors.empty()) {
    int64_t errors = 0;
    for (const uint8_t e : message.prequential_errors) errors += e != 0 ? 1 : 0;
    error_before_refresh_ =
        static_cast<double>(errors) / static_cast<double>(message.prequential_errors.size());
  } else {
    error_before_refresh_ =
        static_cast<int64_t>(window_.size()) >= options_.window_samples ? WindowError() : -1;
  }
  samples_before_refresh_ = samples_since_refresh_;
  if (error_before_refresh_ < 0) {
    last_gain_rate_ = 0;
    last_gain_samples_ = 0;
  }
  last_refresh_time_ = now;
  refreshed_once_ = true;
  samples_since_refresh_ = 0;
  reference_errors_ = 0;
  reference_count_ = 0;
  window_.clear();
  window_errors_ = 0;
}

UpdatePolicyStats UpdatePolicy::Stats() const {
  absl::MutexLock lock(&mutex_);
  return stats_;
}

}  // namespace strata::update
