// Integration tests: a real strata-server process on loopback, driven through the client library.
//
// Each test process fits a small real model (Fashion-MNIST), writes it as a bundle, starts
// strata-server on a free port (--address=127.0.0.1:0 --port_file) and talks to it over gRPC. The
// expected answers come from the model API run in this process on the same bundle.
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "data/dataset.h"
#include "fpga/energy.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/tensor.h"
#include "model/upper_tier.h"
#include "tests/server_process.h"
#include "tests/suite_fixture.h"
#include "update/energy_meter.h"

namespace strata {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using test::kMaxBatch;
using test::kMaxMessageBytes;
using test::ServerProcess;

constexpr int kTrainImages = 2000;
constexpr int kInputSize = 28 * 28;

// ---- data and the reference model ----------------------------------------------------------------

model::MatrixF ToMatrix(const data::LabeledImages& images, size_t begin, size_t end) {
  return model::PixelsToMatrix(
      std::span<const uint8_t>(images.image(begin), (end - begin) * images.image_size()),
      static_cast<Eigen::Index>(images.image_size()));
}

v1::Sample PixelSample(const data::LabeledImages& images, size_t i) {
  v1::Sample sample;
  sample.set_pixels(images.image(i), images.image_size());
  return sample;
}

v1::LabeledSample Labeled(const data::LabeledImages& images, size_t i) {
  v1::LabeledSample sample;
  *sample.mutable_sample() = PixelSample(images, i);
  sample.set_label(images.labels[i]);
  return sample;
}

// What the test shares across its tests (built once per test process).
struct Fixture : test::FixtureDir {
  std::string bundle_path;  // the bundle the servers serve
  // The same bundle, read back: the reference model (optional only because a Bundle has no
  // default constructor).
  std::optional<model::Bundle> bundle;
  data::LabeledImages updates;  // training images the bundle has not seen, for Update streams
  data::LabeledImages heldout;  // test images

  static void Build(Fixture& f);
};
Fixture*& fixture = test::SuiteFixture<Fixture>::instance;

void Fixture::Build(Fixture& f) {
  f.bundle_path = f.Path("model.bundle");

  absl::StatusOr<data::LabeledImages> updates =
      data::Load("fashion-mnist:train", {kTrainImages, 1000});
  ASSERT_TRUE(updates.ok()) << updates.status();
  absl::StatusOr<data::LabeledImages> heldout = data::Load("fashion-mnist:test", {0, 1000});
  ASSERT_TRUE(heldout.ok()) << heldout.status();
  f.updates = *std::move(updates);
  f.heldout = *std::move(heldout);
  absl::Status written = test::WriteFashionBundle(f.bundle_path, kTrainImages);
  ASSERT_TRUE(written.ok()) << written;

  absl::StatusOr<model::Bundle> read = model::ReadBundle(f.bundle_path);
  ASSERT_TRUE(read.ok()) << read.status();
  f.bundle.emplace(*std::move(read));
}

// Scores of `images` under the reference upper tier `upper`.
model::MatrixF ReferenceScores(const model::UpperTier& upper, const model::MatrixF& images) {
  absl::StatusOr<model::Readout> readout = upper.Solve();
  EXPECT_TRUE(readout.ok()) << readout.status();
  if (!readout.ok()) return {};
  return readout->Scores(fixture->bundle->lower->Features(images));
}

// Absorbs labelled rows into the reference upper tier.
void ReferenceAbsorb(model::UpperTier& upper, const model::MatrixF& images,
                     const std::vector<std::string>& labels) {
  ASSERT_TRUE(upper.AbsorbLabeled(fixture->bundle->lower->Features(images), labels).ok());
}

using Scores = std::vector<std::vector<float>>;

Scores ScoresOf(const v1::PredictResponse& response) {
  Scores scores;
  for (const v1::Prediction& p : response.predictions()) {
    scores.emplace_back(p.scores().begin(), p.scores().end());
  }
  return scores;
}

// Server scores equal reference scores to 1e-4 relative to the largest score.
void ExpectScoresNear(const Scores& actual, const model::MatrixF& expected) {
  ASSERT_EQ(actual.size(), static_cast<size_t>(expected.rows()));
  const float scale = std::max(1.0f, expected.cwiseAbs().maxCoeff());
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_EQ(actual[i].size(), static_cast<size_t>(expected.cols())) << "sample " << i;
    for (size_t c = 0; c < actual[i].size(); ++c) {
      EXPECT_NEAR(actual[i][c], expected(i, c), 1e-4f * scale) << "sample " << i << " class " << c;
    }
  }
}

// ---- the server process --------------------------------------------------------------------------

class ServerTest : public test::SuiteFixtureTest<Fixture> {
 protected:
  void SetUp() override {
    SuiteFixtureTest::SetUp();
    if (HasFatalFailure()) return;
    server_ = ServerProcess::Start(fixture->bundle_path);
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_.reset(); }

  client::Client& client() { return server_->client(); }

  // The first `n` held-out images, as a Predict request asking for scores.
  v1::PredictRequest Probe(int n = 16) const {
    v1::PredictRequest request;
    request.set_return_scores(true);
    for (int i = 0; i < n; ++i) *request.add_samples() = PixelSample(fixture->heldout, i);
    return request;
  }

  std::unique_ptr<ServerProcess> server_;
};

// ---- tests ---------------------------------------------------------------------------------------

