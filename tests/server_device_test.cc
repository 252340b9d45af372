// strata-server --device: the lower tier in float or in int8 on an fpga backend, tested against a
// real server process (tests/server_process.h) serving a small real Fashion-MNIST bundle.
//
// Expected int8 features come from model::QuantizedLowerTier run in this process on the same
// bundle and the same backend: integer arithmetic is exact, so the server's features must equal
// them bit for bit, and cpu must equal emu.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "data/dataset.h"
#include "fpga/backend.h"
#include "fpga/dataflow.h"
#include "fpga/energy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/quantized_lower_tier.h"
#include "model/tensor.h"
#include "tests/server_process.h"
#include "tests/shared_file.h"
#include "tests/suite_fixture.h"

namespace strata {
namespace {

using test::kMaxBatch;
using test::ServerProcess;

constexpr int kTrainImages = 2000;
constexpr int kCalibrationImages = 1000;
constexpr int kHeldoutImages = 512;

model::MatrixF ToMatrix(const data::LabeledImages& images) {
  return model::PixelsToMatrix(images.pixels, static_cast<Eigen::Index>(images.image_size()));
}

struct Fixture : test::FixtureDir {
  std::string float_only_bundle;        // no lower.int8.* records (as written before int8 devices)
  std::string int8_bundle;              // the same model plus its int8 activation scales
  std::optional<model::Bundle> bundle;  // int8_bundle, read back: the reference
  data::LabeledImages heldout;

