// Update policies on scripted streams with an injected clock: which messages refresh, and why.
#include "update/update_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace strata::update {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

// `n` errors with every `one_in`-th sample an error (one_in 0: none).
std::vector<uint8_t> Errors(int n, int one_in) {
  std::vector<uint8_t> e(n, 0);
  if (one_in > 0) {
    for (int i = one_in - 1; i < n; i += one_in) e[i] = 1;
  }
  return e;
}

std::unique_ptr<UpdatePolicy> Make(absl::string_view name,
                                   const UpdatePolicyOptions& options = {}) {
  auto policy = UpdatePolicy::Create(name, options, kStart);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return *std::move(policy);
}

TEST(JouleBucketTest, FillsAtItsRateUpToItsCapacity) {
  JouleBucket bucket(/*watts=*/2, /*capacity_joules=*/10, kStart);
  EXPECT_EQ(bucket.balance(), 10);
  EXPECT_TRUE(bucket.TryTake(7));
  EXPECT_FALSE(bucket.TryTake(4));  // nothing taken
  EXPECT_EQ(bucket.balance(), 3);
  bucket.Refill(kStart + absl::Seconds(1));
  EXPECT_EQ(bucket.balance(), 5);
  bucket.Refill(kStart);  // time going backwards adds nothing
  EXPECT_EQ(bucket.balance(), 5);
  bucket.Refill(kStart + absl::Seconds(100));
  EXPECT_EQ(bucket.balance(), 10);  // capped
  bucket.ForceTake(12);
  EXPECT_EQ(bucket.balance(), -2);  // a debt
  EXPECT_FALSE(bucket.TryTake(0.5));
}

TEST(UpdatePolicyTest, CreateRejectsUnknownNamesAndBadOptions) {
  EXPECT_FALSE(UpdatePolicy::Create("lazy", {}, kStart).ok());
  UpdatePolicyOptions bad;
  bad.drift_detector = "cusum";
  EXPECT_FALSE(UpdatePolicy::Create("eager", bad, kStart).ok());
  UpdatePolicyOptions negative;
  negative.budget_watts = -1;
  EXPECT_FALSE(UpdatePolicy::Create("energy-aware", negative, kStart).ok());
  EXPECT_EQ(Make("energy-aware")->name(), "energy-aware");
}

TEST(UpdatePolicyTest, EagerRefreshesAfterEveryMessageWithSamples) {
  auto policy = Make("eager");
  const auto errors = Errors(100, 10);
  EXPECT_EQ(policy->OnMessage({errors, true, 0.01, kStart}).reason, DecisionReason::kNewClass);
  for (int m = 1; m <= 5; ++m) {
    const Decision d = policy->OnMessage({errors, false, 0.01, kStart + absl::Seconds(m)});
    EXPECT_TRUE(d.apply);
    EXPECT_EQ(d.reason, DecisionReason::kEveryMessage);
  }
  const Decision empty = policy->OnMessage({{}, false, 0.01, kStart + absl::Seconds(9)});
  EXPECT_FALSE(empty.apply);
  EXPECT_EQ(empty.reason, DecisionReason::kNoSamples);

  const UpdatePolicyStats stats = policy->Stats();
  EXPECT_EQ(stats.messages, 7u);
  EXPECT_EQ(stats.samples, 600u);
  EXPECT_EQ(stats.prequential_errors, 60u);
  EXPECT_EQ(stats.refreshes, 6u);
  EXPECT_EQ(stats.deferrals, 1u);
  EXPECT_EQ(stats.count(DecisionReason::kEveryMessage), 5u);
  EXPECT_EQ(stats.count(DecisionReason::kNewClass), 1u);
  EXPECT_NEAR(stats.approved_refresh_joules, 0.06, 1e-12);
}