TEST_F(ServerTest, HealthReflectionAndModelInfo) {
  absl::StatusOr<client::HealthStatus> health = client().CheckHealth("strata.v1.Strata");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::HealthStatus::kServing);
  health = client().CheckHealth("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::HealthStatus::kServing);
  EXPECT_EQ(client().CheckHealth("no.such.Service").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<v1::ModelInfo> info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  const model::Bundle& bundle = *fixture->bundle;
  EXPECT_EQ(info->input_height(), 28u);
  EXPECT_EQ(info->input_width(), 28u);
  EXPECT_EQ(info->input_channels(), 1u);
  EXPECT_EQ(info->input_size(), static_cast<uint32_t>(kInputSize));
  EXPECT_EQ(info->feature_size(), static_cast<uint32_t>(bundle.lower->feature_size()));
  EXPECT_THAT(info->labels(), ::testing::ElementsAreArray(bundle.upper.labels()));
  EXPECT_EQ(info->model_version(), bundle.version);
  EXPECT_EQ(info->samples_seen(), static_cast<uint64_t>(kTrainImages));
  EXPECT_EQ(info->max_batch(), static_cast<uint32_t>(kMaxBatch));
  EXPECT_DOUBLE_EQ(info->ridge_lambda(), 10.0);
  EXPECT_EQ(info->lower_tier_stages_size(), static_cast<int>(bundle.lower->Describe().size()));
  EXPECT_FALSE(info->upper_tier().empty());

  // Server reflection, as grpcurl uses it: list the services, then fetch the file declaring ours.
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(client().channel());
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  EXPECT_THAT(services, ::testing::Contains("strata.v1.Strata"));
  request.set_file_containing_symbol("strata.v1.Strata");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_GE(response.file_descriptor_response().file_descriptor_proto_size(), 1)
      << response.DebugString();
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(response.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.package(), "strata.v1");
  ASSERT_EQ(file.service_size(), 1);
  std::vector<std::string> methods;
  for (const auto& method : file.service(0).method()) methods.push_back(method.name());
  EXPECT_THAT(methods, ElementsAre("ExtractFeatures", "Predict", "Update", "Snapshot",
                                   "GetModelInfo", "GetStats"));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServerTest, PredictAndExtractFeaturesMatchTheModel) {
  const data::LabeledImages& heldout = fixture->heldout;
  size_t correct = 0;
  for (size_t begin = 0; begin < heldout.size(); begin += kMaxBatch) {
    const size_t end = std::min(heldout.size(), begin + kMaxBatch);
    v1::PredictRequest request;
    for (size_t i = begin; i < end; ++i) *request.add_samples() = PixelSample(heldout, i);
    absl::StatusOr<v1::PredictResponse> response = client().Predict(request);
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->predictions_size(), static_cast<int>(end - begin));
    EXPECT_EQ(response->model_version(), 1u);
    for (size_t i = begin; i < end; ++i) {
      const v1::Prediction& p = response->predictions(static_cast<int>(i - begin));
      EXPECT_TRUE(p.scores().empty());  // not asked for
      EXPECT_EQ(fixture->bundle->upper.labels()[p.class_index()], p.label());
      correct += p.label() == heldout.labels[i];
    }
  }
  const double accuracy = static_cast<double>(correct) / heldout.size();
  // Chance is 0.1; this small model gets about 0.8.
  EXPECT_GT(accuracy, 0.6) << correct << "/" << heldout.size();

  // Scores and features equal the model API's on the same bundle.
  const v1::PredictRequest probe = Probe();
  absl::StatusOr<v1::PredictResponse> predicted = client().Predict(probe);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  const model::MatrixF images = ToMatrix(heldout, 0, probe.samples_size());
  ExpectScoresNear(ScoresOf(*predicted), ReferenceScores(fixture->bundle->upper, images));

  v1::ExtractFeaturesRequest extract;
  *extract.mutable_samples() = probe.samples();
  // One sample as floats: the same values must give the same features.
  v1::Sample* as_floats = extract.mutable_samples(1);
  as_floats->mutable_values()->mutable_values()->Add(images.row(1).data(),
                                                     images.row(1).data() + kInputSize);
  absl::StatusOr<v1::ExtractFeaturesResponse> features = client().ExtractFeatures(extract);
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(features->model_version(), 1u);
  const model::MatrixF expected = fixture->bundle->lower->Features(images);
  ASSERT_EQ(features->features_size(), expected.rows());
  for (int i = 0; i < features->features_size(); ++i) {
    ASSERT_EQ(features->features(i).values_size(), expected.cols());
    for (int j = 0; j < expected.cols(); ++j) {
      ASSERT_NEAR(features->features(i).values(j), expected(i, j),
                  1e-4f * std::max(1.0f, std::abs(expected(i, j))))
          << "sample " << i << " feature " << j;
    }
  }

  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->predict().ok(), (heldout.size() + kMaxBatch - 1) / kMaxBatch + 1);
  EXPECT_EQ(stats->predict().failed(), 0u);
  EXPECT_EQ(stats->extract_features().ok(), 1u);
  EXPECT_EQ(stats->samples_predicted(), heldout.size() + probe.samples_size());
  EXPECT_EQ(stats->samples_extracted(), static_cast<uint64_t>(probe.samples_size()));
  EXPECT_EQ(stats->model_version(), 1u);
  EXPECT_GE(stats->uptime_seconds(), 0.0);
}

