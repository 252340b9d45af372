// Update policies: after each Update message has been absorbed into the upper tier's statistics,
// decide whether to refresh the readout (re-solve W = G^-1 Q) now or defer.
//
//   stream-end    (the server's default) refresh once when an Update stream ends, if it accepted
//                 any sample; every message is deferred ("until-stream-end", or "no-samples").
//   eager         refresh after every message that carried samples.
//   periodic      refresh once `period_samples` samples or `period` time have passed since the
//                 last refresh, whichever comes first.
//   energy-aware  refresh when the expected gain, valued in joules, pays for the refresh's joules,
//                 and a JouleBucket (joules per second, with a burst capacity) can pay for it.
//                 The gain is estimated from the prequential error stream (docs/update-policies.md):
//                   gain_rate = max(e_now - e_ref, g_last * min(1, s / s_last))     errors/sample
//                   gain      = gain_rate * max(min_horizon_samples, s) * joules_per_error
//                 e_now: error of the current readout over the last `window_samples` samples;
//                 e_ref: its error over the first `reference_samples` samples after the refresh
//                 that produced it; s: samples since that refresh; g_last: the error drop the
//                 previous refresh achieved (e before it - e_ref after it; for a new-class refresh
//                 "before" is that message's own error), which it took s_last samples to earn
//                 (the learning-curve term: refreshing also folds in new data).
//                 A drift alarm (ADWIN or Page-Hinkley on the error stream) refreshes if the
//                 bucket allows, unless forgetting on drift has already forgotten classes in this
//                 alarm's watch (then class growth re-solves them). So does a class whose samples
//                 grew growth_factor-fold since the readout was solved, or reached
//                 growth_min_samples if it was solved with fewer (a geometric schedule per class:
//                 a class that arrived with 50 samples is re-solved at 200, 800, 3200 with the
//                 default 4; the learning term alone stops once one early refresh gained little).
// Every policy but stream-end refreshes when a message brings a class never seen before (the readout
// cannot predict a class it has no column for); energy-aware lets that refresh overdraw the bucket.
// Stream-end waits for the stream's end for new classes too, and runs no drift detector.
//
// Two options apply to every policy but stream-end (both off by default; docs/update-policies.md):
//   forgetting on drift   after a drift alarm, a class whose recent error jumped (the stream changed
//                         what that class means, e.g. two labels swapped) is forgotten: the
//                         decision carries its label, the caller zeroes its Q column and decays the
//                         statistics (model::UpperTier::Forget), then refreshes ("forget-classes");
//   selective absorption  the caller skips samples the served readout already predicts correctly
//                         with a wide margin (absorb_margin; never a class with fewer than
//                         absorb_min_class_samples absorbed samples). The policy only holds the
//                         options; update/pipeline.h applies them and counts the skips.
//
// Usage from an Update pipeline, per message:
//   errors[i] = (readout predicted sample i wrongly) ? 1 : 0;   // before absorbing it
//   absorb the samples;
//   Decision d = policy.OnMessage({errors, new_class, meter.Estimate(refresh counts), now});
//   if (d.apply) { solve and publish; }        // the policy assumes it happened
// and when a stream ends:
//   if (auto d = policy.OnStreamEnd(accepted, now); d && d->apply) { solve and publish; }
// (update/pipeline.h does exactly this.)
//
// Thread-safe: every method may be called concurrently (calls are serialised internally); the
// decisions assume the messages are reported in the order they were absorbed.
#ifndef STRATA_UPDATE_UPDATE_POLICY_H_
#define STRATA_UPDATE_UPDATE_POLICY_H_

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "update/drift_detector.h"

namespace strata::update {

// A token bucket of joules: fills at `watts` up to `capacity_joules`, starts full. Time is given
// by the caller (an injected clock), never read here. Not thread-safe (UpdatePolicy locks).
class JouleBucket {
 public:
  // watts >= 0, capacity_joules >= 0; the bucket is full at `start`.
  JouleBucket(double watts, double capacity_joules, absl::Time start);

