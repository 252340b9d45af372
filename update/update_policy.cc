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
    case DecisionReason::kClassGrown:
      return "class-grown";
    case DecisionReason::kStreamEnd:
      return "stream-end";
    case DecisionReason::kForgetClasses:
      return "forget-classes";
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

namespace {

absl::Status OutOfRange(absl::string_view option, double value, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(option, " = ", value, ", expected ", expected));
}

}  // namespace

absl::Status ValidatePolicyOptions(const UpdatePolicyOptions& o) {
  if (o.period_samples < 0) return OutOfRange("period_samples", o.period_samples, ">= 0");
  if (o.period < absl::ZeroDuration()) {
    return OutOfRange("period", absl::ToDoubleSeconds(o.period), ">= 0 s");
  }
  if (!(o.joules_per_error >= 0)) return OutOfRange("joules_per_error", o.joules_per_error, ">= 0");
  if (!(o.budget_watts >= 0)) return OutOfRange("budget_watts", o.budget_watts, ">= 0");
  if (!(o.burst_joules >= 0)) return OutOfRange("burst_joules", o.burst_joules, ">= 0");
  if (o.window_samples < 1) return OutOfRange("window_samples", o.window_samples, ">= 1");
  if (o.reference_samples < 1) return OutOfRange("reference_samples", o.reference_samples, ">= 1");
  if (o.min_horizon_samples < 0) {
    return OutOfRange("min_horizon_samples", o.min_horizon_samples, ">= 0");
  }
  if (!(o.growth_factor == 0 || o.growth_factor > 1)) {
    return OutOfRange("growth_factor", o.growth_factor, "0 (off) or a value > 1");
  }
  if (o.growth_min_samples < 1) {
    return OutOfRange("growth_min_samples", o.growth_min_samples, ">= 1");
  }
  if (!(o.forget_decay > 0 && o.forget_decay <= 1)) {
    return OutOfRange("forget_decay", o.forget_decay, "a value in (0, 1]");
  }
  if (!(o.forget_error_jump > 0 && o.forget_error_jump <= 1)) {
    return OutOfRange("forget_error_jump", o.forget_error_jump, "a value in (0, 1]");
  }
  if (o.forget_class_window < 1) {
    return OutOfRange("forget_class_window", o.forget_class_window, ">= 1");
  }
  if (o.forget_watch_samples < 1) {
    return OutOfRange("forget_watch_samples", o.forget_watch_samples, ">= 1");
  }
  if (o.forget_min_class_samples < 0) {
    return OutOfRange("forget_min_class_samples", o.forget_min_class_samples, ">= 0");
  }
  // Scores are one-hot regression outputs (about 0..1), so a margin above 2 would skip nothing.
  if (!(o.absorb_margin >= 0 && o.absorb_margin <= 2)) {
    return OutOfRange("absorb_margin", o.absorb_margin, "a value in [0, 2] (0: absorb all)");
  }
  if (o.absorb_min_class_samples < 1) {
    return OutOfRange("absorb_min_class_samples", o.absorb_min_class_samples, ">= 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UpdatePolicy>> UpdatePolicy::Create(
    absl::string_view name, const UpdatePolicyOptions& options, absl::Time start) {
  PolicyKind kind;
  if (name == "stream-end") {
    // Decides from the stream's end alone: no options, no drift detector, so neither forgetting
    // (it needs alarms) nor selective absorption.
    UpdatePolicyOptions plain = options;
    plain.forget_on_drift = false;
    plain.absorb_margin = 0;
    return std::unique_ptr<UpdatePolicy>(
        new UpdatePolicy(PolicyKind::kStreamEnd, plain, nullptr, start));
  }
  if (name == "eager") {
    kind = PolicyKind::kEager;
  } else if (name == "periodic") {
    kind = PolicyKind::kPeriodic;
  } else if (name == "energy-aware") {
    kind = PolicyKind::kEnergyAware;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown update policy '", std::string(name),
                     "' (expected stream-end, eager, periodic or energy-aware)"));
  }
  if (absl::Status valid = ValidatePolicyOptions(options); !valid.ok()) return valid;
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
        last_gain_rate_ = error_before_refresh_ - static_cast<double>(reference_errors_) /
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

  std::vector<std::string> forget = TrackClasses(message, drift);
  Decision decision;
  if (!forget.empty()) {
    // Like a new class, a forgotten one must be refreshed at once: the readout still holds it.
    if (kind_ == PolicyKind::kEnergyAware) bucket_.ForceTake(message.refresh_joules);
    decision.apply = true;
    decision.reason = DecisionReason::kForgetClasses;
    stats_.classes_forgotten += forget.size();
    decision.forget_labels = std::move(forget);
    decision.forget_decay = decayed_this_watch_ ? 1.0 : options_.forget_decay;
    decayed_this_watch_ = true;
  } else {
    decision = Decide(message, drift);
  }
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
  // Once this drift's watch has forgotten classes, its further alarms are the same drift still
  // showing in the error while those classes are re-learnt: class growth schedules their
  // refreshes, so the alarms do not refresh by themselves.
  const bool drift_refreshes = drift && !(watch_remaining_ > 0 && decayed_this_watch_);
  d.expected_gain_joules = ExpectedGainErrors() * options_.joules_per_error;
  const bool gain_pays = d.expected_gain_joules >= message.refresh_joules;
  const bool pays = gain_pays || SomeClassGrew();
  if (!drift_refreshes && !pays) {
    d.reason = DecisionReason::kGainTooSmall;
    return d;
  }
  if (!bucket_.TryTake(message.refresh_joules)) {
    d.reason = DecisionReason::kBudgetExhausted;
    return d;
  }
  d.apply = true;
  d.reason = drift_refreshes ? DecisionReason::kDrift : DecisionReason::kGainPays;
  if (!drift_refreshes && !gain_pays) d.reason = DecisionReason::kClassGrown;
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
  UpdateMessage end;
  end.now = now;
  RecordRefresh(end);
  return decision;
}