TEST_F(ServerTest, BadInputsFailClearlyAndChangeNothing) {
  const v1::PredictRequest probe = Probe();
  absl::StatusOr<v1::PredictResponse> before = client().Predict(probe);
  ASSERT_TRUE(before.ok()) << before.status();
  absl::StatusOr<v1::ModelInfo> info_before = client().GetModelInfo();
  ASSERT_TRUE(info_before.ok()) << info_before.status();

  struct Case {
    std::string name;
    v1::PredictRequest request;
    absl::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  auto good = [] { return PixelSample(fixture->heldout, 0); };
  auto floats = [](int n, float fill) {
    v1::Sample sample;
    for (int i = 0; i < n; ++i) sample.mutable_values()->add_values(fill);
    return sample;
  };
  {
    Case c{"wrong pixel count",
           {},
           absl::StatusCode::kInvalidArgument,
           "samples[1].pixels: expected 784 bytes, got 780"};
    *c.request.add_samples() = good();
    c.request.add_samples()->set_pixels(std::string(780, '\x10'));
    cases.push_back(c);
  }
  {
    Case c{"wrong float count",
           {},
           absl::StatusCode::kInvalidArgument,
           "samples[0].values.values: expected 784 floats, got 783"};
    *c.request.add_samples() = floats(783, 0.5f);
    cases.push_back(c);
  }
  {
    Case c{"NaN",
           {},
           absl::StatusCode::kInvalidArgument,
           "samples[2].values.values[17]: expected a finite float, got NaN"};
    *c.request.add_samples() = good();
    *c.request.add_samples() = good();
    v1::Sample nan = floats(kInputSize, 0.5f);
    nan.mutable_values()->set_values(17, std::numeric_limits<float>::quiet_NaN());
    *c.request.add_samples() = nan;
    cases.push_back(c);
  }
  {
    Case c{"Inf",
           {},
           absl::StatusCode::kInvalidArgument,
           "samples[0].values.values[3]: expected a finite float, got -Inf"};
    v1::Sample inf = floats(kInputSize, 0.5f);
    inf.mutable_values()->set_values(3, -std::numeric_limits<float>::infinity());
    *c.request.add_samples() = inf;
    cases.push_back(c);
  }
  {
    Case c{"no input",
           {},
           absl::StatusCode::kInvalidArgument,
           "samples[1]: neither pixels nor values set"};
    *c.request.add_samples() = good();
    c.request.add_samples();
    cases.push_back(c);
  }
  cases.push_back(Case{"empty batch",
                       {},
                       absl::StatusCode::kInvalidArgument,
                       "samples: empty batch, expected 1..64 samples"});
  {
    Case c{"batch over max_batch",
           {},
           absl::StatusCode::kResourceExhausted,
           "samples: batch of 65 samples, expected at most 64"};
    for (int i = 0; i < kMaxBatch + 1; ++i) *c.request.add_samples() = good();
    cases.push_back(c);
  }
  {
    // One sample of ~280 KB, over --max_message_bytes (under gRPC's own limit, 4x): the service
    // refuses it, naming the limit, and counts it.
    Case c{"message over the size limit",
           {},
           absl::StatusCode::kResourceExhausted,
           "over the server's message-size limit of 262144 bytes (--max_message_bytes)"};
    *c.request.add_samples() = floats(70000, 0.5f);
    cases.push_back(c);
  }

  int failed_predicts = 0, failed_extracts = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<v1::PredictResponse> predicted = client().Predict(c.request);
    EXPECT_EQ(predicted.status().code(), c.code) << predicted.status();
    EXPECT_THAT(predicted.status().message(), HasSubstr(c.message));
    ++failed_predicts;
    v1::ExtractFeaturesRequest extract;
    *extract.mutable_samples() = c.request.samples();
    absl::StatusOr<v1::ExtractFeaturesResponse> extracted = client().ExtractFeatures(extract);
    EXPECT_EQ(extracted.status().code(), c.code) << extracted.status();
    EXPECT_THAT(extracted.status().message(), HasSubstr(c.message));
    ++failed_extracts;
  }

  // Update streams that carry no usable sample.
  absl::StatusOr<v1::UpdateSummary> summary = client().Update(std::span<const v1::UpdateRequest>());
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument) << summary.status();
  EXPECT_THAT(summary.status().message(), HasSubstr("no samples"));
  std::vector<v1::UpdateRequest> empty_messages(2);
  summary = client().Update(empty_messages);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument) << summary.status();

  std::vector<v1::UpdateRequest> all_bad(1);
  {
    v1::LabeledSample* no_label = all_bad[0].add_samples();
    *no_label->mutable_sample() = good();
    v1::LabeledSample* long_label = all_bad[0].add_samples();
    *long_label->mutable_sample() = good();
    long_label->set_label(std::string(257, 'x'));
    v1::LabeledSample* nan = all_bad[0].add_samples();
    *nan->mutable_sample() = floats(kInputSize, std::numeric_limits<float>::quiet_NaN());
    nan->set_label("0");
  }
  summary = client().Update(all_bad);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 0u);
  EXPECT_EQ(summary->rejected(), 3u);
  EXPECT_EQ(summary->model_version(), info_before->model_version());
  ASSERT_EQ(summary->rejections_size(), 3);
  EXPECT_EQ(summary->rejections(0).reason(),
            "samples[0].label: empty label, expected 1..256 bytes");
  EXPECT_EQ(summary->rejections(1).reason(),
            "samples[1].label: label of 257 bytes, expected 1..256");
  EXPECT_EQ(summary->rejections(2).reason(),
            "samples[2].sample.values.values[0]: expected a finite float, got NaN");

  std::vector<v1::UpdateRequest> too_big(1);
  for (int i = 0; i < 400; ++i) {  // ~314 KB, over --max_message_bytes
    *too_big[0].add_samples() = Labeled(fixture->updates, 0);
  }
  summary = client().Update(too_big);
  // The message is rejected, listed and counted; the stream itself ends OK.
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 0u);
  EXPECT_EQ(summary->rejected(), 1u);
  ASSERT_EQ(summary->rejections_size(), 1);
  EXPECT_EQ(summary->rejections(0).sample_index(), -1);
  EXPECT_THAT(summary->rejections(0).reason(),
              HasSubstr("over the server's message-size limit of 262144 bytes"));

  // Nothing changed: same version, same classes, same statistics, identical scores.
  absl::StatusOr<v1::ModelInfo> info_after = client().GetModelInfo();
  ASSERT_TRUE(info_after.ok()) << info_after.status();
  EXPECT_EQ(info_after->model_version(), info_before->model_version());
  EXPECT_EQ(info_after->samples_seen(), info_before->samples_seen());
  EXPECT_THAT(info_after->labels(), ::testing::ElementsAreArray(info_before->labels()));
  absl::StatusOr<v1::PredictResponse> after = client().Predict(probe);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->model_version(), before->model_version());
  EXPECT_EQ(ScoresOf(*after), ScoresOf(*before));

  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  // Every failed call is counted, the oversized ones too (the service refuses them itself).
  EXPECT_EQ(stats->predict().failed(), static_cast<uint64_t>(failed_predicts));
  EXPECT_EQ(stats->extract_features().failed(), static_cast<uint64_t>(failed_extracts));
  EXPECT_EQ(stats->predict().ok(), 2u);
  // Two streams without samples failed; the all-bad and the oversized streams ended OK.
  EXPECT_EQ(stats->update().failed(), 2u);
  EXPECT_EQ(stats->update().ok(), 2u);
  EXPECT_EQ(stats->samples_absorbed(), 0u);
  // Two empty messages, three bad samples, one oversized message.
  EXPECT_EQ(stats->samples_rejected(), 2u + 3u + 1u);
  EXPECT_EQ(stats->updates_applied(), 0u);
}