TEST(UpdatePolicyTest, PeriodicRefreshesBySampleCountOrTime) {
  UpdatePolicyOptions options;
  options.period_samples = 300;
  options.period = absl::Seconds(60);
  auto policy = Make("periodic", options);
  const auto errors = Errors(100, 10);
  EXPECT_TRUE(policy->OnMessage({errors, true, 0.01, kStart}).apply);  // new class
  std::vector<DecisionReason> reasons;
  for (int m = 1; m <= 6; ++m) {
    reasons.push_back(policy->OnMessage({errors, false, 0.01, kStart + absl::Seconds(m)}).reason);
  }
  EXPECT_EQ(reasons,
            (std::vector<DecisionReason>{DecisionReason::kNotDue, DecisionReason::kNotDue,
                                         DecisionReason::kSamplesDue, DecisionReason::kNotDue,
                                         DecisionReason::kNotDue, DecisionReason::kSamplesDue}));
  // 100 samples, then a minute of silence: the time period is due.
  EXPECT_FALSE(policy->OnMessage({errors, false, 0.01, kStart + absl::Seconds(10)}).apply);
  const Decision late = policy->OnMessage({Errors(1, 0), false, 0.01, kStart + absl::Seconds(67)});
  EXPECT_TRUE(late.apply);
  EXPECT_EQ(late.reason, DecisionReason::kTimeDue);
  // A new class does not wait for the period.
  const Decision fresh = policy->OnMessage({errors, true, 0.01, kStart + absl::Seconds(68)});
  EXPECT_TRUE(fresh.apply);
  EXPECT_EQ(fresh.reason, DecisionReason::kNewClass);
}

// Energy-aware, refresh cost 0.05 J, 1 mJ per avoided error: a refresh must avoid 50 errors.
UpdatePolicyOptions EnergyAwareOptions() {
  UpdatePolicyOptions options;
  options.joules_per_error = 1e-3;
  options.budget_watts = 0.01;
  options.burst_joules = 0.2;
  options.window_samples = 500;
  options.reference_samples = 300;
  options.min_horizon_samples = 2000;
  return options;
}
constexpr double kRefreshJoules = 0.05;

TEST(UpdatePolicyTest, EnergyAwareDefersWhileTheErrorIsFlat) {
  auto policy = Make("energy-aware", EnergyAwareOptions());
  absl::Time now = kStart;
  EXPECT_TRUE(policy->OnMessage({Errors(100, 10), true, kRefreshJoules, now}).apply);
  for (int m = 0; m < 100; ++m) {
    now += absl::Seconds(1);
    const Decision d = policy->OnMessage({Errors(100, 10), false, kRefreshJoules, now});
    ASSERT_FALSE(d.apply) << "message " << m;
    EXPECT_EQ(d.reason, DecisionReason::kGainTooSmall);
  }
  const UpdatePolicyStats stats = policy->Stats();
  EXPECT_EQ(stats.refreshes, 1u);
  EXPECT_EQ(stats.count(DecisionReason::kGainTooSmall), 100u);
  EXPECT_EQ(stats.drift_alarms, 0u);
}

TEST(UpdatePolicyTest, EnergyAwareRefreshesWhenTheErrorRises) {
  auto policy = Make("energy-aware", EnergyAwareOptions());
  absl::Time now = kStart;
  policy->OnMessage({Errors(100, 10), true, kRefreshJoules, now});
  for (int m = 0; m < 10; ++m) {  // 10% error after the refresh: the reference
    now += absl::Seconds(1);
    ASSERT_FALSE(policy->OnMessage({Errors(100, 10), false, kRefreshJoules, now}).apply);
  }
  // The error jumps to 50%: (0.5 - 0.1) x 2000 samples x 1 mJ = 0.8 J >> 0.05 J within a few
  // messages, or a drift alarm first.
  int refreshed_after = -1;
  Decision d;
  for (int m = 0; m < 10 && refreshed_after < 0; ++m) {
    now += absl::Seconds(1);
    d = policy->OnMessage({Errors(100, 2), false, kRefreshJoules, now});
    if (d.apply) refreshed_after = m;
  }
  ASSERT_GE(refreshed_after, 0);
  EXPECT_LE(refreshed_after, 3);
  EXPECT_TRUE(d.reason == DecisionReason::kGainPays || d.reason == DecisionReason::kDrift);
  if (d.reason == DecisionReason::kGainPays) {
    EXPECT_GE(d.expected_gain_joules, kRefreshJoules);
  }
}