  static void Build(Fixture& f);
};
Fixture*& fixture = test::SuiteFixture<Fixture>::instance;

void Fixture::Build(Fixture& f) {
  f.float_only_bundle = f.Path("float_only.bundle");
  f.int8_bundle = f.Path("int8.bundle");
  ASSERT_TRUE(test::WriteFashionBundle(f.float_only_bundle, kTrainImages).ok());

  absl::Status written = test::MakeShared(
      "fashion-int8.bundle", f.int8_bundle, [&f](const std::string& out) -> absl::Status {
        absl::StatusOr<model::Bundle> bundle = model::ReadBundle(f.float_only_bundle);
        if (!bundle.ok()) return bundle.status();
        if (!bundle->int8.empty()) return absl::InternalError("the float bundle has int8 scales");
        absl::StatusOr<data::LabeledImages> calibration =
            data::Load("fashion-mnist:train", {0, kCalibrationImages});
        if (!calibration.ok()) return calibration.status();
        absl::StatusOr<model::Int8Calibration> int8 =
            model::QuantizedLowerTier::CalibrateActivations(*bundle->lower, ToMatrix(*calibration));
        if (!int8.ok()) return int8.status();
        bundle->int8 = *std::move(int8);
        return model::WriteBundle(*bundle, out);
      });
  ASSERT_TRUE(written.ok()) << written;

  absl::StatusOr<model::Bundle> read = model::ReadBundle(f.int8_bundle);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_FALSE(read->int8.empty());
  f.bundle.emplace(*std::move(read));

  absl::StatusOr<data::LabeledImages> heldout =
      data::Load("fashion-mnist:test", {0, kHeldoutImages});
  ASSERT_TRUE(heldout.ok()) << heldout.status();
  f.heldout = *std::move(heldout);
}

// Runs strata-server with `args` to completion (it must exit by itself, e.g. failing at start).
test::ServerExit RunToExit(const std::vector<std::string>& args) {
  static int runs = 0;  // tests run one at a time
  return test::RunServerToExit(args, absl::StrCat(fixture->dir, "/stderr.", runs++));
}

v1::ExtractFeaturesRequest FeaturesRequest(int begin, int n) {
  v1::ExtractFeaturesRequest request;
  for (int i = begin; i < begin + n; ++i) {
    request.add_samples()->set_pixels(fixture->heldout.image(i), fixture->heldout.image_size());
  }
  return request;
}

model::MatrixF FeaturesOf(const v1::ExtractFeaturesResponse& response, int width) {
  model::MatrixF m(response.features_size(), width);
  for (int i = 0; i < response.features_size(); ++i) {
    EXPECT_EQ(response.features(i).values_size(), width);
    for (int j = 0; j < width && j < response.features(i).values_size(); ++j) {
      m(i, j) = response.features(i).values(j);
    }
  }
  return m;
}

// Held-out accuracy of a server's Predict, in batches of kMaxBatch.
double Accuracy(client::Client& client) {
  const data::LabeledImages& heldout = fixture->heldout;
  size_t correct = 0;
  for (size_t begin = 0; begin < heldout.size(); begin += kMaxBatch) {
    const size_t end = std::min(heldout.size(), begin + kMaxBatch);
    v1::PredictRequest request;
    for (size_t i = begin; i < end; ++i) {
      request.add_samples()->set_pixels(heldout.image(i), heldout.image_size());
    }
    absl::StatusOr<v1::PredictResponse> response = client.Predict(request);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return 0;
    for (size_t i = begin; i < end; ++i) {
      correct += response->predictions(static_cast<int>(i - begin)).label() == heldout.labels[i];
    }
  }
  return static_cast<double>(correct) / heldout.size();
}

// The readout of `upper` (copied) after absorbing `features` with their `labels` in one batch: the
// reference a server's Update of the same samples must reproduce.
absl::StatusOr<model::Readout> ReadoutAfterAbsorbing(model::UpperTier upper,
                                                     const model::MatrixF& features,
                                                     const std::vector<std::string>& labels) {
  if (absl::Status s = upper.AbsorbLabeled(features, labels).status(); !s.ok()) return s;
  return upper.Solve();
}

// The server's scores for the first expected.rows() held-out images equal `expected` (to 1e-4 of
// their largest magnitude), live and again after a SIGKILL and a restart on the same flags (the
// statistics recovered from the state directory). `server` is the restarted process afterwards.
void ExpectScoresLiveAndAfterRecovery(std::unique_ptr<ServerProcess>& server,
                                      const std::string& bundle,
                                      const std::vector<std::string>& flags,
                                      const model::MatrixF& expected) {
  const int probes = static_cast<int>(expected.rows());
  v1::PredictRequest request;
  request.set_return_scores(true);
  for (int i = 0; i < probes; ++i) {
    request.add_samples()->set_pixels(fixture->heldout.image(i), fixture->heldout.image_size());
  }
  const float scale = std::max(1.0f, expected.cwiseAbs().maxCoeff());
  for (const char* phase : {"live", "recovered after SIGKILL"}) {
    SCOPED_TRACE(phase);
    absl::StatusOr<v1::PredictResponse> predicted = server->client().Predict(request);
    ASSERT_TRUE(predicted.ok()) << predicted.status();
    ASSERT_EQ(predicted->predictions_size(), probes);
    for (int i = 0; i < probes; ++i) {
      ASSERT_EQ(predicted->predictions(i).scores_size(), expected.cols());
      for (int c = 0; c < expected.cols(); ++c) {
        EXPECT_NEAR(predicted->predictions(i).scores(c), expected(i, c), 1e-4f * scale)
            << "sample " << i << " class " << c;
      }
    }
    server.reset();  // SIGKILL
    server = ServerProcess::Start(bundle, flags);
    ASSERT_NE(server, nullptr);
  }
}

class ServerDeviceTest : public test::SuiteFixtureTest<Fixture> {};

TEST_F(ServerDeviceTest, XrtWithoutCardExitsOneWithTheBackendsMessage) {
  // What the backend says here; the server must say exactly that.
  absl::StatusOr<std::unique_ptr<fpga::Backend>> xrt = fpga::CreateBackend("xrt");
  if (xrt.ok()) GTEST_SKIP() << "this machine has an FPGA card";
  ASSERT_EQ(xrt.status().code(), absl::StatusCode::kFailedPrecondition) << xrt.status();
  const std::string message(xrt.status().message());
  EXPECT_THAT(message, ::testing::HasSubstr("no FPGA card found"));
  EXPECT_THAT(message, ::testing::HasSubstr("pick another device with --device="));

  const test::ServerExit exit = RunToExit(
      {absl::StrCat("--bundle=", fixture->int8_bundle), "--address=127.0.0.1:0", "--device=xrt"});
  EXPECT_EQ(exit.code, 1) << exit.stderr_text;
  EXPECT_THAT(exit.stderr_text, ::testing::HasSubstr(absl::StrCat("--device=xrt: ", message)));
}

TEST_F(ServerDeviceTest, UnknownDeviceIsAUsageError) {
  const test::ServerExit exit = RunToExit(
      {absl::StrCat("--bundle=", fixture->int8_bundle), "--address=127.0.0.1:0", "--device=gpu"});
  EXPECT_EQ(exit.code, 2) << exit.stderr_text;
  EXPECT_THAT(exit.stderr_text, ::testing::HasSubstr("float, cpu, emu, xrt, auto"));
}

TEST_F(ServerDeviceTest, BundleWithoutInt8ScalesRefusesAnInt8Device) {
  const test::ServerExit exit = RunToExit({absl::StrCat("--bundle=", fixture->float_only_bundle),
                                           "--address=127.0.0.1:0", "--device=cpu"});
  EXPECT_EQ(exit.code, 1) << exit.stderr_text;
  EXPECT_THAT(exit.stderr_text, ::testing::HasSubstr("no int8 activation scales"));
  EXPECT_THAT(exit.stderr_text, ::testing::HasSubstr("--device=float"));

  // The same bundle still serves in float, which the default device (auto) picks for it.
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(fixture->float_only_bundle);
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->device(), "float");
}

TEST_F(ServerDeviceTest, AutoWithoutCardFallsBackToCpuAndServes) {
  if (fpga::CreateBackend("xrt").ok()) GTEST_SKIP() << "this machine has an FPGA card";
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(
      fixture->int8_bundle, {"--device=auto", "--xclbin=/nonexistent/strata.xclbin"});
  ASSERT_NE(server, nullptr);
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->device(), "cpu");
  absl::StatusOr<v1::ExtractFeaturesResponse> features =
      server->client().ExtractFeatures(FeaturesRequest(0, 8));
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(features->features_size(), 8);
  absl::StatusOr<v1::Stats> stats = server->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->device(), "cpu");
}