TEST_F(ServerTest, MixedUpdateAbsorbsGoodSamplesAndEqualsBatchFit) {
  const data::LabeledImages& pool = fixture->updates;
  // Message 0: samples 0..49 of the pool with a short image at index 10.
  // Message 1: empty.
  // Message 2: samples 50..149, some sent as floats, with a NaN sample at index 3 and an empty
  //            label at index 7.
  std::vector<v1::UpdateRequest> messages(3);
  std::vector<size_t> accepted;  // pool indices, in the order the server absorbs them
  for (size_t i = 0; i < 50; ++i) {
    if (i == 10) {
      v1::LabeledSample* bad = messages[0].add_samples();
      bad->mutable_sample()->set_pixels(std::string(780, '\x01'));
      bad->set_label("3");
    }
    *messages[0].add_samples() = Labeled(pool, i);
    accepted.push_back(i);
  }
  const model::MatrixF pool_images = ToMatrix(pool, 0, 150);
  for (size_t i = 50; i < 150; ++i) {
    if (messages[2].samples_size() == 3) {
      v1::LabeledSample* bad = messages[2].add_samples();
      for (int j = 0; j < kInputSize; ++j) {
        bad->mutable_sample()->mutable_values()->add_values(j == 500 ? NAN : 0.25f);
      }
      bad->set_label("3");
    }
    if (messages[2].samples_size() == 7) {
      *messages[2].add_samples() = Labeled(pool, i);
      messages[2].mutable_samples(7)->clear_label();
    }
    v1::LabeledSample* sample = messages[2].add_samples();
    if (i % 3 == 0) {
      sample->mutable_sample()->mutable_values()->mutable_values()->Add(
          pool_images.row(i).data(), pool_images.row(i).data() + kInputSize);
      sample->set_label(pool.labels[i]);
    } else {
      *sample = Labeled(pool, i);
    }
    accepted.push_back(i);
  }

  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 150u);
  EXPECT_EQ(summary->rejected(), 4u);
  EXPECT_EQ(summary->model_version(), 2u);
  EXPECT_TRUE(summary->new_labels().empty());
  EXPECT_GE(summary->absorb_seconds(), 0.0);
  EXPECT_GE(summary->solve_seconds(), 0.0);
  ASSERT_EQ(summary->rejections_size(), 4);
  auto rejection = [&](int k) {
    const v1::Rejection& r = summary->rejections(k);
    return absl::StrCat(r.message_index(), "/", r.sample_index(), " ", r.reason());
  };
  EXPECT_EQ(rejection(0), "0/10 samples[10].sample.pixels: expected 784 bytes, got 780");
  EXPECT_EQ(rejection(1), "1/-1 samples: empty message, expected at least 1 sample");
  EXPECT_EQ(rejection(2),
            "2/3 samples[3].sample.values.values[500]: expected a finite float, got NaN");
  EXPECT_EQ(rejection(3), "2/7 samples[7].label: empty label, expected 1..256 bytes");

  absl::StatusOr<v1::ModelInfo> info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_version(), 2u);
  EXPECT_EQ(info->samples_seen(), static_cast<uint64_t>(kTrainImages + 150));

  // The served readout equals a batch fit on the bundle's samples plus the accepted ones.
  model::UpperTier reference = fixture->bundle->upper;
  model::MatrixF images(accepted.size(), kInputSize);
  std::vector<std::string> labels;
  for (size_t k = 0; k < accepted.size(); ++k) {
    images.row(k) = pool_images.row(accepted[k]);
    labels.push_back(pool.labels[accepted[k]]);
  }
  ReferenceAbsorb(reference, images, labels);
  const v1::PredictRequest probe = Probe();
  absl::StatusOr<v1::PredictResponse> predicted = client().Predict(probe);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->model_version(), 2u);
  ExpectScoresNear(ScoresOf(*predicted),
                   ReferenceScores(reference, ToMatrix(fixture->heldout, 0, 16)));

  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->update().ok(), 1u);
  EXPECT_EQ(stats->samples_absorbed(), 150u);
  EXPECT_EQ(stats->samples_rejected(), 4u);
  EXPECT_EQ(stats->updates_applied(), 1u);
  EXPECT_EQ(stats->model_version(), 2u);
}

