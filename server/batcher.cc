#include "server/batcher.h"

#include <omp.h>

#include <algorithm>
#include <utility>

namespace strata::server {
namespace {

// The moving average of arrival gaps gives each new gap this weight.
constexpr double kGapWeight = 0.125;
// Gaps longer than this many max_delays count as this many: long enough to say "no company",
// short enough that the average follows a burst after a quiet spell within a few arrivals.
constexpr int64_t kGapCapDelays = 4;

BatcherOptions Clamped(BatcherOptions options) {
  options.max_images = std::max(options.max_images, 1);
  options.max_delay = std::max(options.max_delay, absl::ZeroDuration());
  options.workers = std::max(options.workers, 1);
  options.threads_per_worker = std::max(options.threads_per_worker, 1);
  if (options.alone_threads <= 0) options.alone_threads = omp_get_num_procs();
  options.alone_min_images = std::max(options.alone_min_images, 1);
  return options;
}

}  // namespace

PredictBatcher::PredictBatcher(BatcherOptions options, RunBatch run)
    : options_(Clamped(std::move(options))), run_(std::move(run)) {
  {
    absl::MutexLock lock(&mu_);
    // Room for a full batch of single-image requests per worker, and then some: enough that the
    // queue does not grow at the concurrencies we serve.
    queue_.reserve(static_cast<size_t>(options_.max_images) * (options_.workers + 1));
  }
  workers_.reserve(options_.workers);
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { Work(); });
}

PredictBatcher::~PredictBatcher() { Drain(); }

void PredictBatcher::Enqueue(PredictCall call) {
  call.enqueued = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      if (last_arrival_ != absl::InfinitePast()) {
        const absl::Duration gap =
            std::min(call.enqueued - last_arrival_, kGapCapDelays * options_.max_delay);
        mean_arrival_gap_ = mean_arrival_gap_ == absl::InfiniteDuration()
                                ? gap
                                : (1 - kGapWeight) * mean_arrival_gap_ + kGapWeight * gap;
      }
      last_arrival_ = call.enqueued;
      queue_.push_back(call);
      queued_images_ += call.request->samples_size();
      return;
    }
  }
  BatchScratch scratch;
  Record(call.request->samples_size(), 1);
  run_(std::span<const PredictCall>(&call, 1), &scratch);
}

void PredictBatcher::Drain() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

BatcherCounters PredictBatcher::Counters() const {
  absl::MutexLock lock(&counters_mu_);
  return counters_;
}

bool PredictBatcher::FullOrStopping() const {
  return stopping_ || queued_images_ >= options_.max_images;
}

bool PredictBatcher::NotEmptyOrStopping() const { return stopping_ || !queue_.empty(); }

bool PredictBatcher::CompanyComing() const {
  // Another worker busy means requests are in flight (their clients send more when answered); a
  // short mean gap means they keep arriving. Either alone is no reason to wait: an idle server
  // runs a lone request at once, and sparse traffic would wait for nothing.
  const bool other_worker_busy = idle_workers_ < options_.workers;
  return other_worker_busy && mean_arrival_gap_ < options_.max_delay;
}

bool PredictBatcher::ReadyToTake() const {
  return FullOrStopping() || (options_.latency_aware && !CompanyComing());
}

void PredictBatcher::Record(int images, int requests) {
  {
    absl::MutexLock lock(&counters_mu_);
    ++counters_.batches;
    counters_.requests += requests;
    counters_.images += images;
    if (requests > 1) ++counters_.multi_request_batches;
    counters_.largest_batch_images =
        std::max(counters_.largest_batch_images, static_cast<uint64_t>(images));
  }
  if (options_.on_batch) options_.on_batch(images, requests);
}

void PredictBatcher::Work() {
  // This thread's OpenMP team size for the parallel regions its batch opens, set per batch.
  int team = options_.threads_per_worker;
  omp_set_num_threads(team);
  std::vector<PredictCall> batch;
  batch.reserve(options_.max_images);
  BatchScratch scratch;
  for (;;) {
    int images = 0;
    {
      absl::MutexLock lock(&mu_);
      ++idle_workers_;
      for (;;) {
        mu_.Await(absl::Condition(this, &PredictBatcher::NotEmptyOrStopping));
        if (queue_.empty()) return;  // stopping, and nothing left to run
        if (ReadyToTake()) break;
        // Wait for the batch to fill, at most until the oldest request's delay is up (or, latency
        // aware, until no more company is coming). Another worker may take the queue meanwhile:
        // then start over with the new oldest request.
        const absl::Time deadline = queue_.front().enqueued + options_.max_delay;
        if (absl::Now() >= deadline) break;
        mu_.AwaitWithDeadline(absl::Condition(this, &PredictBatcher::ReadyToTake), deadline);
      }
      // Share the queue with the other idle workers instead of taking it all: with a bounded
      // number of requests in flight, one worker taking everything leaves the other core idle
      // until replies bring new requests (measured: 3.1 of 8 core-seconds busy at concurrency 32).
      const int64_t share = (queued_images_ + idle_workers_ - 1) / idle_workers_;
      const int64_t limit = std::min<int64_t>(options_.max_images, share);
      --idle_workers_;
      size_t taken = 0;
      while (taken < queue_.size()) {
        const int n = queue_[taken].request->samples_size();
        if (taken > 0 && images + n > limit) break;
        images += n;
        ++taken;
      }
      batch.assign(queue_.begin(), queue_.begin() + taken);
      queue_.erase(queue_.begin(), queue_.begin() + taken);
      queued_images_ -= images;
      // A large batch with nothing else to do anywhere may use every core. (A request arriving
      // meanwhile then shares the cores with it briefly, rather than leaving one idle now.)
      const bool alone = queue_.empty() && idle_workers_ == options_.workers - 1;
      const int wanted = alone && images >= options_.alone_min_images ? options_.alone_threads
                                                                      : options_.threads_per_worker;
      if (wanted != team) omp_set_num_threads(team = wanted);
    }
    // Counted before the batch runs, so that anyone who saw one of its replies also sees it
    // counted.
    Record(images, static_cast<int>(batch.size()));
    run_(std::span<const PredictCall>(batch), &scratch);
  }
}

}  // namespace strata::server
