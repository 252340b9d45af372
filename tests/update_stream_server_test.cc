// A real strata-server started on a bundle whose upper tier is empty (strata-train --empty_upper):
// Predict before any class, classes brought by Update streams, selective absorption counted in
// GetStats, forgetting on drift after a label swap, and policy flags out of range at start-up.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/trainer.h"
#include "tests/server_process.h"
#include "tests/shared_file.h"
#include "tests/suite_fixture.h"

namespace strata {
namespace {

using test::ServerProcess;

constexpr int kFitImages = 1000;

struct Fixture : test::FixtureDir {
  std::string bundle;
  data::LabeledImages stream;  // images after the fit ones

  static void Build(Fixture& f);
};
Fixture*& fixture = test::SuiteFixture<Fixture>::instance;

void Fixture::Build(Fixture& f) {
  f.bundle = f.Path("empty.bundle");
  absl::Status written =
      test::MakeShared("empty-upper.bundle", f.bundle, [](const std::string& out) -> absl::Status {
        absl::StatusOr<data::LabeledImages> fit =
            data::Load("fashion-mnist:train", {0, kFitImages});
        if (!fit.ok()) return fit.status();
        model::TrainOptions options;
        model::LowerTierSpec spec;
        spec.filters = 6;
        spec.expansion = 128;
        spec.pca_images = kFitImages;
        options.architecture = spec.ToArchitecture();
        options.lambda = 10;
        options.int8_calibration_images = 0;  // float lower tier, float64 host Gram
        options.readout_int8 = false;
        options.empty_upper = true;
        model::TrainingData data;
        data.train = {
            model::PixelsToMatrix(fit->pixels, static_cast<Eigen::Index>(fit->image_size())),
            fit->labels};
        absl::StatusOr<model::TrainedModel> trained = model::Train(options, data);
        if (!trained.ok()) return trained.status();
        return model::WriteBundle(trained->bundle, out);
      });
  ASSERT_TRUE(written.ok()) << written;
  absl::StatusOr<model::Bundle> read = model::ReadBundle(f.bundle);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->upper.num_classes(), 0);
  ASSERT_EQ(read->upper.samples_seen(), 0u);
  absl::StatusOr<data::LabeledImages> stream =
      data::Load("fashion-mnist:train", {kFitImages, 12000});
  ASSERT_TRUE(stream.ok()) << stream.status();
  f.stream = *std::move(stream);
}

class UpdateStreamServerTest : public test::SuiteFixtureTest<Fixture> {};

// One message of up to `count` stream images whose label is one of `classes`, from stream index
// `*next` on (advanced past the images used); labels in `swap` are exchanged pairwise.
v1::UpdateRequest Message(const std::vector<std::string>& classes, int count, size_t* next,
                          const std::pair<std::string, std::string>& swap = {}) {
  const data::LabeledImages& images = fixture->stream;
  v1::UpdateRequest request;
  for (; *next < images.size() && request.samples_size() < count; ++*next) {
    std::string label = images.labels[*next];
    if (std::find(classes.begin(), classes.end(), label) == classes.end()) continue;
    if (label == swap.first) {
      label = swap.second;
    } else if (label == swap.second) {
      label = swap.first;
    }
    v1::LabeledSample* sample = request.add_samples();
    sample->set_label(label);
    sample->mutable_sample()->set_pixels(images.pixels.data() + *next * images.image_size(),
                                         images.image_size());
  }
  return request;
}

v1::UpdateSummary Send(ServerProcess& server, const v1::UpdateRequest& request) {
  absl::StatusOr<v1::UpdateSummary> summary =
      server.client().Update(std::span<const v1::UpdateRequest>(&request, 1));
  EXPECT_TRUE(summary.ok()) << summary.status();
  return summary.ok() ? *summary : v1::UpdateSummary();
}

TEST_F(UpdateStreamServerTest, EmptyHeadRefusesPredictUntilAnUpdateBringsClasses) {
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(fixture->bundle, {"--device=float", "--update_policy=eager"});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->labels_size(), 0);
  EXPECT_EQ(info->samples_seen(), 0u);

  v1::PredictRequest predict;
  predict.add_samples()->set_pixels(fixture->stream.pixels.data(), fixture->stream.image_size());
  absl::StatusOr<v1::PredictResponse> refused = server->client().Predict(predict);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("no classes yet"), std::string::npos);
  // A bad request is still INVALID_ARGUMENT: the request is checked before the model's state.
  v1::PredictRequest bad;
  bad.add_samples()->set_pixels("short");
  EXPECT_EQ(server->client().Predict(bad).status().code(), absl::StatusCode::kInvalidArgument);

  size_t next = 0;
  const v1::UpdateSummary first = Send(*server, Message({"T-shirt/top", "Trouser"}, 100, &next));
  EXPECT_EQ(first.accepted(), 100u);
  EXPECT_EQ(first.new_labels_size(), 2);
  EXPECT_EQ(first.prequential_errors(), 100u);  // nothing could be predicted before
  EXPECT_TRUE(first.readout_current());
  absl::StatusOr<v1::PredictResponse> answered = server->client().Predict(predict);
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(answered->predictions_size(), 1);
}