TEST_F(ServerTest, NewLabelMidStreamBecomesANewClass) {
  // A checkerboard looks like no garment; teach it as a new class in the middle of a stream.
  v1::Sample checkerboard;
  std::string pixels(kInputSize, '\0');
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x) pixels[y * 28 + x] = ((x / 4 + y / 4) % 2) ? '\xff' : '\0';
  }
  checkerboard.set_pixels(pixels);

  std::vector<v1::UpdateRequest> messages(3);
  for (int i = 0; i < 40; ++i) *messages[0].add_samples() = Labeled(fixture->updates, i);
  for (int i = 0; i < 40; ++i) {
    v1::LabeledSample* sample = messages[1].add_samples();
    *sample->mutable_sample() = checkerboard;
    sample->set_label("checkerboard");
  }
  for (int i = 40; i < 80; ++i) *messages[2].add_samples() = Labeled(fixture->updates, i);

  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 120u);
  EXPECT_EQ(summary->rejected(), 0u);
  EXPECT_THAT(summary->new_labels(), ElementsAre("checkerboard"));

  absl::StatusOr<v1::ModelInfo> info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  const int classes = static_cast<int>(fixture->bundle->upper.labels().size()) + 1;
  ASSERT_EQ(info->labels_size(), classes);
  EXPECT_EQ(info->labels(classes - 1), "checkerboard");

  v1::PredictRequest request;
  request.set_return_scores(true);
  *request.add_samples() = checkerboard;
  *request.add_samples() = PixelSample(fixture->heldout, 0);
  absl::StatusOr<v1::PredictResponse> predicted = client().Predict(request);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->predictions(0).label(), "checkerboard");
  EXPECT_EQ(predicted->predictions(0).class_index(), static_cast<uint32_t>(classes - 1));
  EXPECT_EQ(predicted->predictions(0).scores_size(), classes);
  EXPECT_EQ(predicted->predictions(1).scores_size(), classes);
  EXPECT_NE(predicted->predictions(1).label(), "checkerboard");
}

TEST_F(ServerTest, ConcurrentPredictSeesWholeVersions) {
  constexpr int kUpdates = 3;
  constexpr int kPerUpdate = 100;
  const v1::PredictRequest probe = Probe();
  const data::LabeledImages& pool = fixture->updates;

  std::atomic<uint64_t> final_version{0};
  std::map<uint64_t, std::vector<Scores>> replies;  // by model version
  absl::Status predict_error;
  std::thread predictor([&] {
    client::Client own(server_->address());  // its own channel: a separate connection
    for (int round = 0; round < 100000; ++round) {
      absl::StatusOr<v1::PredictResponse> response = own.Predict(probe);
      if (!response.ok()) {
        predict_error = response.status();
        return;
      }
      replies[response->model_version()].push_back(ScoresOf(*response));
      const uint64_t last = final_version.load();
      if (last != 0 && response->model_version() >= last) return;
    }
  });

  std::vector<uint64_t> versions;
  for (int u = 0; u < kUpdates; ++u) {
    std::vector<v1::UpdateRequest> messages(2);
    for (int i = 0; i < kPerUpdate; ++i) {
      *messages[i % 2].add_samples() = Labeled(pool, u * kPerUpdate + i);
    }
    absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
    ASSERT_TRUE(summary.ok()) << summary.status();
    versions.push_back(summary->model_version());
  }
  final_version = versions.back();
  predictor.join();
  ASSERT_TRUE(predict_error.ok()) << predict_error;
  EXPECT_THAT(versions, ElementsAre(2u, 3u, 4u));

  // Every reply is exactly the reply of every other reply with the same version.
  ASSERT_TRUE(replies.count(versions.back())) << "the predictor never saw the last version";
  for (const auto& [version, scores] : replies) {
    for (const Scores& s : scores) EXPECT_EQ(s, scores.front()) << "version " << version;
  }
  // And each version's reply is the model after that many updates.
  model::UpperTier reference = fixture->bundle->upper;
  const model::MatrixF probe_images = ToMatrix(fixture->heldout, 0, probe.samples_size());
  for (uint64_t version = 1; version <= versions.back(); ++version) {
    if (version > 1) {
      const size_t begin = (version - 2) * kPerUpdate;
      // The server absorbed message 0 (even offsets) then message 1 (odd offsets).
      model::MatrixF images(kPerUpdate, kInputSize);
      std::vector<std::string> labels;
      int row = 0;
      for (int parity = 0; parity < 2; ++parity) {
        for (int i = parity; i < kPerUpdate; i += 2) {
          images.row(row++) = ToMatrix(pool, begin + i, begin + i + 1).row(0);
          labels.push_back(pool.labels[begin + i]);
        }
      }
      ReferenceAbsorb(reference, images, labels);
    }
    auto it = replies.find(version);
    if (it == replies.end()) continue;
    SCOPED_TRACE(absl::StrCat("version ", version));
    ExpectScoresNear(it->second.front(), ReferenceScores(reference, probe_images));
  }
}

