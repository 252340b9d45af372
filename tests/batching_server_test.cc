// Dynamic batching of Predict (server/batcher.h) in real servers.
//
// BatchingServerTest runs real strata-servers on a small real Fashion-MNIST model: one with
// batching off gives each image's reference answer, one with batching on (--batch_max_images=8 and
// a delay far longer than any test and latency-aware waiting off, so a batch forms exactly when 8
// images are queued, even the first at an idle server) answers 8
// concurrent single-image requests at a time, and every reply must equal its own image's reference.
// (The batcher alone, in-process: tests/batcher_test.cc.)
#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "data/dataset.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "strata/v1/strata.grpc.pb.h"
#include "tests/server_process.h"
#include "tests/suite_fixture.h"

namespace strata {
namespace {

using test::ServerProcess;

constexpr int kTrainImages = 1000;
constexpr int kBatchImages = 8;

struct Fixture : test::FixtureDir {
  std::string bundle_path;
  data::LabeledImages test_images;

  static void Build(Fixture& f) {
    f.bundle_path = f.Path("model.bundle");
    ASSERT_TRUE(test::WriteFashionBundle(f.bundle_path, kTrainImages).ok());
    absl::StatusOr<data::LabeledImages> images = data::Load("fashion-mnist:test", {0, 64});
    ASSERT_TRUE(images.ok()) << images.status();
    f.test_images = *std::move(images);
  }
};
Fixture*& fixture = test::SuiteFixture<Fixture>::instance;

v1::PredictRequest SingleImage(int i) {
  v1::PredictRequest request;
  request.set_return_scores(true);
  request.add_samples()->set_pixels(fixture->test_images.image(i),
                                    fixture->test_images.image_size());
  return request;
}

class BatchingServerTest : public test::SuiteFixtureTest<Fixture> {
 protected:
  void SetUp() override {
    SuiteFixtureTest::SetUp();
    if (HasFatalFailure()) return;
    unbatched_ = ServerProcess::Start(fixture->bundle_path, {"--batching=off"});
    ASSERT_NE(unbatched_, nullptr);
    // A batch forms only when kBatchImages images are queued (the delay outlasts any test; the
    // server drains what is queued at shutdown), on one worker: batch composition is exact.
    batched_ = ServerProcess::Start(
        fixture->bundle_path,
        {"--batching=on", "--batch_max_images=8", "--batch_max_delay_us=600000000",
         "--batch_workers=1", "--batch_latency_aware=false"});
    ASSERT_NE(batched_, nullptr);
  }

  // The batching-off server's reply for test image i.
  v1::PredictResponse Reference(int i) {
    absl::StatusOr<v1::PredictResponse> reply = unbatched_->client().Predict(SingleImage(i));
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : v1::PredictResponse();
  }