TEST_F(UpdateStreamServerTest, SelectiveAbsorptionSkipsOnlyConfidentKnownClassesAndSaysWhy) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(
      fixture->bundle, {"--device=float", "--update_policy=eager", "--policy_absorb_margin=0.3",
                        "--policy_absorb_min_class_samples=100"});
  ASSERT_NE(server, nullptr);
  size_t next = 0;
  uint64_t accepted = 0, skipped = 0;
  for (int m = 0; m < 8; ++m) {
    const v1::UpdateSummary s = Send(*server, Message({"Trouser", "Bag"}, 50, &next));
    accepted += s.accepted();
    skipped += s.skipped();
  }
  EXPECT_GT(skipped, 0u);  // Trouser and Bag are easy: most are predicted with a wide margin
  // A class never seen before is never skipped, however confident the readout is elsewhere.
  size_t sneaker_next = 0;
  const v1::UpdateSummary fresh = Send(*server, Message({"Sneaker"}, 50, &sneaker_next));
  EXPECT_EQ(fresh.accepted(), 50u);
  EXPECT_EQ(fresh.skipped(), 0u);
  accepted += fresh.accepted();

  absl::StatusOr<v1::Stats> stats = server->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->samples_absorbed() + stats->samples_skipped(), accepted);
  EXPECT_EQ(stats->samples_skipped(), skipped);
  ASSERT_EQ(stats->skipped_by_reason_size(), 1);
  EXPECT_EQ(stats->skipped_by_reason(0).reason(), "confident-correct");
  EXPECT_EQ(stats->skipped_by_reason(0).count(), skipped);
  EXPECT_EQ(stats->prequential_samples(), accepted);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->samples_seen(), stats->samples_absorbed());
}

// Streams Trouser, Bag and Sandal (~260 samples each), then 24 messages with Trouser and Bag
// swapped, into a fresh eager server with `flags`; returns the prequential errors after the swap.
uint64_t ErrorsAfterASwap(const std::vector<std::string>& flags, v1::Stats* stats) {
  std::vector<std::string> args = {"--device=float", "--update_policy=eager"};
  args.insert(args.end(), flags.begin(), flags.end());
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(fixture->bundle, args);
  if (server == nullptr) return 0;
  const std::vector<std::string> classes = {"Trouser", "Bag", "Sandal"};
  size_t next = 0;
  for (int m = 0; m < 16; ++m) Send(*server, Message(classes, 50, &next));
  uint64_t errors = 0;
  for (int m = 0; m < 24; ++m) {
    errors += Send(*server, Message(classes, 50, &next, {"Trouser", "Bag"})).prequential_errors();
  }
  absl::StatusOr<v1::Stats> read = server->client().GetStats();
  EXPECT_TRUE(read.ok()) << read.status();
  if (read.ok()) *stats = *read;
  return errors;
}

TEST_F(UpdateStreamServerTest, ForgettingOnDriftFollowsALabelSwap) {
  v1::Stats with, without;
  const uint64_t forgetting =
      ErrorsAfterASwap({"--policy_forget_on_drift", "--policy_forget_decay=0.05"}, &with);
  const uint64_t remembering = ErrorsAfterASwap({}, &without);
  EXPECT_GE(with.drift_alarms(), 1u);
  EXPECT_EQ(with.classes_forgotten(), 2u);  // Trouser and Bag, not Sandal
  bool counted = false;
  for (const v1::DecisionCount& d : with.decisions()) {
    if (d.reason() == "forget-classes") counted = d.applied() && d.count() >= 1;
  }
  EXPECT_TRUE(counted);
  EXPECT_EQ(without.classes_forgotten(), 0u);
  // The old samples outvote the swapped ones for a long while unless they are let go.
  EXPECT_LT(forgetting * 2, remembering) << forgetting << " vs " << remembering;
}

TEST_F(UpdateStreamServerTest, PolicyFlagsOutOfRangeFailAtStartUpNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--policy_forget_decay=2", "--policy_forget_decay = 2, expected a value in (0, 1]"},
      {"--policy_absorb_margin=-1", "--policy_absorb_margin = -1"},
      {"--policy_absorb_min_class_samples=0", "--policy_absorb_min_class_samples = 0"},
      {"--policy_forget_error_jump=0", "--policy_forget_error_jump = 0"},
      {"--policy_forget_class_window=0", "--policy_forget_class_window = 0"},
      {"--policy_period_samples=-5", "--policy_period_samples = -5"},
      {"--policy_budget_watts=-1", "--policy_budget_watts = -1"},
  };
  int run = 0;
  for (const auto& [flag, expected] : cases) {
    const test::ServerExit exit =
        test::RunServerToExit({absl::StrCat("--bundle=", fixture->bundle), "--address=127.0.0.1:0",
                               "--update_policy=energy-aware", flag},
                              absl::StrCat(fixture->dir, "/stderr.", run++));
    EXPECT_NE(exit.code, 0) << flag;
    EXPECT_NE(exit.stderr_text.find(expected), std::string::npos) << exit.stderr_text;
  }
  const test::ServerExit durable = test::RunServerToExit(
      {absl::StrCat("--bundle=", fixture->bundle), "--address=127.0.0.1:0", "--update_policy=eager",
       "--policy_absorb_margin=0.5", absl::StrCat("--state_dir=", fixture->dir, "/state")},
      absl::StrCat(fixture->dir, "/stderr.durable"));
  EXPECT_NE(durable.code, 0);
  EXPECT_NE(durable.stderr_text.find("cannot be combined with --state_dir"), std::string::npos)
      << durable.stderr_text;
}

}  // namespace
}  // namespace strata