TEST_F(ServerTest, SigtermExitsZero) {
  // An Update and a Predict before the signal; the server must still exit cleanly.
  std::vector<v1::UpdateRequest> messages(1);
  for (int i = 0; i < 20; ++i) *messages[0].add_samples() = Labeled(fixture->updates, i);
  ASSERT_TRUE(client().Update(messages).ok());
  ASSERT_TRUE(client().Predict(Probe()).ok());
  const int status = server_->Terminate();
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ServerStartupTest, UnreadableBundleExitsNonZero) {
  const pid_t pid =
      ServerProcess::Spawn({"--bundle=/nonexistent/strata/model.bundle", "--address=127.0.0.1:0"});
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_NE(WEXITSTATUS(status), 0);
}

TEST(ServerStartupTest, MissingBundleFlagIsAUsageError) {
  const pid_t pid = ServerProcess::Spawn({"--address=127.0.0.1:0"});
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

// ---- energy accounting and update policies ----------------------------------------------------------

// The fixture's first `n` update-pool samples from `begin`, as one Update message.
v1::UpdateRequest PoolMessage(size_t begin, size_t n) {
  v1::UpdateRequest message;
  for (size_t i = begin; i < begin + n; ++i) *message.add_samples() = Labeled(fixture->updates, i);
  return message;
}

// `n` copies of a checkerboard (a pattern no Fashion-MNIST class resembles) labelled "checkerboard".
v1::UpdateRequest CheckerboardMessage(int n) {
  std::string pixels(kInputSize, '\0');
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x) pixels[y * 28 + x] = ((x / 4 + y / 4) % 2) ? '\xff' : '\0';
  }
  v1::UpdateRequest message;
  for (int i = 0; i < n; ++i) {
    v1::LabeledSample* sample = message.add_samples();
    sample->mutable_sample()->set_pixels(pixels);
    sample->set_label("checkerboard");
  }
  return message;
}

// The decision counts of a Stats reply, by reason, as "reason:applied" -> count.
std::map<std::string, uint64_t> Decisions(const v1::Stats& stats) {
  std::map<std::string, uint64_t> counts;
  for (const v1::DecisionCount& d : stats.decisions()) {
    counts[absl::StrCat(d.reason(), d.applied() ? ":applied" : ":deferred")] = d.count();
  }
  return counts;
}

// a == b to a relative 1e-12 (sums of the same terms in another order).
void ExpectJoulesEq(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, 1e-12 * std::max(std::abs(expected), 1e-30)) << what;
}

