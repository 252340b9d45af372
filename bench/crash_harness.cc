#include "bench/crash_harness.h"

#include <omp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <Eigen/QR>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <span>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "model/lower_tier.h"
#include "model/tensor.h"
#include "tests/server_process.h"
#include "tests/shared_file.h"
#include "update/env.h"
#include "update/snapshot.h"

namespace strata::crash {
namespace {

constexpr size_t kTrainImages = 1000;
constexpr absl::Duration kStartupLimit = absl::Seconds(120);
// A message's fitted weight within this of an integer counts as that integer.
constexpr double kWeightTolerance = 1e-6;

// Images [begin, end) as the lower tier's input rows.
model::MatrixF ToMatrix(const data::LabeledImages& images, size_t begin, size_t end) {
  return model::PixelsToMatrix(
      std::span<const uint8_t>(images.image(begin), (end - begin) * images.image_size()),
      static_cast<Eigen::Index>(images.image_size()));
}

// A message's contribution to G (full matrix) and Q (columns in `labels` order).
struct Contribution {
  model::MatrixD gram;
  model::MatrixD cross;
};

Contribution ContributionOf(const Fixture& fixture, const Message& m,
                            const std::vector<std::string>& labels) {
  // One Features call per message, as the server does (messages are at most kMaxBatch samples).
  const model::MatrixD h =
      fixture.bundle.lower->Features(ToMatrix(fixture.updates, m.begin, m.begin + m.count))
          .cast<double>();
  Contribution c{h.transpose() * h, model::MatrixD::Zero(h.cols(), labels.size())};
  for (size_t i = 0; i < m.count; ++i) {
    const auto it = std::find(labels.begin(), labels.end(), fixture.updates.labels[m.begin + i]);
    c.cross.col(it - labels.begin()) += h.row(i).transpose();
  }
  return c;
}

double MaxAbs(const model::MatrixD& m) { return m.cwiseAbs().maxCoeff(); }

// G's lower triangle and Q as one column: the rows of the full attribution fit.
Eigen::VectorXd Stack(const model::MatrixD& gram, const model::MatrixD& cross) {
  const Eigen::Index d = gram.rows();
  Eigen::VectorXd v(d * (d + 1) / 2 + cross.size());
  Eigen::Index k = 0;
  for (Eigen::Index i = 0; i < d; ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) v[k++] = gram(i, j);
  }
  for (Eigen::Index i = 0; i < cross.size(); ++i) v[k++] = cross.data()[i];
  return v;
}

bool Near(double weight, double target) { return std::abs(weight - target) < kWeightTolerance; }

// The second fit (see the header): every message's weight in recovered - bundle, over G and Q.
// Fills the lost / duplicated / half-applied counts of `report`.
void AttributeDifference(const Fixture& fixture, const model::UpperTier& recovered,
                         const std::vector<Message>& acked, const std::vector<Message>& unacked,
                         RunReport& report) {
  const std::vector<std::string>& labels = recovered.labels();
  const model::UpperTier& base = fixture.bundle.upper;
  const model::MatrixD base_gram = base.gram().selfadjointView<Eigen::Lower>();
  const model::MatrixD recovered_gram = recovered.gram().selfadjointView<Eigen::Lower>();
  const Eigen::VectorXd residual =
      Stack(recovered_gram, recovered.cross()) - Stack(base_gram, base.cross());
  std::vector<Message> all = acked;
  all.insert(all.end(), unacked.begin(), unacked.end());
  model::MatrixD basis(residual.size(), all.size());
  for (size_t k = 0; k < all.size(); ++k) {
    const Contribution c = ContributionOf(fixture, all[k], labels);
    basis.col(k) = Stack(c.gram, c.cross);
  }
  const Eigen::VectorXd weights = basis.colPivHouseholderQr().solve(residual);
  for (size_t k = 0; k < all.size(); ++k) {
    const double w = weights[k];
    const bool was_acked = k < acked.size();
    if (Near(w, 1) || (!was_acked && Near(w, 0))) continue;
    if (was_acked && Near(w, 0)) {
      report.lost_samples += all[k].count;
    } else if (Near(w, std::round(w)) && w > 1) {
      report.duplicated_samples += all[k].count * static_cast<size_t>(std::round(w) - 1);
    } else {
      ++report.half_applied_messages;
    }
  }
}

size_t CountOccurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Fixture>> MakeFixture(size_t update_images) {
  // The reference features must be bit-identical to the server's, which runs one lower-tier thread
  // (see Server::Start): use one thread here too.
  omp_set_num_threads(1);
  char dir_template[] = "/tmp/strata_crash.XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp /tmp/strata_crash");
  const std::string dir = dir_template;
  const std::string bundle_path = dir + "/model.bundle";
  absl::StatusOr<data::LabeledImages> train = data::Load("fashion-mnist:train", {0, kTrainImages});
  if (!train.ok()) return train.status();
  absl::StatusOr<data::LabeledImages> updates =
      data::Load("fashion-mnist:train", {kTrainImages, kTrainImages + update_images});
  if (!updates.ok()) return updates.status();