  // Adds watts * (now - last refill), capped at the capacity. Time going backwards adds nothing.
  void Refill(absl::Time now);
  // Takes `joules` if the balance covers them; false (and nothing taken) otherwise.
  bool TryTake(double joules);
  // Takes `joules` even if that leaves the balance negative (a debt later refills repay).
  void ForceTake(double joules);

  double balance() const { return balance_; }
  double watts() const { return watts_; }
  double capacity() const { return capacity_; }

 private:
  double watts_;
  double capacity_;
  double balance_;
  absl::Time last_;
};

enum class PolicyKind { kStreamEnd, kEager, kPeriodic, kEnergyAware };

// Why a decision was taken. The first nine apply a refresh, the rest defer it
// (DecisionReasonApplies).
enum class DecisionReason {
  kNewClass = 0,     // applied: a class never seen before arrived
  kEveryMessage,     // applied: eager
  kSamplesDue,       // applied: periodic, period_samples reached
  kTimeDue,          // applied: periodic, period elapsed
  kDrift,            // applied: energy-aware, drift alarm and the bucket pays
  kGainPays,         // applied: energy-aware, expected gain >= refresh joules and the bucket pays
  kClassGrown,       // applied: energy-aware, a class's samples grew growth_factor-fold since the
                     // readout was solved, and the bucket pays
  kStreamEnd,        // applied: stream-end, the stream ended having accepted samples
  kForgetClasses,    // applied: forgetting on drift, a class's error jumped after a drift alarm
  kUntilStreamEnd,   // deferred: stream-end, a message with samples
  kNoSamples,        // deferred: the message carried no samples
  kNotDue,           // deferred: periodic, neither period reached
  kGainTooSmall,     // deferred: energy-aware, expected gain < refresh joules
  kBudgetExhausted,  // deferred: energy-aware, worth it (or drift) but the bucket cannot pay
};
inline constexpr int kNumDecisionReasons = 14;

// "new-class", "every-message", "samples-due", "time-due", "drift", "gain-pays", "class-grown",
// "stream-end", "forget-classes", "until-stream-end", "no-samples", "not-due", "gain-too-small",
// "budget-exhausted".
absl::string_view DecisionReasonName(DecisionReason reason);
// Whether decisions for `reason` apply a refresh.
inline bool DecisionReasonApplies(DecisionReason reason) {
  return static_cast<int>(reason) < static_cast<int>(DecisionReason::kUntilStreamEnd);
}

struct Decision {
  bool apply = false;
  DecisionReason reason = DecisionReason::kNoSamples;
  double expected_gain_joules = 0;  // energy-aware: the valued gain estimate; else 0
  double refresh_joules = 0;        // the cost the caller reported
  // kForgetClasses: the labels whose Q columns the caller zeroes, and the decay of the statistics
  // (model::UpperTier::Forget), before it refreshes. Empty otherwise.
  std::vector<std::string> forget_labels;
  double forget_decay = 1;
};

// One absorbed Update message, as the policy sees it.
struct UpdateMessage {
  // One entry per absorbed sample, in stream order: 1 if the readout current before the message
  // mispredicted it (a sample of a class the readout does not know counts as an error), else 0.
  std::span<const uint8_t> prequential_errors;
  // The message added at least one class.
  bool new_class = false;
  // What a refresh would cost now (e.g. meter.Estimate(model::CheapestRefreshCounts(...))), >= 0.
  double refresh_joules = 0;
  absl::Time now;
  // The label of each of those samples (same order and length), for forgetting on drift; may be
  // empty (then no class can be forgotten).
  std::span<const std::string> labels = {};
};

struct UpdatePolicyOptions {
  // periodic: refresh after this many samples since the last refresh (0: never by count).
  int64_t period_samples = 1000;
  // periodic: refresh when this much time has passed since the last refresh (zero: never by time).
  absl::Duration period = absl::Seconds(60);