// Predict, ExtractFeatures and Update replies carry joules that follow the documented work models
// exactly (deterministic counts x the table's constants), scale linearly with the batch, and add up
// to GetStats' cumulative figures.
TEST_F(ServerTest, EnergyIsChargedByTierAndPhaseAndScalesWithTheBatch) {
  const model::Bundle& bundle = *fixture->bundle;
  const int d = bundle.lower->feature_size();
  const int c = static_cast<int>(bundle.upper.labels().size());
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor("cpu");
  ASSERT_TRUE(table.ok()) << table.status();
  // One image through the lower tier, and one feature row through the readout
  // (model::Readout::Counts: d * c fp32 MACs, c scores written).
  // The float lower tier reads its weights once per call (per 64-image chunk), like the int8
  // backends' calls do: a fixed part per call plus a part per image.
  auto lower_joules = [&](int images) {
    return fpga::Joules(bundle.lower->Counts(images), *table);
  };
  const double lower1 = lower_joules(1);
  ASSERT_GT(bundle.lower->ParameterBytes(), 0u);
  EXPECT_EQ(bundle.lower->Counts(1),
            model::LowerTierInferenceCounts(bundle.lower->MacsPerSample(), kInputSize, d, 1,
                                            bundle.lower->ParameterBytes()));
  const double readout1 =
      (static_cast<double>(d) * c * table->fp32_mac_pj + 4.0 * c * table->dram_pj_per_byte) * 1e-12;
  ASSERT_GT(lower1, 0);
  ASSERT_GT(readout1, 0);

  absl::StatusOr<v1::PredictResponse> one = client().Predict(Probe(1));
  ASSERT_TRUE(one.ok()) << one.status();
  ExpectJoulesEq(one->energy().lower_tier_joules(), lower1, "Predict x1, lower");
  ExpectJoulesEq(one->energy().upper_tier_joules(), readout1, "Predict x1, upper");
  absl::StatusOr<v1::PredictResponse> eight = client().Predict(Probe(8));
  ASSERT_TRUE(eight.ok()) << eight.status();
  ExpectJoulesEq(eight->energy().lower_tier_joules(), lower_joules(8), "Predict x8, lower");
  ExpectJoulesEq(eight->energy().upper_tier_joules(), 8 * one->energy().upper_tier_joules(),
                 "Predict x8, upper");

  v1::ExtractFeaturesRequest extract;
  for (int i = 0; i < 4; ++i) *extract.add_samples() = PixelSample(fixture->heldout, i);
  absl::StatusOr<v1::ExtractFeaturesResponse> features = client().ExtractFeatures(extract);
  ASSERT_TRUE(features.ok()) << features.status();
  ExpectJoulesEq(features->energy().lower_tier_joules(), lower_joules(4), "ExtractFeatures x4");
  EXPECT_EQ(features->energy().upper_tier_joules(), 0);

  // An Update of two messages (10 and 30 samples, each absorbed in one chunk), refreshed once at
  // the end (stream-end): the refresh re-factors G, as the reference upper tier's first Refresh.
  const std::vector<v1::UpdateRequest> messages = {PoolMessage(0, 10), PoolMessage(10, 30)};
  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->accepted(), 40u);
  const v1::PhaseEnergy& energy = summary->energy();
  ExpectJoulesEq(energy.lower_tier_inference_joules(), lower_joules(10) + lower_joules(30),
                 "Update, lower tier");
  ExpectJoulesEq(energy.readout_inference_joules(), 40 * readout1, "Update, prequential readout");
  ExpectJoulesEq(energy.absorb_joules(),
                 fpga::Joules(model::AbsorbCounts(d, c, 10), *table) +
                     fpga::Joules(model::AbsorbCounts(d, c, 30), *table),
                 "Update, absorb");
  model::UpperTier reference = bundle.upper;
  ReferenceAbsorb(reference, ToMatrix(fixture->updates, 0, 40),
                  std::vector<std::string>(fixture->updates.labels.begin(),
                                           fixture->updates.labels.begin() + 40));
  ASSERT_TRUE(reference.Refresh().ok());
  ExpectJoulesEq(energy.refresh_joules(),
                 fpga::Joules(model::RefreshReportCounts(reference.last_refresh(), d, c), *table),
                 "Update, refresh");
  EXPECT_GT(energy.refresh_joules(), 0);
  ExpectJoulesEq(energy.total_joules(),
                 energy.lower_tier_inference_joules() + energy.readout_inference_joules() +
                     energy.absorb_joules() + energy.refresh_joules(),
                 "Update, total");
  EXPECT_EQ(summary->refreshes(), 1u);
  EXPECT_TRUE(summary->readout_current());

  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->energy_table().name(), "cpu");
  EXPECT_DOUBLE_EQ(stats->energy_table().fp32_mac_pj(), table->fp32_mac_pj);
  EXPECT_DOUBLE_EQ(stats->energy_table().fp64_mac_pj(), table->fp64_mac_pj);
  EXPECT_DOUBLE_EQ(stats->energy_table().dram_pj_per_byte(), table->dram_pj_per_byte);
  EXPECT_EQ(stats->device(), "float");
  const v1::PhaseEnergy& total = stats->energy();
  ExpectJoulesEq(total.lower_tier_inference_joules(),
                 lower1 + lower_joules(8) + lower_joules(4) + lower_joules(10) + lower_joules(30),
                 "Stats, lower tier");
  ExpectJoulesEq(total.readout_inference_joules(), (1 + 8 + 40) * readout1, "Stats, readout");
  ExpectJoulesEq(total.absorb_joules(), energy.absorb_joules(), "Stats, absorb");
  ExpectJoulesEq(total.refresh_joules(), energy.refresh_joules(), "Stats, refresh");
  ExpectJoulesEq(total.total_joules(),
                 total.lower_tier_inference_joules() + total.readout_inference_joules() +
                     total.absorb_joules() + total.refresh_joules(),
                 "Stats, total");
  ExpectJoulesEq(stats->energy_by_tier().lower_tier_joules(), total.lower_tier_inference_joules(),
                 "Stats, lower tier by tier");
  ExpectJoulesEq(stats->energy_by_tier().upper_tier_joules(),
                 total.readout_inference_joules() + total.absorb_joules() + total.refresh_joules(),
                 "Stats, upper tier by tier");
  EXPECT_EQ(stats->prequential_samples(), 40u);
  EXPECT_EQ(stats->prequential_errors(), summary->prequential_errors());
  EXPECT_LT(summary->prequential_errors(), 40u);  // the bundle's readout knows these classes
}

// The default policy, stream-end: one version per stream, whatever the number of messages.
TEST_F(ServerTest, StreamEndPublishesOneVersionPerStream) {
  for (int stream = 0; stream < 2; ++stream) {
    const std::vector<v1::UpdateRequest> messages = {PoolMessage(30 * stream, 10),
                                                     PoolMessage(30 * stream + 10, 10),
                                                     PoolMessage(30 * stream + 20, 10)};
    absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->model_version(), 2u + stream);
    EXPECT_EQ(summary->refreshes(), 1u);
    EXPECT_TRUE(summary->readout_current());
  }
  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->update_policy(), "stream-end");
  EXPECT_EQ(Decisions(*stats), (std::map<std::string, uint64_t>{{"stream-end:applied", 2},
                                                                {"until-stream-end:deferred", 6}}));
  EXPECT_EQ(stats->updates_applied(), 2u);
  EXPECT_EQ(stats->pending_samples(), 0u);
}