bool UpdatePolicy::SomeClassGrew() const {
  if (!(options_.growth_factor > 0)) return false;
  const double min_samples = static_cast<double>(options_.growth_min_samples);
  for (const auto& [label, c] : class_errors_) {
    // A class the readout was solved with fewer than growth_min_samples samples of (one that had
    // just arrived, or had just been forgotten when a refresh came) is due at growth_min_samples:
    // growth_factor times a handful would leave its new meaning unsolved for a long while.
    const double at_refresh = static_cast<double>(c.samples_at_refresh);
    const double due = at_refresh < min_samples ? min_samples : options_.growth_factor * at_refresh;
    if (static_cast<double>(c.samples) >= due) return true;
  }
  return false;
}

std::vector<std::string> UpdatePolicy::TrackClasses(const UpdateMessage& message, bool drift) {
  std::vector<std::string> forget;
  if (message.labels.size() != message.prequential_errors.size()) return forget;
  const size_t window = static_cast<size_t>(options_.forget_class_window);
  for (size_t i = 0; i < message.labels.size(); ++i) {
    ClassErrors& c = class_errors_[message.labels[i]];
    const int e = message.prequential_errors[i] != 0 ? 1 : 0;
    c.samples += 1;
    c.errors += e;
    c.recent.push_back(static_cast<uint8_t>(e));
    c.recent_errors += e;
    if (c.recent.size() > window) {
      c.recent_errors -= c.recent.front();
      c.recent.pop_front();
    }
  }
  if (!options_.forget_on_drift) return forget;
  if (drift && watch_remaining_ <= 0) {
    watch_remaining_ = options_.forget_watch_samples;
    decayed_this_watch_ = false;
  }
  if (watch_remaining_ <= 0) return forget;
  watch_remaining_ -= static_cast<int64_t>(message.prequential_errors.size());
  for (auto& [label, c] : class_errors_) {
    const int64_t before = c.samples - static_cast<int64_t>(c.recent.size());
    if (c.recent.size() < window ||
        before < std::max<int64_t>(1, options_.forget_min_class_samples)) {
      continue;
    }
    const double recent = static_cast<double>(c.recent_errors) / static_cast<double>(window);
    const double earlier =
        static_cast<double>(c.errors - c.recent_errors) / static_cast<double>(before);
    if (recent - earlier >= options_.forget_error_jump) {
      forget.push_back(label);
      c = ClassErrors{};  // the class starts over: its new meaning is measured from now
    }
  }
  std::sort(forget.begin(), forget.end());
  return forget;
}

double UpdatePolicy::WindowError() const {
  return window_.empty()
             ? 0
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
    rate = std::max(rate,
                    last_gain_rate_ * std::min(1.0, s / static_cast<double>(last_gain_samples_)));
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
  for (auto& [label, c] : class_errors_) c.samples_at_refresh = c.samples;
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