  absl::Status written =
      test::MakeShared("crash-harness.bundle", bundle_path, [&train](const std::string& out) {
        model::LowerTierSpec spec;
        spec.filters = 8;
        spec.expansion = 128;
        spec.pca_images = kTrainImages;
        spec.seed = 11;
        return test::FitBundle(spec, *train, out);
      });
  if (!written.ok()) return written;
  absl::StatusOr<model::Bundle> read = model::ReadBundle(bundle_path);
  if (!read.ok()) return read.status();
  return std::make_unique<Fixture>(
      Fixture{dir, bundle_path, *std::move(read), *std::move(updates)});
}

// ---- the server process ----------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const Fixture& fixture,
                                                      const std::string& state_dir,
                                                      const std::string& log_path,
                                                      const std::vector<std::string>& extra_args,
                                                      int* exit_status) {
  static std::atomic<int> count{0};
  const std::string port_file = absl::StrCat(fixture.dir, "/port.", count++);
  std::vector<std::string> args = {absl::StrCat("--bundle=", fixture.bundle_path),
                                   "--address=127.0.0.1:0", absl::StrCat("--port_file=", port_file),
                                   absl::StrCat("--max_batch=", kMaxBatch),
                                   absl::StrCat("--state_dir=", state_dir)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::unique_ptr<Server> server(new Server);
  const absl::Time start = absl::Now();
  // One lower-tier thread per server: the machine is small and shared, and OpenMP's spinning
  // threads on oversubscribed cores would make every Update crawl.
  server->pid_ = test::ServerProcess::Spawn(
      args, {.stderr_path = log_path,
             .environment = {{"OMP_NUM_THREADS", "1"}, {"OMP_WAIT_POLICY", "PASSIVE"}}});
  const absl::Time limit = start + kStartupLimit;
  auto exited = [&]() -> bool {
    int status = 0;
    if (waitpid(server->pid_, &status, WNOHANG) != server->pid_) return false;
    server->pid_ = -1;
    if (exit_status != nullptr) *exit_status = status;
    return true;
  };
  while (true) {
    std::ifstream in(port_file);
    if (in >> server->port_ && server->port_ != 0) break;
    if (exited()) return absl::FailedPreconditionError("strata-server exited during start-up");
    if (absl::Now() > limit) return absl::DeadlineExceededError("strata-server wrote no port file");
    absl::SleepFor(absl::Milliseconds(10));
  }
  client::ClientOptions options;
  options.timeout = absl::Seconds(60);
  server->client_ = std::make_unique<client::Client>(server->address(), options);
  // Recovery runs after the port is written; the server may still refuse to start.
  while (!server->client_->WaitUntilServing(absl::Milliseconds(200)).ok()) {
    if (exited()) return absl::FailedPreconditionError("strata-server exited during start-up");
    if (absl::Now() > limit) {
      return absl::DeadlineExceededError("strata-server did not become SERVING");
    }
  }
  server->startup_time_ = absl::Now() - start;
  return server;
}

Server::~Server() { Kill(); }

void Server::Kill() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

int Server::Terminate() {
  int status = 0;
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  return status;
}

std::string Server::address() const { return absl::StrCat("127.0.0.1:", port_); }

v1::UpdateRequest ToRequest(const Fixture& fixture, const Message& m) {
  v1::UpdateRequest request;
  for (size_t i = m.begin; i < m.begin + m.count; ++i) {
    v1::LabeledSample* sample = request.add_samples();
    sample->mutable_sample()->set_pixels(fixture.updates.image(i), fixture.updates.image_size());
    sample->set_label(fixture.updates.labels[i]);
  }
  return request;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---- the run ----------------------------------------------------------------------------------

std::vector<absl::Duration> RunReport::RecoveryTimes() const {
  std::vector<absl::Duration> times;
  for (const RoundReport& round : rounds) times.push_back(round.recovery_time);
  std::sort(times.begin(), times.end());
  return times;
}

absl::Duration RunReport::RecoveryQuantile(double q) const {
  const std::vector<absl::Duration> times = RecoveryTimes();
  if (times.empty()) return absl::ZeroDuration();
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(times.size())));
  return times[std::clamp<size_t>(rank, 1, times.size()) - 1];
}

namespace {

// One run of RunCrashRounds: the clients' shared bookkeeping and the steps of a run.
class CrashRun {
 public:
  CrashRun(const Fixture& fixture, const RunOptions& options)
      : fixture_(fixture), options_(options), rng_(options.seed) {}