TEST(UpdatePolicyTest, EnergyAwareBudgetCapsRefreshesButNotNewClasses) {
  UpdatePolicyOptions options = EnergyAwareOptions();
  options.budget_watts = 0;     // nothing ever refills
  options.burst_joules = 0.06;  // one refresh
  auto policy = Make("energy-aware", options);
  absl::Time now = kStart;
  // The new-class refresh overdraws the bucket: 0.06 - 0.05 = 0.01 left.
  EXPECT_EQ(policy->OnMessage({Errors(100, 10), true, kRefreshJoules, now}).reason,
            DecisionReason::kNewClass);
  for (int m = 0; m < 5; ++m) {
    now += absl::Seconds(1);
    policy->OnMessage({Errors(100, 10), false, kRefreshJoules, now});
  }
  // A sustained 66% error: worth refreshing every time, but the bucket cannot pay.
  std::vector<uint8_t> bad(100, 1);
  for (int i = 0; i < 100; i += 3) bad[i] = 0;  // 66% errors
  for (int m = 0; m < 20; ++m) {
    now += absl::Seconds(1);
    const Decision d = policy->OnMessage({bad, false, kRefreshJoules, now});
    EXPECT_FALSE(d.apply);
  }
  UpdatePolicyStats stats = policy->Stats();
  EXPECT_EQ(stats.refreshes, 1u);
  EXPECT_GT(stats.count(DecisionReason::kBudgetExhausted), 10u);
  EXPECT_NEAR(stats.budget_balance_joules, 0.01, 1e-12);
  // A new class is still refreshed, into debt.
  EXPECT_TRUE(policy->OnMessage({bad, true, kRefreshJoules, now}).apply);
  EXPECT_LT(policy->Stats().budget_balance_joules, 0);
}

TEST(UpdatePolicyTest, EnergyAwareLearningCurveTermFollowsARefreshThatHelped) {
  // A refresh after 1000 samples at 40% error was followed by 10% error: it removed 0.3 errors per
  // sample. The error is flat after it, so there is no staleness gap, but the next 1000 samples are
  // expected to help again pro rata: a refresh follows once 0.3 x s/1000 x 2000 x 1 mJ >= 0.05 J.
  auto policy = Make("energy-aware", EnergyAwareOptions());
  absl::Time now = kStart;
  std::vector<uint8_t> forty(100, 0);
  for (int i = 0; i < 40; ++i) forty[i * 2] = 1;
  policy->OnMessage({forty, true, kRefreshJoules, now});
  for (int m = 0; m < 10; ++m) {
    now += absl::Seconds(1);
    ASSERT_FALSE(policy->OnMessage({forty, false, kRefreshJoules, now}).apply);
  }
  now += absl::Seconds(1);
  ASSERT_TRUE(policy->OnMessage({forty, true, kRefreshJoules, now}).apply);  // a new class
  int first_refresh = -1;
  for (int m = 0; m < 10 && first_refresh < 0; ++m) {
    now += absl::Seconds(1);
    const Decision d = policy->OnMessage({Errors(100, 10), false, kRefreshJoules, now});
    if (d.apply) {
      first_refresh = m;
      EXPECT_EQ(d.reason, DecisionReason::kGainPays);
    }
  }
  // The learning term is known once the reference window (300 samples) is full.
  EXPECT_EQ(first_refresh, 2);
}

}  // namespace
}  // namespace strata::update

