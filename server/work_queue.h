// A fixed set of threads running queued work in FIFO order.
//
// The service runs model work (lower-tier features, absorbs, solves) here instead of on gRPC's
// callback threads, which must never block: a reactor callback schedules the work and returns, and
// the work finishes the RPC (or starts its next read) when done.
#ifndef STRATA_SERVER_WORK_QUEUE_H_
#define STRATA_SERVER_WORK_QUEUE_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace strata::server {

class WorkQueue {
 public:
  // Starts `threads` >= 1 threads. `name` is used in logs.
  WorkQueue(std::string name, int threads);
  // Runs all work already scheduled, then joins the threads (same as Drain()).
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `work` to run on one of the threads. Work scheduled after Drain() started runs on the
  // calling thread instead, so that no work is ever dropped. Thread-safe.
  void Schedule(absl::AnyInvocable<void() &&> work);

  // Runs everything queued, then stops and joins the threads. Idempotent. Must not be called from
  // one of the queue's own threads.
  void Drain();

 private:
  void Run();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // written only by the constructor and Drain()
};

}  // namespace strata::server

#endif  // STRATA_SERVER_WORK_QUEUE_H_
