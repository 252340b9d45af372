// Dynamic batching of Predict (server/batcher.h): the batcher alone, in-process.
//
// PredictBatcherTest drives the batcher with real requests and checks how batches are formed.
// In-process and free of gRPC servers, so ThreadSanitizer runs it (label "concurrency"). Real
// servers with batching on and off: tests/batching_server_test.cc.
#include "server/batcher.h"

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
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "strata/v1/strata.grpc.pb.h"

namespace strata {
namespace {

using server::BatchScratch;
using server::PredictBatcher;
using server::PredictCall;

// ---- the batcher alone ---------------------------------------------------------------------------

v1::PredictRequest RequestOfSize(int images) {
  v1::PredictRequest request;
  for (int i = 0; i < images; ++i) request.add_samples()->set_pixels(std::string(4, '\0'));
  return request;
}

TEST(PredictBatcherTest, FormsBatchesOfWholeRequestsInArrivalOrderUpToMaxImages) {
  // Each request's image count doubles as its identity here (distinct per request).
  std::vector<v1::PredictRequest> requests;
  for (int images : {1, 2, 1, 3, 2}) requests.push_back(RequestOfSize(images));
  absl::Mutex mu;
  std::vector<std::vector<const v1::PredictRequest*>> batches;
  server::BatcherOptions options;
  options.max_images = 4;
  options.max_delay = absl::Hours(1);  // only a full queue or Drain() forms a batch
  options.latency_aware = false;       // (even at an idle batcher)
  options.workers = 1;
  PredictBatcher batcher(options, [&](std::span<const PredictCall> calls, BatchScratch*) {
    absl::MutexLock lock(&mu);
    batches.emplace_back();
    for (const PredictCall& call : calls) batches.back().push_back(call.request);
  });
  auto enqueue = [&](int i) {
    batcher.Enqueue({nullptr, &requests[i], nullptr, nullptr, nullptr, {}});
  };
  auto batch_count = [&] {
    absl::MutexLock lock(&mu);
    return batches.size();
  };

  enqueue(0);
  enqueue(1);
  enqueue(2);  // 4 images queued: one batch of requests 0, 1, 2
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](decltype(batches)* b) { return b->size() == 1; }, &batches));
  }
  enqueue(3);
  enqueue(4);  // 5 images queued: request 3 (3 images) alone, since 3 + 2 > 4
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](decltype(batches)* b) { return b->size() == 2; }, &batches));
  }
  EXPECT_EQ(batch_count(), 2u);  // request 4 waits (2 < 4 images, delay not up)
  batcher.Drain();               // runs it without waiting for the delay

  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0],
            (std::vector<const v1::PredictRequest*>{&requests[0], &requests[1], &requests[2]}));
  EXPECT_EQ(batches[1], (std::vector<const v1::PredictRequest*>{&requests[3]}));
  EXPECT_EQ(batches[2], (std::vector<const v1::PredictRequest*>{&requests[4]}));
  const server::BatcherCounters counters = batcher.Counters();
  EXPECT_EQ(counters.batches, 3u);
  EXPECT_EQ(counters.requests, 5u);
  EXPECT_EQ(counters.images, 9u);
  EXPECT_EQ(counters.multi_request_batches, 1u);
  EXPECT_EQ(counters.largest_batch_images, 4u);
}

TEST(PredictBatcherTest, ZeroDelayRunsWhatIsQueuedWithoutWaiting) {
  v1::PredictRequest request = RequestOfSize(1);
  absl::Mutex mu;
  int runs = 0;
  server::BatcherOptions options;
  options.max_images = 64;
  options.max_delay = absl::ZeroDuration();
  options.workers = 1;
  PredictBatcher batcher(options, [&](std::span<const PredictCall> calls, BatchScratch*) {
    absl::MutexLock lock(&mu);
    runs += static_cast<int>(calls.size());
  });
  // Far from max_images, and nothing else arrives: the request must still run, now.
  batcher.Enqueue({nullptr, &request, nullptr, nullptr, nullptr, {}});
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                      +[](int* r) { return *r == 1; }, &runs),
                                  absl::Seconds(60)));
}

TEST(PredictBatcherTest, LatencyAwareRunsALoneRequestAtOnceAndBatchesWhileBusy) {
  std::vector<v1::PredictRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(RequestOfSize(1));
  absl::Mutex mu;
  std::vector<std::vector<const v1::PredictRequest*>> batches;
  bool release_first = false;
  server::BatcherOptions options;
  options.max_images = 2;
  options.max_delay = absl::Hours(1);  // waiting for the delay would hang the test
  options.workers = 2;
  PredictBatcher batcher(options, [&](std::span<const PredictCall> calls, BatchScratch*) {
    absl::MutexLock lock(&mu);
    batches.emplace_back();
    for (const PredictCall& call : calls) batches.back().push_back(call.request);
    // The first batch holds its worker until released: the server is busy meanwhile.
    if (batches.size() == 1) mu.Await(absl::Condition(&release_first));
  });
  auto enqueue = [&](int i) {
    batcher.Enqueue({nullptr, &requests[i], nullptr, nullptr, nullptr, {}});
  };
  auto await_batches = [&](size_t n) {
    absl::MutexLock lock(&mu);
    auto enough = [&] { return batches.size() >= n; };
    return mu.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(60));
  };

  enqueue(0);  // an idle server: runs at once, alone, although the delay is an hour
  ASSERT_TRUE(await_batches(1));
  enqueue(1);  // a worker is busy and requests arrive fast: request 1 waits for company...
  enqueue(2);  // ...which fills its batch (max_images 2)
  ASSERT_TRUE(await_batches(2));
  {
    absl::MutexLock lock(&mu);
    release_first = true;
  }
  batcher.Drain();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0], (std::vector<const v1::PredictRequest*>{&requests[0]}));
  EXPECT_EQ(batches[1], (std::vector<const v1::PredictRequest*>{&requests[1], &requests[2]}));
}

}  // namespace
}  // namespace strata