namespace strata::update {
namespace {

// Messages of 100 samples over classes "a".."e" (20 each, interleaved): class "b" is wrong on
// `b_error_one_in`-th of its samples (0: never), every other class on none except a tenth of "a".
struct LabelledMessage {
  std::vector<uint8_t> errors;
  std::vector<std::string> labels;
};
LabelledMessage ClassMessage(bool b_always_wrong) {
  LabelledMessage m;
  const std::vector<std::string> classes = {"a", "b", "c", "d", "e"};
  for (int i = 0; i < 100; ++i) {
    const std::string& label = classes[i % 5];
    m.labels.push_back(label);
    m.errors.push_back(label == "b" ? (b_always_wrong ? 1 : 0) : (label == "a" && i % 10 == 0));
  }
  return m;
}

UpdatePolicyOptions ForgetOptions() {
  UpdatePolicyOptions options;
  options.forget_on_drift = true;
  options.forget_decay = 0.25;
  return options;
}

TEST(UpdatePolicyForgetTest, ForgetsOnlyTheClassWhoseErrorJumpedAfterAnAlarm) {
  auto policy = Make("eager", ForgetOptions());
  const LabelledMessage calm = ClassMessage(false), swapped = ClassMessage(true);
  absl::Time now = kStart;
  for (int m = 0; m < 40; ++m) {  // 800 samples of "b" before the change, all right
    const Decision d = policy->OnMessage({calm.errors, false, 0.01, now, calm.labels});
    EXPECT_TRUE(d.forget_labels.empty());
    now += absl::Seconds(1);
  }
  std::vector<std::string> forgotten;
  double decay = 0;
  for (int m = 0; m < 30 && forgotten.empty(); ++m) {
    const Decision d = policy->OnMessage({swapped.errors, false, 0.01, now, swapped.labels});
    if (!d.forget_labels.empty()) {
      EXPECT_TRUE(d.apply);
      EXPECT_EQ(d.reason, DecisionReason::kForgetClasses);
      forgotten = d.forget_labels;
      decay = d.forget_decay;
    }
    now += absl::Seconds(1);
  }
  EXPECT_EQ(forgotten, std::vector<std::string>{"b"});
  EXPECT_EQ(decay, 0.25);
  const UpdatePolicyStats stats = policy->Stats();
  EXPECT_GE(stats.drift_alarms, 1u);
  EXPECT_EQ(stats.classes_forgotten, 1u);
  EXPECT_EQ(stats.count(DecisionReason::kForgetClasses), 1u);
  // "b" starts over: its new (wrong) errors are its baseline, so it is not forgotten again.
  for (int m = 0; m < 30; ++m) {
    EXPECT_TRUE(policy->OnMessage({swapped.errors, false, 0.01, now, swapped.labels})
                    .forget_labels.empty());
    now += absl::Seconds(1);
  }
}

// energy-aware: once a drift's watch has forgotten a class, the alarms that follow in the same
// watch (the error still rising while the class is re-learnt) do not refresh; without forgetting
// the same alarms do.
TEST(UpdatePolicyForgetTest, AlarmsAfterAForgetInTheSameWatchDoNotRefresh) {
  const LabelledMessage calm = ClassMessage(false), swapped = ClassMessage(true);
  // A second rise of the error, spread so that no other class's error jumps by
  // forget_error_jump (0.5): 40 % of every class's samples wrong ("b" stays all wrong).
  LabelledMessage worse = swapped;
  for (int i = 0; i < 100; ++i) worse.errors[i] |= (i / 5) % 5 < 2;
  UpdatePolicyOptions options = ForgetOptions();
  options.joules_per_error = 0;  // no gain-pays
  options.growth_factor = 0;     // no class growth
  for (const bool forget : {true, false}) {
    options.forget_on_drift = forget;
    auto policy = Make("energy-aware", options);
    absl::Time now = kStart;
    std::vector<const LabelledMessage*> stream(40, &calm);
    stream.insert(stream.end(), 5, &swapped);
    stream.insert(stream.end(), 10, &worse);
    for (const LabelledMessage* m : stream) {
      policy->OnMessage({m->errors, false, 0.01, now, m->labels});
      now += absl::Seconds(1);
    }
    const UpdatePolicyStats stats = policy->Stats();
    EXPECT_GE(stats.drift_alarms, 2u) << "forget " << forget;
    if (forget) {
      EXPECT_EQ(stats.count(DecisionReason::kForgetClasses), 1u);
      EXPECT_EQ(stats.count(DecisionReason::kDrift), 0u);  // the first alarm forgot "b"
    } else {
      EXPECT_EQ(stats.count(DecisionReason::kDrift), stats.drift_alarms);
    }
  }
}

TEST(UpdatePolicyForgetTest, NoAlarmOrNoLabelsOrOptionOffForgetsNothing) {
  const LabelledMessage calm = ClassMessage(false), swapped = ClassMessage(true);
  UpdatePolicyOptions off = ForgetOptions();
  off.forget_on_drift = false;
  for (const UpdatePolicyOptions& options : {off, ForgetOptions()}) {
    auto policy = Make("eager", options);
    absl::Time now = kStart;
    for (int m = 0; m < 40; ++m) policy->OnMessage({calm.errors, false, 0.01, now, calm.labels});
    for (int m = 0; m < 30; ++m) {
      // Without labels (the second policy) the jump cannot be attributed to a class.
      const Decision d =
          options.forget_on_drift
              ? policy->OnMessage({swapped.errors, false, 0.01, now})
              : policy->OnMessage({swapped.errors, false, 0.01, now, swapped.labels});
      EXPECT_TRUE(d.forget_labels.empty());
    }
    EXPECT_EQ(policy->Stats().classes_forgotten, 0u);
  }
}

TEST(UpdatePolicyGrowthTest, EnergyAwareRefreshesAsAClassGrowsGeometrically) {
  UpdatePolicyOptions options;
  options.joules_per_error = 0;  // the gain never pays: only growth refreshes
  options.growth_factor = 4;
  options.growth_min_samples = 50;  // the first message brings 50
  auto policy = Make("energy-aware", options);
  const std::vector<uint8_t> errors(50, 1);
  const std::vector<std::string> labels(50, "x");
  absl::Time now = kStart;
  std::vector<int> refreshed_at;  // samples of "x" when a refresh was decided
  for (int m = 1; m <= 80; ++m) {
    const Decision d = policy->OnMessage({errors, m == 1, 0.001, now, labels});
    if (d.apply) {
      EXPECT_EQ(d.reason, m == 1 ? DecisionReason::kNewClass : DecisionReason::kClassGrown);
      refreshed_at.push_back(50 * m);
    }
    now += absl::Seconds(1);
  }
  EXPECT_EQ(refreshed_at, (std::vector<int>{50, 200, 800, 3200}));
  // Off: only the new class refreshes.
  options.growth_factor = 0;
  auto off = Make("energy-aware", options);
  int refreshes = 0;
  for (int m = 1; m <= 80; ++m)
    refreshes += off->OnMessage({errors, m == 1, 0.001, now, labels}).apply;
  EXPECT_EQ(refreshes, 1);
}

// A class the readout was solved with fewer than growth_min_samples samples of (it had just
// arrived, or just been forgotten) is due at growth_min_samples, not growth_factor times its
// handful: with factor 16, a class solved at 10 samples is re-solved at 40, then at 640.
TEST(UpdatePolicyGrowthTest, AClassSolvedBelowTheMinimumIsDueAtTheMinimum) {
  UpdatePolicyOptions options;
  options.joules_per_error = 0;  // only growth refreshes
  options.growth_factor = 16;
  options.growth_min_samples = 40;
  auto policy = Make("energy-aware", options);
  const std::vector<uint8_t> errors(10, 1);
  const std::vector<std::string> labels(10, "x");
  absl::Time now = kStart;
  std::vector<int> refreshed_at;
  for (int m = 1; m <= 100; ++m) {
    if (policy->OnMessage({errors, m == 1, 0.001, now, labels}).apply)
      refreshed_at.push_back(10 * m);
    now += absl::Seconds(1);
  }
  EXPECT_EQ(refreshed_at, (std::vector<int>{10, 40, 640}));
}

TEST(UpdatePolicyForgetTest, OptionsOutOfRangeAreNamed) {
  const auto message = [](UpdatePolicyOptions o) {
    return std::string(ValidatePolicyOptions(o).message());
  };
  UpdatePolicyOptions o;
  EXPECT_TRUE(ValidatePolicyOptions(o).ok());
  o.forget_decay = 0;
  EXPECT_EQ(message(o), "forget_decay = 0, expected a value in (0, 1]");
  o = {};
  o.absorb_margin = -0.5;
  EXPECT_EQ(message(o), "absorb_margin = -0.5, expected a value in [0, 2] (0: absorb all)");
  o = {};
  o.absorb_min_class_samples = 0;
  EXPECT_EQ(message(o), "absorb_min_class_samples = 0, expected >= 1");
  o = {};
  o.forget_error_jump = 1.5;
  EXPECT_EQ(message(o), "forget_error_jump = 1.5, expected a value in (0, 1]");
  o = {};
  o.growth_factor = 0.5;
  EXPECT_EQ(message(o), "growth_factor = 0.5, expected 0 (off) or a value > 1");
  o = {};
  o.period_samples = -1;
  EXPECT_EQ(message(o), "period_samples = -1, expected >= 0");
  EXPECT_FALSE(UpdatePolicy::Create("periodic", o, kStart).ok());
  // stream-end uses no option: neither forgetting nor selective absorption applies to it.
  UpdatePolicyOptions both = ForgetOptions();
  both.absorb_margin = 0.5;
  auto stream_end = Make("stream-end", both);
  EXPECT_FALSE(stream_end->options().forget_on_drift);
  EXPECT_EQ(stream_end->options().absorb_margin, 0);
  EXPECT_EQ(Make("energy-aware", both)->options().absorb_margin, 0.5);
}

}  // namespace
}  // namespace strata::update