  absl::StatusOr<RunReport> Run() {
    absl::StatusOr<std::unique_ptr<Server>> server = StartServer("first start");
    if (!server.ok()) return server.status();
    for (int round = 0; round < options_.rounds; ++round) {
      const RoundReport round_report = KillDuringUpdates(round, **server);
      server = StartServer(absl::StrCat("round ", round, ": restart"));
      if (!server.ok()) return server.status();
      absl::Status checked = CheckRecovery(round_report, **server);
      if (!checked.ok()) return checked;
    }
    report_.images_streamed = next_image_;
    // Have the recovered server write its statistics down.
    absl::StatusOr<v1::SnapshotInfo> info = (*server)->client().Snapshot();
    if (!info.ok()) return info.status();
    absl::StatusOr<update::UpperTierSnapshot> snapshot =
        update::ReadSnapshot(update::Env::Default(), info->path());
    if (!snapshot.ok()) return snapshot.status();
    (*server)->Kill();
    if (absl::Status compared = CompareStatistics(snapshot->upper); !compared.ok()) return compared;
    report_.torn_tails_cut = CountOccurrences(ReadText(options_.log_path), "cut the torn tail");
    return report_;
  }

 private:
  absl::StatusOr<std::unique_ptr<Server>> StartServer(absl::string_view what) {
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Start(fixture_, options_.state_dir, options_.log_path, options_.server_args);
    if (!server.ok()) {
      return absl::Status(server.status().code(),
                          absl::StrCat(what, ": ", server.status().message(), "; log:\n",
                                       ReadText(options_.log_path)));
    }
    return server;
  }

  // Records that a client has seen `version` published.
  void Saw(uint64_t version) {
    uint64_t seen = version_seen_.load();
    while (version > seen && !version_seen_.compare_exchange_weak(seen, version)) {
    }
  }

  // Streams updates from options_.clients threads, kills the server at a random moment, and
  // waits for the clients to notice.
  RoundReport KillDuringUpdates(int round, Server& server) {
    std::atomic<bool> stop{false};
    std::atomic<int> in_flight{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < options_.clients; ++c) {
      clients.emplace_back([this, c, seed = rng_(), address = server.address(), &stop, &in_flight] {
        StreamUpdates(c, seed, address, stop, in_flight);
      });
    }
    absl::SleepFor(options_.slowdown * absl::Milliseconds(50 + static_cast<int>(rng_() % 600)));
    // What a reader sees just before the kill: published, if not necessarily durable yet.
    if (absl::StatusOr<v1::ModelInfo> info = server.client().GetModelInfo(); info.ok()) {
      Saw(info->model_version());
    }
    RoundReport round_report;
    round_report.round = round;
    round_report.kill_during_stream = in_flight > 0;
    server.Kill();
    stop = true;
    for (std::thread& t : clients) t.join();
    round_report.version_seen = version_seen_.load();
    return round_report;
  }

  // One client: Update streams of 1-4 messages of 1-24 images each, until `stop`, the pool is
  // used up or the server is gone; client 0 also asks for snapshots now and then.
  void StreamUpdates(int c, uint64_t seed, const std::string& address,
                     const std::atomic<bool>& stop, std::atomic<int>& in_flight) {
    std::mt19937_64 local(seed);
    client::ClientOptions client_options;
    client_options.timeout = absl::Seconds(30);
    client::Client client(address, client_options);
    while (!stop) {
      const std::vector<Message> stream = TakeMessages(local);
      if (stream.empty()) break;  // the update pool is used up
      std::vector<v1::UpdateRequest> requests;
      size_t samples = 0;
      for (const Message& m : stream) {
        requests.push_back(ToRequest(fixture_, m));
        samples += m.count;
      }
      ++in_flight;
      absl::StatusOr<v1::UpdateSummary> summary = client.Update(requests);
      --in_flight;
      if (summary.ok()) Saw(summary->model_version());
      absl::MutexLock lock(&mu_);
      if (summary.ok() && summary->accepted() != samples) ++report_.summary_mismatches;
      std::vector<Message>& into = summary.ok() ? acked_ : unacked_;
      into.insert(into.end(), stream.begin(), stream.end());
      if (!summary.ok()) break;  // the server is gone
      if (c == 0 && local() % 8 == 0) {
        (void)client.Snapshot();  // may fail if the kill lands meanwhile
      }
    }
  }

  // The next 1-4 messages of the update pool (fewer at its end).
  std::vector<Message> TakeMessages(std::mt19937_64& local) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    std::vector<Message> stream;
    const int messages = 1 + static_cast<int>(local() % 4);
    for (int i = 0; i < messages; ++i) {
      const size_t count = 1 + local() % 24;
      if (next_image_ + count > fixture_.updates.size()) break;
      stream.push_back({next_image_, count});
      next_image_ += count;
    }
    return stream;
  }