  // energy-aware: the exchange rate: joules one avoided prequential error is worth.
  double joules_per_error = 1e-3;
  // energy-aware: the refresh budget, a JouleBucket's fill rate and capacity.
  double budget_watts = 1e-3;
  double burst_joules = 0.1;
  // energy-aware: the current error e_now is measured over the last window_samples samples since
  // the last refresh; e_ref over the first reference_samples samples after it.
  int64_t window_samples = 500;
  int64_t reference_samples = 300;
  // energy-aware: the gain of a refresh is assumed to last at least this many samples.
  int64_t min_horizon_samples = 2000;
  // energy-aware: refresh ("class-grown") once a class has growth_factor times the samples it had
  // when the readout was solved, or growth_min_samples if it was solved with fewer (a class that
  // had just arrived, or just been forgotten on drift: it counts from 0 again). Needs the
  // messages' labels. 0: off.
  double growth_factor = 4;
  int64_t growth_min_samples = 20;
  // The drift detector on the error stream: "adwin" or "page-hinkley" (every policy runs it, so
  // the stats show alarms; only energy-aware acts on them).
  std::string drift_detector = "adwin";

  // Forgetting on drift: after a drift alarm, for the next forget_watch_samples samples, a class
  // whose error over its last forget_class_window samples exceeds its error before them by at
  // least forget_error_jump (in (0, 1]) is forgotten, if it had at least forget_min_class_samples
  // samples before them: its Q column is zeroed and every statistic decays by forget_decay (in
  // (0, 1]; 1: only the column), then the readout is refreshed. Off by default.
  bool forget_on_drift = false;
  double forget_decay = 0.1;
  double forget_error_jump = 0.5;
  int64_t forget_class_window = 20;
  int64_t forget_watch_samples = 2000;
  int64_t forget_min_class_samples = 200;

  // Selective absorption (applied by update/pipeline.h): skip a sample the served readout predicted
  // correctly with a margin (best score minus the second best) >= absorb_margin, once its class
  // has absorb_min_class_samples absorbed samples. 0 (the default): absorb every sample.
  double absorb_margin = 0;
  int64_t absorb_min_class_samples = 1000;
};

struct UpdatePolicyStats {
  uint64_t messages = 0;
  uint64_t samples = 0;
  uint64_t prequential_errors = 0;
  uint64_t refreshes = 0;  // decisions with apply
  uint64_t deferrals = 0;  // decisions without
  uint64_t drift_alarms = 0;
  uint64_t classes_forgotten = 0;  // labels forgotten on drift (a label may be counted twice)
  std::array<uint64_t, kNumDecisionReasons> by_reason{};
  double approved_refresh_joules = 0;  // sum of refresh_joules over applied decisions
  double budget_balance_joules = 0;    // energy-aware: the bucket after the last decision

  uint64_t count(DecisionReason reason) const { return by_reason[static_cast<int>(reason)]; }
};

// OK, or INVALID_ARGUMENT naming the first option out of range ("forget_decay = 2, expected a value
// in (0, 1]"). UpdatePolicy::Create checks the same.
absl::Status ValidatePolicyOptions(const UpdatePolicyOptions& options);

class UpdatePolicy {
 public:
  // `start` is when the policy's clock starts (the bucket is full then; the period counts from it).
  // INVALID_ARGUMENT for an unknown name ("stream-end", "eager", "periodic", "energy-aware"), an
  // unknown drift detector, or out-of-range options. "stream-end" uses none of `options`, so they
  // are not checked for it.
  static absl::StatusOr<std::unique_ptr<UpdatePolicy>> Create(absl::string_view name,
                                                              const UpdatePolicyOptions& options,
                                                              absl::Time start);

  UpdatePolicy(const UpdatePolicy&) = delete;
  UpdatePolicy& operator=(const UpdatePolicy&) = delete;

  // Feeds the message's errors to the drift detector and the error windows, decides, counts the
  // decision. If the decision applies, the caller must refresh before the next message's
  // predictions; the policy's state already assumes the refresh happened.
  Decision OnMessage(const UpdateMessage& message) ABSL_LOCKS_EXCLUDED(mutex_);