TEST_F(ServerDeviceTest, CpuAndEmuServeBitExactInt8FeaturesPricedByTheirTables) {
  const model::Bundle& bundle = *fixture->bundle;
  const int width = bundle.lower->feature_size();
  constexpr int kImages = 16;
  const v1::ExtractFeaturesRequest request = FeaturesRequest(0, kImages);
  const model::MatrixF images = ToMatrix(fixture->heldout).topRows(kImages);

  std::vector<model::MatrixF> served;
  for (const std::string device : {"cpu", "emu"}) {
    SCOPED_TRACE(device);
    // The reference: the int8 lower tier in this process, on the same backend and scales.
    absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend(device);
    ASSERT_TRUE(backend.ok()) << backend.status();
    absl::StatusOr<model::QuantizedLowerTier> int8 =
        model::QuantizedLowerTier::FromCalibration(bundle.lower, bundle.int8, **backend);
    ASSERT_TRUE(int8.ok()) << int8.status();
    fpga::OpCounts counts;
    absl::StatusOr<model::MatrixF> expected = int8->Features(images, &counts);
    ASSERT_TRUE(expected.ok()) << expected.status();

    std::unique_ptr<ServerProcess> server =
        ServerProcess::Start(fixture->int8_bundle, {absl::StrCat("--device=", device)});
    ASSERT_NE(server, nullptr);
    absl::StatusOr<v1::ExtractFeaturesResponse> response =
        server->client().ExtractFeatures(request);
    ASSERT_TRUE(response.ok()) << response.status();
    const model::MatrixF features = FeaturesOf(*response, width);
    EXPECT_TRUE(features == *expected)
        << "max |difference| " << (features - *expected).cwiseAbs().maxCoeff();
    // Priced from the backend's reported work with that backend's table.
    const double joules = fpga::Joules(counts, *fpga::EnergyTableFor(device));
    EXPECT_GT(counts.int8_macs, 0u);
    EXPECT_NEAR(response->energy().lower_tier_joules(), joules, 1e-9 * joules);

    absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->device(), device);
    absl::StatusOr<v1::Stats> stats = server->client().GetStats();
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->device(), device);
    EXPECT_NEAR(stats->energy_by_tier().lower_tier_joules(), joules, 1e-9 * joules);
    served.push_back(features);
  }
  ASSERT_EQ(served.size(), 2u);
  EXPECT_TRUE(served[0] == served[1]) << "cpu and emu features differ";

  // int8 features are close to, but not the same as, the float ones.
  const model::MatrixF float_features = bundle.lower->Features(images);
  EXPECT_FALSE(served[0] == float_features);
  const float scale = float_features.cwiseAbs().maxCoeff();
  EXPECT_LT((served[0] - float_features).cwiseAbs().maxCoeff(), 0.1f * scale);
}