  std::unique_ptr<ServerProcess> unbatched_;
  std::unique_ptr<ServerProcess> batched_;
};

void ExpectSameAnswer(const v1::PredictResponse& got, const v1::PredictResponse& want, int image) {
  ASSERT_EQ(got.predictions_size(), 1) << "image " << image;
  ASSERT_EQ(want.predictions_size(), 1) << "image " << image;
  const v1::Prediction& g = got.predictions(0);
  const v1::Prediction& w = want.predictions(0);
  EXPECT_EQ(g.label(), w.label()) << "image " << image;
  EXPECT_EQ(g.class_index(), w.class_index()) << "image " << image;
  ASSERT_EQ(g.scores_size(), w.scores_size()) << "image " << image;
  // The same float arithmetic on the same row, but inside a larger GEMM: equal up to rounding.
  for (int k = 0; k < g.scores_size(); ++k) {
    EXPECT_NEAR(g.scores(k), w.scores(k), 1e-4 * std::max(1.0f, std::fabs(w.scores(k))))
        << "image " << image << " class " << k;
  }
  EXPECT_EQ(got.model_version(), want.model_version());
  // The readout's work is exactly proportional to the rows: a request's share of the batch's is
  // what it costs alone.
  EXPECT_NEAR(got.energy().upper_tier_joules(), want.energy().upper_tier_joules(),
              1e-9 * want.energy().upper_tier_joules());
  // The lower tier's is not (the backend reads its weights once per call, whatever the rows), so
  // a request's share of a batch costs more than nothing and at most what it costs alone.
  EXPECT_GT(got.energy().lower_tier_joules(), 0);
  EXPECT_LE(got.energy().lower_tier_joules(), want.energy().lower_tier_joules() * (1 + 1e-9));
}

TEST_F(BatchingServerTest, ConcurrentSingleImageRequestsShareBatchesAndGetTheirOwnAnswers) {
  constexpr int kRounds = 4;
  constexpr int kImages = kBatchImages * kRounds;
  std::vector<v1::PredictResponse> reference(kImages);
  std::set<std::string> labels;
  for (int i = 0; i < kImages; ++i) {
    reference[i] = Reference(i);
    if (reference[i].predictions_size() == 1) labels.insert(reference[i].predictions(0).label());
  }
  // Distinct images with different answers, so a reply scattered to the wrong request shows.
  ASSERT_GE(labels.size(), 4u);

  // kBatchImages threads, each sending its own images one after another: every round fills exactly
  // one batch with one request of each thread.
  std::vector<absl::StatusOr<v1::PredictResponse>> replies(kImages, absl::UnknownError("unsent"));
  std::vector<std::thread> threads;
  for (int t = 0; t < kBatchImages; ++t) {
    threads.emplace_back([&, t] {
      client::Client client(batched_->address());
      for (int r = 0; r < kRounds; ++r) {
        const int i = r * kBatchImages + t;
        replies[i] = client.Predict(SingleImage(i));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  double lower_joules = 0;
  for (int i = 0; i < kImages; ++i) {
    ASSERT_TRUE(replies[i].ok()) << "image " << i << ": " << replies[i].status();
    ExpectSameAnswer(*replies[i], reference[i], i);
    lower_joules += replies[i]->energy().lower_tier_joules();
    // Equal requests in one batch pay equal shares.
    const int first_of_batch = i / kBatchImages * kBatchImages;
    EXPECT_NEAR(replies[i]->energy().lower_tier_joules(),
                replies[first_of_batch]->energy().lower_tier_joules(),
                1e-9 * replies[first_of_batch]->energy().lower_tier_joules());
  }
  absl::StatusOr<v1::Stats> stats = batched_->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  // The shares add up to exactly what the server charged for the batches.
  EXPECT_NEAR(lower_joules, stats->energy().lower_tier_inference_joules(), 1e-9 * lower_joules);
  EXPECT_EQ(stats->predict().ok(), static_cast<uint64_t>(kImages));
  EXPECT_EQ(stats->predict().failed(), 0u);
  EXPECT_EQ(stats->samples_predicted(), static_cast<uint64_t>(kImages));
  EXPECT_EQ(stats->predict_batches(), static_cast<uint64_t>(kRounds));
  EXPECT_EQ(stats->predict_batch_requests(), static_cast<uint64_t>(kImages));
  EXPECT_EQ(stats->predict_batch_samples(), static_cast<uint64_t>(kImages));
  EXPECT_EQ(stats->predict_multi_request_batches(), static_cast<uint64_t>(kRounds));
  EXPECT_EQ(stats->predict_largest_batch(), static_cast<uint64_t>(kBatchImages));
  // The unbatched server ran no batches.
  absl::StatusOr<v1::Stats> unbatched = unbatched_->client().GetStats();
  ASSERT_TRUE(unbatched.ok()) << unbatched.status();
  EXPECT_EQ(unbatched->predict_batches(), 0u);
}

TEST_F(BatchingServerTest, ABadRequestInABatchFailsAlone) {
  constexpr int kBad = 3;
  std::vector<v1::PredictResponse> reference(kBatchImages);
  for (int i = 0; i < kBatchImages; ++i) {
    if (i != kBad) reference[i] = Reference(i);
  }
  std::vector<absl::StatusOr<v1::PredictResponse>> replies(kBatchImages,
                                                           absl::UnknownError("unsent"));
  std::vector<std::thread> threads;
  for (int t = 0; t < kBatchImages; ++t) {
    threads.emplace_back([&, t] {
      v1::PredictRequest request = SingleImage(t);
      // 4 bytes short: INVALID_ARGUMENT for this request only.
      if (t == kBad) request.mutable_samples(0)->mutable_pixels()->resize(780);
      client::Client client(batched_->address());
      replies[t] = client.Predict(request);
    });
  }
  for (std::thread& thread : threads) thread.join();

  for (int i = 0; i < kBatchImages; ++i) {
    if (i == kBad) {
      ASSERT_FALSE(replies[i].ok());
      EXPECT_EQ(replies[i].status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(replies[i].status().message().find("samples[0].pixels"), std::string::npos)
          << replies[i].status();
      continue;
    }
    ASSERT_TRUE(replies[i].ok()) << "image " << i << ": " << replies[i].status();
    ExpectSameAnswer(*replies[i], reference[i], i);
  }
  absl::StatusOr<v1::Stats> stats = batched_->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->predict().ok(), static_cast<uint64_t>(kBatchImages - 1));
  EXPECT_EQ(stats->predict().failed(), 1u);
  // All 8 were queued as one batch; the bad one was dropped from it before compute.
  EXPECT_EQ(stats->predict_batches(), 1u);
  EXPECT_EQ(stats->samples_predicted(), static_cast<uint64_t>(kBatchImages - 1));
}

TEST_F(BatchingServerTest, ARequestWhoseDeadlinePassedInTheQueueIsSkipped) {
  // Queued alone, it waits for the batch to fill and its deadline passes first.
  auto stub = v1::Strata::NewStub(
      grpc::CreateChannel(batched_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  v1::PredictResponse expired_reply;
  grpc::Status expired = stub->Predict(&context, SingleImage(0), &expired_reply);
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server's own deadline timer for the call fires a little after the client's: give it ample
  // time to mark the queued call cancelled before its batch can form.
  std::this_thread::sleep_for(std::chrono::seconds(1));

  // Seven more fill its batch; they are answered, it is skipped.
  std::vector<absl::StatusOr<v1::PredictResponse>> replies(kBatchImages,
                                                           absl::UnknownError("unsent"));
  std::vector<std::thread> threads;
  for (int t = 1; t < kBatchImages; ++t) {
    threads.emplace_back([&, t] {
      client::Client client(batched_->address());
      replies[t] = client.Predict(SingleImage(t));
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 1; i < kBatchImages; ++i) {
    ASSERT_TRUE(replies[i].ok()) << "image " << i << ": " << replies[i].status();
    ExpectSameAnswer(*replies[i], Reference(i), i);
  }
  absl::StatusOr<v1::Stats> stats = batched_->client().GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->predict().ok(), static_cast<uint64_t>(kBatchImages - 1));
  EXPECT_EQ(stats->predict().failed(), 1u);  // finished CANCELLED, before compute
  EXPECT_EQ(stats->samples_predicted(), static_cast<uint64_t>(kBatchImages - 1));
}

}  // namespace
}  // namespace strata