  // An Update stream ended, having absorbed `accepted_samples` samples. nullopt if the policy takes
  // no decision at stream end (every policy but stream-end, and stream-end for a stream that
  // accepted nothing); otherwise the decision, counted like OnMessage's, and if it applies the
  // caller must refresh.
  std::optional<Decision> OnStreamEnd(uint64_t accepted_samples, absl::Time now)
      ABSL_LOCKS_EXCLUDED(mutex_);

  // False if OnMessage never applies a refresh (stream-end): the caller need not price a refresh
  // before each message's decision.
  bool decides_per_message() const { return kind_ != PolicyKind::kStreamEnd; }

  UpdatePolicyStats Stats() const ABSL_LOCKS_EXCLUDED(mutex_);
  PolicyKind kind() const { return kind_; }
  // The options (stream-end: forget_on_drift false and absorb_margin 0, whatever was given).
  const UpdatePolicyOptions& options() const { return options_; }
  absl::string_view name() const;

 private:
  UpdatePolicy(PolicyKind kind, const UpdatePolicyOptions& options,
               std::unique_ptr<DriftDetector> detector, absl::Time start);

  Decision Decide(const UpdateMessage& message, bool drift) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  double ExpectedGainErrors() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void RecordRefresh(const UpdateMessage& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  double WindowError() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Forgetting on drift: feeds the per-class error windows; returns the labels to forget now.
  std::vector<std::string> TrackClasses(const UpdateMessage& message, bool drift)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // energy-aware: whether some class grew growth_factor-fold since the last refresh.
  bool SomeClassGrew() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  // A class's prequential errors since it was created or last forgotten: all of them, and the last
  // forget_class_window ones; and its samples when the readout was last solved.
  struct ClassErrors {
    int64_t samples_at_refresh = 0;
    int64_t samples = 0;
    int64_t errors = 0;
    std::deque<uint8_t> recent;
    int64_t recent_errors = 0;
  };

  const PolicyKind kind_;
  const UpdatePolicyOptions options_;

  mutable absl::Mutex mutex_;
  // Null for stream-end.
  std::unique_ptr<DriftDetector> detector_ ABSL_GUARDED_BY(mutex_);
  JouleBucket bucket_ ABSL_GUARDED_BY(mutex_);
  UpdatePolicyStats stats_ ABSL_GUARDED_BY(mutex_);
  absl::Time last_refresh_time_ ABSL_GUARDED_BY(mutex_);
  bool refreshed_once_ ABSL_GUARDED_BY(mutex_) = false;
  // Since the last refresh: samples, the errors of the first reference_samples of them, and the
  // last window_samples errors.
  int64_t samples_since_refresh_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t reference_errors_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t reference_count_ ABSL_GUARDED_BY(mutex_) = 0;
  std::deque<uint8_t> window_ ABSL_GUARDED_BY(mutex_);
  int64_t window_errors_ ABSL_GUARDED_BY(mutex_) = 0;
  // The learning-curve term: the window error just before the last refresh (-1 if unknown), the
  // error drop the last refresh achieved (known once its reference window is full), and the
  // samples between the two refreshes before it.
  double error_before_refresh_ ABSL_GUARDED_BY(mutex_) = -1;
  double last_gain_rate_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t last_gain_samples_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t samples_before_refresh_ ABSL_GUARDED_BY(mutex_) = 0;
  // Forgetting on drift: errors by label, and the samples left to watch since the last alarm.
  absl::flat_hash_map<std::string, ClassErrors> class_errors_ ABSL_GUARDED_BY(mutex_);
  int64_t watch_remaining_ ABSL_GUARDED_BY(mutex_) = 0;
  // Whether this watch has decayed the statistics already (one decay per drift, however many
  // classes it forgets one after another).
  bool decayed_this_watch_ ABSL_GUARDED_BY(mutex_) = false;
};

}  // namespace strata::update

#endif  // STRATA_UPDATE_UPDATE_POLICY_H_