TEST_F(ServerDeviceTest, UpdatesAbsorbInt8Features) {
  const model::Bundle& bundle = *fixture->bundle;
  absl::StatusOr<data::LabeledImages> stream = data::Load("fashion-mnist:train", {5000, 200});
  ASSERT_TRUE(stream.ok()) << stream.status();
  constexpr int kProbe = 16;
  const model::MatrixF probe = ToMatrix(fixture->heldout).topRows(kProbe);

  // The reference: the bundle's statistics plus the streamed samples' int8 features.
  absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend("cpu");
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<model::QuantizedLowerTier> int8 =
      model::QuantizedLowerTier::FromCalibration(bundle.lower, bundle.int8, **backend);
  ASSERT_TRUE(int8.ok()) << int8.status();
  absl::StatusOr<model::MatrixF> stream_features = int8->Features(ToMatrix(*stream));
  ASSERT_TRUE(stream_features.ok()) << stream_features.status();
  absl::StatusOr<model::Readout> readout =
      ReadoutAfterAbsorbing(bundle.upper, *stream_features, stream->labels);
  ASSERT_TRUE(readout.ok()) << readout.status();
  absl::StatusOr<model::MatrixF> probe_features = int8->Features(probe);
  ASSERT_TRUE(probe_features.ok()) << probe_features.status();
  const model::MatrixF expected = readout->Scores(*probe_features);

  // Durable: after a kill, recovery replays the log through the int8 lower tier too.
  const std::vector<std::string> flags = {"--device=cpu",
                                          absl::StrCat("--state_dir=", fixture->dir, "/state")};
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(fixture->int8_bundle, flags);
  ASSERT_NE(server, nullptr);
  std::vector<v1::UpdateRequest> messages(4);
  for (size_t i = 0; i < stream->size(); ++i) {
    v1::LabeledSample* sample = messages[i % messages.size()].add_samples();
    sample->mutable_sample()->set_pixels(stream->image(i), stream->image_size());
    sample->set_label(stream->labels[i]);
  }
  // Absorb order differs from the reference's; the statistics are sums, equal up to rounding.
  absl::StatusOr<v1::UpdateSummary> summary = server->client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ExpectScoresLiveAndAfterRecovery(server, fixture->int8_bundle, flags, expected);
}