  // After a restart: the version served must be above every version seen before the kill.
  absl::Status CheckRecovery(RoundReport round_report, Server& server) {
    round_report.recovery_time = server.startup_time();
    absl::StatusOr<v1::ModelInfo> info = server.client().GetModelInfo();
    if (!info.ok()) return info.status();
    round_report.version_after = info->model_version();
    Saw(round_report.version_after);
    if (round_report.version_after <= round_report.version_seen) ++report_.version_violations;
    if (round_report.kill_during_stream) ++report_.kills_during_streams;
    report_.rounds.push_back(round_report);
    if (options_.on_round) options_.on_round(round_report);
    return absl::OkStatus();
  }

  // Compares the recovered statistics with the bundle's plus every acknowledged message plus the
  // unacknowledged messages that landed whole (found by least squares of the Q residual).
  absl::Status CompareStatistics(const model::UpperTier& recovered) {
    const std::vector<std::string>& labels = recovered.labels();
    if (labels != fixture_.bundle.upper.labels()) {
      return absl::InternalError("the recovered labels are not the bundle's (Fashion-MNIST's 10)");
    }
    const model::UpperTier& base = fixture_.bundle.upper;
    model::MatrixD gram = base.gram().selfadjointView<Eigen::Lower>();
    model::MatrixD cross = base.cross();
    uint64_t samples = base.samples_seen();
    for (const Message& m : acked_) {
      Contribution c = ContributionOf(fixture_, m, labels);
      gram += c.gram;
      cross += c.cross;
      samples += m.count;
      report_.acked_samples += m.count;
    }
    size_t half_applied = 0;
    AddLandedMessages(recovered, &gram, &cross, &samples, &half_applied);
    const model::MatrixD recovered_gram = recovered.gram().selfadjointView<Eigen::Lower>();
    report_.gram_error = MaxAbs(recovered_gram - gram) / MaxAbs(gram);
    report_.cross_error = MaxAbs(recovered.cross() - cross) / MaxAbs(cross);
    report_.samples_seen = recovered.samples_seen();
    report_.expected_samples_seen = samples;
    report_.statistics_match = half_applied == 0 && report_.gram_error <= 1e-9 &&
                               report_.cross_error <= 1e-9 && report_.samples_seen == samples;
    if (!report_.statistics_match) {
      // Say what went wrong: every message's weight, acknowledged ones included.
      AttributeDifference(fixture_, recovered, acked_, unacked_, report_);
    }
    report_.acked_messages = acked_.size();
    report_.unacked_messages = unacked_.size();
    return absl::OkStatus();
  }

  // Which unacknowledged messages landed: least squares of the Q residual on their contributions.
  // Adds those that landed whole (weight 1) to the expected sums; counts those that landed in part.
  void AddLandedMessages(const model::UpperTier& recovered, model::MatrixD* gram,
                         model::MatrixD* cross, uint64_t* samples, size_t* half_applied) {
    const model::MatrixD residual = recovered.cross() - *cross;
    std::vector<Contribution> maybe;
    model::MatrixD basis(residual.size(), unacked_.size());
    for (size_t u = 0; u < unacked_.size(); ++u) {
      maybe.push_back(ContributionOf(fixture_, unacked_[u], recovered.labels()));
      basis.col(u) = Eigen::Map<const Eigen::VectorXd>(maybe.back().cross.data(), residual.size());
    }
    Eigen::VectorXd weights = Eigen::VectorXd::Zero(unacked_.size());
    if (!unacked_.empty()) {
      weights = basis.colPivHouseholderQr().solve(
          Eigen::Map<const Eigen::VectorXd>(residual.data(), residual.size()));
    }
    for (size_t u = 0; u < unacked_.size(); ++u) {
      if (Near(weights[u], 1)) {
        *gram += maybe[u].gram;
        *cross += maybe[u].cross;
        *samples += unacked_[u].count;
        ++report_.landed_messages;
      } else if (!Near(weights[u], 0)) {
        ++*half_applied;
      }
    }
  }

  const Fixture& fixture_;
  const RunOptions& options_;
  RunReport report_;
  std::mt19937_64 rng_;
  // Guards the pool position, the message lists and report_'s counters across client threads.
  absl::Mutex mu_;
  size_t next_image_ = 0;
  std::vector<Message> acked_, unacked_;
  // The highest version any client has seen so far, over all rounds.
  std::atomic<uint64_t> version_seen_{0};
};

}  // namespace

absl::StatusOr<RunReport> RunCrashRounds(const Fixture& fixture, const RunOptions& options) {
  return CrashRun(fixture, options).Run();
}

}  // namespace strata::crash