class PolicyServerTest : public ServerTest {
 protected:
  void SetUp() override {}  // each test starts its own server with its policy flags

  void StartServer(const std::vector<std::string>& args) {
    ASSERT_NE(fixture, nullptr) << "building the test model failed";
    server_ = ServerProcess::Start(fixture->bundle_path, args);
    ASSERT_NE(server_, nullptr);
  }
};

// eager: a version per message, and the last one equals the batch fit on everything absorbed.
TEST_F(PolicyServerTest, EagerPublishesAVersionPerMessage) {
  StartServer({"--update_policy=eager"});
  const std::vector<v1::UpdateRequest> messages = {PoolMessage(0, 10), PoolMessage(10, 20),
                                                   PoolMessage(30, 15)};
  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 45u);
  EXPECT_EQ(summary->model_version(), 4u);
  EXPECT_EQ(summary->refreshes(), 3u);
  EXPECT_TRUE(summary->readout_current());
  EXPECT_GT(summary->energy().refresh_joules(), 0);

  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->update_policy(), "eager");
  EXPECT_EQ(Decisions(*stats), (std::map<std::string, uint64_t>{{"every-message:applied", 3}}));
  EXPECT_EQ(stats->updates_applied(), 3u);
  EXPECT_EQ(stats->model_version(), 4u);
  ExpectJoulesEq(stats->energy().refresh_joules(), summary->energy().refresh_joules(),
                 "refresh joules");

  model::UpperTier reference = fixture->bundle->upper;
  ReferenceAbsorb(reference, ToMatrix(fixture->updates, 0, 45),
                  std::vector<std::string>(fixture->updates.labels.begin(),
                                           fixture->updates.labels.begin() + 45));
  absl::StatusOr<v1::PredictResponse> predicted = client().Predict(Probe());
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->model_version(), 4u);
  ExpectScoresNear(ScoresOf(*predicted),
                   ReferenceScores(reference, ToMatrix(fixture->heldout, 0, 16)));
}

// periodic by samples: a refresh once 25 samples have arrived since the last one.
TEST_F(PolicyServerTest, PeriodicRefreshesWhenTheSamplesAreDue) {
  StartServer({"--update_policy=periodic", "--policy_period_samples=25", "--policy_period=0"});
  const std::vector<v1::UpdateRequest> messages = {PoolMessage(0, 10), PoolMessage(10, 10),
                                                   PoolMessage(20, 10), PoolMessage(30, 10)};
  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->refreshes(), 1u);
  EXPECT_EQ(summary->model_version(), 2u);
  // The fourth message's samples wait for the next due refresh.
  EXPECT_FALSE(summary->readout_current());
  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(Decisions(*stats),
            (std::map<std::string, uint64_t>{{"samples-due:applied", 1}, {"not-due:deferred", 3}}));
  EXPECT_EQ(stats->pending_samples(), 10u);
  absl::StatusOr<v1::ModelInfo> info = client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->samples_seen(), static_cast<uint64_t>(kTrainImages + 30));
}

// energy-aware with no value on avoided errors: only a new class refreshes (and may overdraw the
// budget); everything else is deferred as not worth its joules.
TEST_F(PolicyServerTest, EnergyAwareRefreshesForANewClassOnly) {
  StartServer({"--update_policy=energy-aware", "--policy_joules_per_error=0",
               "--policy_budget_watts=0", "--policy_burst_joules=0"});
  const std::vector<v1::UpdateRequest> messages = {PoolMessage(0, 10), CheckerboardMessage(10),
                                                   PoolMessage(10, 10)};
  absl::StatusOr<v1::UpdateSummary> summary = client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->accepted(), 30u);
  EXPECT_THAT(summary->new_labels(), ElementsAre("checkerboard"));
  EXPECT_EQ(summary->refreshes(), 1u);
  EXPECT_EQ(summary->model_version(), 2u);
  EXPECT_FALSE(summary->readout_current());
  // Every checkerboard was a class the readout did not know: 10 prequential errors at least.
  EXPECT_GE(summary->prequential_errors(), 10u);

  absl::StatusOr<v1::Stats> stats = client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->update_policy(), "energy-aware");
  EXPECT_EQ(Decisions(*stats), (std::map<std::string, uint64_t>{{"new-class:applied", 1},
                                                                {"gain-too-small:deferred", 2}}));
  EXPECT_EQ(stats->updates_applied(), 1u);
  EXPECT_EQ(stats->pending_samples(), 10u);
  // The new-class refresh was taken from an empty bucket: a debt of exactly its joules.
  EXPECT_LT(stats->budget_balance_joules(), 0);

  // Version 2 includes the checkerboards (the new-class refresh ran after absorbing them).
  v1::PredictRequest request;
  *request.add_samples() = CheckerboardMessage(1).samples(0).sample();
  absl::StatusOr<v1::PredictResponse> predicted = client().Predict(request);
  ASSERT_TRUE(predicted.ok()) << predicted.status();
  EXPECT_EQ(predicted->model_version(), 2u);
  EXPECT_EQ(predicted->predictions(0).label(), "checkerboard");
}

TEST(ServerStartupTest, UnknownUpdatePolicyIsAUsageError) {
  const pid_t pid = ServerProcess::Spawn({"--bundle=/nonexistent/strata/model.bundle",
                                          "--address=127.0.0.1:0", "--update_policy=sometimes"});
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace
}  // namespace strata