// A bundle with int8 readout scales served on an int8 device: Update absorbs go through the
// backend's Gram accumulator. Observable from outside: the absorb joules are exactly the Gram
// kernel's int8 work priced by the cpu table (GramInt8CpuCounts), not the float64 rank-k update's
// fp64 work; and the readout equals a host float64 fit of the same dequantised rows, live and
// after SIGKILL + recovery (which replays through the float64 path of the same rows).
TEST_F(ServerDeviceTest, Int8ReadoutUpdatesGoThroughTheGramKernel) {
  absl::StatusOr<model::Bundle> read = model::ReadBundle(fixture->int8_bundle);
  ASSERT_TRUE(read.ok()) << read.status();
  model::Bundle& bundle = *read;
  absl::StatusOr<std::unique_ptr<fpga::Backend>> backend = fpga::CreateBackend("cpu");
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<model::QuantizedLowerTier> int8 =
      model::QuantizedLowerTier::FromCalibration(bundle.lower, bundle.int8, **backend);
  ASSERT_TRUE(int8.ok()) << int8.status();
  absl::StatusOr<data::LabeledImages> calibration = data::Load("fashion-mnist:train", {0, 500});
  ASSERT_TRUE(calibration.ok()) << calibration.status();
  absl::StatusOr<model::MatrixF> calibration_features = int8->Features(ToMatrix(*calibration));
  ASSERT_TRUE(calibration_features.ok()) << calibration_features.status();
  absl::StatusOr<std::vector<float>> scales =
      model::CalibrateReadoutScales(*calibration_features, 100);
  ASSERT_TRUE(scales.ok()) << scales.status();
  ASSERT_TRUE(bundle.upper.set_readout_scales(*scales).ok());
  bundle.readout_features = "int8";
  bundle.readout_percentile = 100;
  const std::string path = fixture->dir + "/int8_readout.bundle";
  ASSERT_TRUE(model::WriteBundle(bundle, path).ok());

  absl::StatusOr<data::LabeledImages> stream = data::Load("fashion-mnist:train", {6000, 100});
  ASSERT_TRUE(stream.ok()) << stream.status();
  absl::StatusOr<model::MatrixF> stream_features = int8->Features(ToMatrix(*stream));
  ASSERT_TRUE(stream_features.ok()) << stream_features.status();
  // No Gram backend attached to the copy: the float64 host path.
  absl::StatusOr<model::Readout> readout =
      ReadoutAfterAbsorbing(bundle.upper, *stream_features, stream->labels);
  ASSERT_TRUE(readout.ok()) << readout.status();
  constexpr int kProbe = 16;
  absl::StatusOr<model::MatrixF> probe_features =
      int8->Features(ToMatrix(fixture->heldout).topRows(kProbe));
  ASSERT_TRUE(probe_features.ok()) << probe_features.status();
  const model::MatrixF expected = readout->Scores(*probe_features);

  const std::vector<std::string> flags = {
      "--device=cpu", absl::StrCat("--state_dir=", fixture->dir, "/gram_state")};
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(path, flags);
  ASSERT_NE(server, nullptr);
  // Two messages of 50 (<= kMaxBatch): both staged (fewer than gram_block_rows), then accumulated
  // by one Gram call when the stream's end publishes, and charged to the absorb phase.
  std::vector<v1::UpdateRequest> messages(2);
  for (size_t i = 0; i < stream->size(); ++i) {
    v1::LabeledSample* sample = messages[i / 50].add_samples();
    sample->mutable_sample()->set_pixels(stream->image(i), stream->image_size());
    sample->set_label(stream->labels[i]);
  }
  absl::StatusOr<v1::UpdateSummary> summary = server->client().Update(messages);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->accepted(), 100u);
  const int d = bundle.lower->feature_size();
  const int c = static_cast<int>(bundle.upper.labels().size());
  absl::StatusOr<fpga::EnergyTable> table = fpga::EnergyTableFor("cpu");
  ASSERT_TRUE(table.ok());
  const double gram_joules = fpga::Joules(fpga::GramInt8CpuCounts(100, 100, d, c), *table);
  EXPECT_NEAR(summary->energy().absorb_joules(), gram_joules, 1e-12 * gram_joules);
  absl::StatusOr<v1::Stats> stats = server->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_NEAR(stats->energy().absorb_joules(), gram_joules, 1e-12 * gram_joules);

  ExpectScoresLiveAndAfterRecovery(server, path, flags, expected);
}

TEST_F(ServerDeviceTest, Int8AccuracyIsCloseToFloat) {
  std::unique_ptr<ServerProcess> float_server =
      ServerProcess::Start(fixture->int8_bundle, {"--device=float"});
  ASSERT_NE(float_server, nullptr);
  const double float_accuracy = Accuracy(float_server->client());
  float_server.reset();
  std::unique_ptr<ServerProcess> int8_server =
      ServerProcess::Start(fixture->int8_bundle, {"--device=cpu"});
  ASSERT_NE(int8_server, nullptr);
  const double int8_accuracy = Accuracy(int8_server->client());
  EXPECT_GT(float_accuracy, 0.7);
  // 512 images: one image is 0.2 points; allow a few flips either way.
  EXPECT_NEAR(int8_accuracy, float_accuracy, 0.012)
      << "float " << float_accuracy << ", int8 " << int8_accuracy;
}

}  // namespace
}  // namespace strata
