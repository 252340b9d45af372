// Crash safety and corruption handling of the REAL strata-server binary with --state_dir.
//
// CrashTest: several client threads stream Updates while the server is SIGKILLed at random moments,
// for many rounds, restarting on the same state directory each time. At the end the recovered
// statistics (read from a snapshot file the server writes on request) must equal the bundle's plus a
// batch absorb of exactly: every ACKNOWLEDGED message (its stream's UpdateSummary arrived), plus
// some subset of whole unacknowledged messages. Which unacknowledged messages landed is found by a
// least-squares fit of the residual of Q on the per-message contributions: each coefficient must be
// 0 or 1 (a message half-applied would show as anything else), and G must then match too.
//
// CorruptionTest: damage in the log / snapshots makes the server refuse to start naming the file and
// offset, or recover per docs/operations.md (torn tail cut and logged; damaged newest snapshot
// skipped in favour of the older one).
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <omp.h>

#include <Eigen/QR>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/file.h"
#include "client/client.h"
#include "data/dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"
#include "update/env.h"
#include "update/snapshot.h"
#include "update/update_log.h"
#include "tests/server_process.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

constexpr int kMaxBatch = 64;
constexpr int kTrainImages = 1000;
constexpr absl::Duration kStartupLimit = absl::Seconds(120);

model::MatrixF ToMatrix(const data::LabeledImages& images, size_t begin, size_t end) {
  model::MatrixF m(end - begin, images.image_size());
  for (size_t i = begin; i < end; ++i) {
    for (size_t j = 0; j < images.image_size(); ++j) {
      m(i - begin, j) = static_cast<float>(images.image(i)[j]) / 255.0f;
    }
  }
  return m;
}

struct Fixture {
  std::string dir;
  std::string bundle_path;
  std::optional<model::Bundle> bundle;  // the reference: the same bundle, read back
  data::LabeledImages updates;          // images the bundle has not seen
};
Fixture* fixture = nullptr;

void BuildFixture() {
  // The reference features must be bit-identical to the server's, which runs one lower-tier thread
  // (see Spawn): use one thread here too.
  omp_set_num_threads(1);
  auto* f = new Fixture;
  char dir_template[] = "/tmp/strata_crash_test.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  f->dir = dir_template;
  f->bundle_path = f->dir + "/model.bundle";
  absl::StatusOr<data::LabeledImages> train = data::Load("fashion-mnist:train", {0, kTrainImages});
  ASSERT_TRUE(train.ok()) << train.status();
  absl::StatusOr<data::LabeledImages> updates =
      data::Load("fashion-mnist:train", {kTrainImages, 20000});
  ASSERT_TRUE(updates.ok()) << updates.status();
  f->updates = *std::move(updates);

  model::LowerTierSpec spec;
  spec.filters = 8;
  spec.expansion = 128;
  spec.pca_images = kTrainImages;
  spec.seed = 11;
  const model::MatrixF images = ToMatrix(*train, 0, train->size());
  absl::StatusOr<model::LowerTier> lower = model::LowerTier::Fit(spec, images);
  ASSERT_TRUE(lower.ok()) << lower.status();
  model::UpperTier upper(lower->feature_size(), /*lambda=*/10.0);
  ASSERT_TRUE(upper.AbsorbLabeled(lower->Features(images), train->labels).ok());
  model::Bundle bundle{*std::move(lower), std::move(upper), 1};
  ASSERT_TRUE(model::WriteBundle(bundle, f->bundle_path).ok());
  absl::StatusOr<model::Bundle> read = model::ReadBundle(f->bundle_path);
  ASSERT_TRUE(read.ok()) << read.status();
  f->bundle.emplace(*std::move(read));
  fixture = f;
}

// ---- the server process ----------------------------------------------------------------------

class ServerProcess {
 public:
  // Starts strata-server on the fixture's bundle with `state_dir`; its stderr goes to `log_path`.
  // Returns null (without a test failure) if the process exits during start-up; `exit_status` then
  // holds its wait status.
  static std::unique_ptr<ServerProcess> Start(const std::string& state_dir,
                                              const std::string& log_path,
                                              const std::vector<std::string>& extra_args = {},
                                              int* exit_status = nullptr) {
    static std::atomic<int> count{0};
    const std::string port_file = absl::StrCat(fixture->dir, "/port.", count++);
    std::vector<std::string> args = {absl::StrCat("--bundle=", fixture->bundle_path),
                                     "--address=127.0.0.1:0",
                                     absl::StrCat("--port_file=", port_file),
                                     absl::StrCat("--max_batch=", kMaxBatch),
                                     absl::StrCat("--state_dir=", state_dir)};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::unique_ptr<ServerProcess> server(new ServerProcess);
    server->pid_ = Spawn(args, log_path);
    const absl::Time limit = absl::Now() + kStartupLimit;
    while (true) {
      std::ifstream in(port_file);
      if (in >> server->port_ && server->port_ != 0) break;
      int status = 0;
      if (waitpid(server->pid_, &status, WNOHANG) == server->pid_) {
        server->pid_ = -1;
        if (exit_status != nullptr) *exit_status = status;
        return nullptr;
      }
      if (absl::Now() > limit) {
        ADD_FAILURE() << "strata-server wrote no port file";
        return nullptr;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    client::ClientOptions options;
    options.timeout = absl::Seconds(30);
    server->client_ = std::make_unique<client::Client>(server->address(), options);
    // Recovery runs after the port is written; the server may still refuse to start.
    while (!server->client_->WaitUntilServing(absl::Milliseconds(200)).ok()) {
      int status = 0;
      if (waitpid(server->pid_, &status, WNOHANG) == server->pid_) {
        server->pid_ = -1;
        if (exit_status != nullptr) *exit_status = status;
        return nullptr;
      }
      if (absl::Now() > limit) {
        ADD_FAILURE() << "strata-server did not become SERVING";
        return nullptr;
      }
    }
    return server;
  }

  static pid_t Spawn(const std::vector<std::string>& args, const std::string& log_path) {
    // One lower-tier thread per server: the test machine is small and shared, and OpenMP's
    // spinning threads on oversubscribed cores would make every Update crawl.
    return test::ServerProcess::Spawn(
        args, {.stderr_path = log_path,
               .environment = {{"OMP_NUM_THREADS", "1"}, {"OMP_WAIT_POLICY", "PASSIVE"}}});
  }

  ~ServerProcess() { Kill(); }

  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  client::Client& client() { return *client_; }

  absl::StatusOr<v1::SnapshotInfo> Snapshot() {
    std::unique_ptr<v1::Strata::Stub> stub = v1::Strata::NewStub(client_->channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::SnapshotInfo info;
    grpc::Status status = stub->Snapshot(&context, v1::SnapshotRequest(), &info);
    if (!status.ok()) return client::FromGrpcStatus(status);
    return info;
  }

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  std::unique_ptr<client::Client> client_;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---- messages and the reference statistics ---------------------------------------------------

// One Update message: a run of update images [begin, begin + count).
struct Message {
  size_t begin;
  size_t count;
};

v1::UpdateRequest ToRequest(const Message& m) {
  v1::UpdateRequest request;
  for (size_t i = m.begin; i < m.begin + m.count; ++i) {
    v1::LabeledSample* sample = request.add_samples();
    sample->mutable_sample()->set_pixels(fixture->updates.image(i),
                                         fixture->updates.image_size());
    sample->set_label(fixture->updates.labels[i]);
  }
  return request;
}

// A message's contribution to G (lower triangle, full matrix) and Q (columns in `labels` order).
struct Contribution {
  model::MatrixD gram;
  model::MatrixD cross;
};

Contribution ContributionOf(const Message& m, const std::vector<std::string>& labels) {
  const model::LowerTier& lower = fixture->bundle->lower;
  // One Features call per message, as the server does (messages are at most kMaxBatch samples).
  const model::MatrixD h = lower.Features(ToMatrix(fixture->updates, m.begin, m.begin + m.count))
                               .cast<double>();
  Contribution c{h.transpose() * h, model::MatrixD::Zero(h.cols(), labels.size())};
  for (size_t i = 0; i < m.count; ++i) {
    const auto it = std::find(labels.begin(), labels.end(), fixture->updates.labels[m.begin + i]);
    c.cross.col(it - labels.begin()) += h.row(i).transpose();
  }
  return c;
}

double MaxAbs(const model::MatrixD& m) { return m.cwiseAbs().maxCoeff(); }

class DurabilityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fixture == nullptr) BuildFixture();
  }
  static void TearDownTestSuite() {
    // STRATA_KEEP_TEST_DIR=1 keeps the state directories and server logs for inspection.
    if (fixture != nullptr && getenv("STRATA_KEEP_TEST_DIR") == nullptr) {
      std::filesystem::remove_all(fixture->dir);
    }
    delete fixture;
    fixture = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fixture, nullptr) << "building the test model failed";
    static int count = 0;
    state_dir_ = absl::StrCat(fixture->dir, "/state.", count);
    log_path_ = absl::StrCat(fixture->dir, "/server.", count++, ".log");
  }

  // Streams `messages` as one Update; true if the summary arrived (acknowledged).
  static bool Stream(client::Client& client, const std::vector<Message>& messages) {
    std::vector<v1::UpdateRequest> requests;
    for (const Message& m : messages) requests.push_back(ToRequest(m));
    absl::StatusOr<v1::UpdateSummary> summary = client.Update(requests);
    if (!summary.ok()) return false;
    size_t total = 0;
    for (const Message& m : messages) total += m.count;
    EXPECT_EQ(summary->accepted(), total);
    return true;
  }

  std::string state_dir_;
  std::string log_path_;
};

// ---- the crash test --------------------------------------------------------------------------

// Sanitizer builds (scripts/sanitize.sh) run the server several times slower; the kills wait
// proportionally longer so that streams still get acknowledged between them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kSlowdown = 8;
#else
constexpr int kSlowdown = 1;
#endif

TEST_F(DurabilityTest, AcknowledgedUpdatesSurviveSigkillAndNothingIsHalfApplied) {
  const int kRounds = getenv("STRATA_CRASH_ROUNDS") ? atoi(getenv("STRATA_CRASH_ROUNDS")) : 24;
  constexpr int kClients = 3;
  const std::vector<std::string> server_args = {"--snapshot_every_samples=700",
                                                "--log_segment_bytes=40000"};
  std::mt19937_64 rng(20240607);
  std::vector<Message> acked, unacked;
  size_t next_image = 0;
  absl::Mutex mu;  // guards next_image, acked, unacked across client threads
  int kills_during_streams = 0;

  for (int round = 0; round < kRounds; ++round) {
    std::unique_ptr<ServerProcess> server = ServerProcess::Start(state_dir_, log_path_, server_args);
    ASSERT_NE(server, nullptr) << "round " << round << ": server did not start; log:\n"
                               << ReadText(log_path_);
    std::atomic<bool> stop{false};
    std::atomic<int> in_flight{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c, seed = rng()] {
        std::mt19937_64 local(seed);
        client::ClientOptions options;
        options.timeout = absl::Seconds(30);
        client::Client client(server->address(), options);
        while (!stop) {
          std::vector<Message> stream;
          {
            absl::MutexLock lock(&mu);
            const int messages = 1 + static_cast<int>(local() % 4);
            for (int i = 0; i < messages; ++i) {
              const size_t count = 1 + local() % 24;
              if (next_image + count > fixture->updates.size()) break;
              stream.push_back({next_image, count});
              next_image += count;
            }
          }
          if (stream.empty()) break;
          ++in_flight;
          const bool ok = Stream(client, stream);
          --in_flight;
          absl::MutexLock lock(&mu);
          (ok ? acked : unacked).insert((ok ? acked : unacked).end(), stream.begin(),
                                        stream.end());
          if (!ok) break;  // the server is gone
          if (c == 0 && local() % 8 == 0) {
            absl::StatusOr<v1::SnapshotInfo> snapshot = server->Snapshot();
            (void)snapshot;  // may fail if the kill lands meanwhile
          }
        }
      });
    }
    absl::SleepFor(kSlowdown * absl::Milliseconds(50 + static_cast<int>(rng() % 600)));
    if (in_flight > 0) ++kills_during_streams;
    server->Kill();
    stop = true;
    for (std::thread& t : clients) t.join();
  }

  // Recover once more and have the server write its statistics down.
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(state_dir_, log_path_, server_args);
  ASSERT_NE(server, nullptr) << ReadText(log_path_);
  absl::StatusOr<v1::SnapshotInfo> info = server->Snapshot();
  ASSERT_TRUE(info.ok()) << info.status();
  absl::StatusOr<update::UpperTierSnapshot> snapshot =
      update::ReadSnapshot(update::Env::Default(), info->path());
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  const model::UpperTier& recovered = snapshot->upper;
  const std::vector<std::string>& labels = recovered.labels();
  ASSERT_EQ(labels, fixture->bundle->upper.labels());  // Fashion-MNIST's 10 classes, no more

  // Expected: bundle + acknowledged messages.
  const model::UpperTier& base = fixture->bundle->upper;
  model::MatrixD gram = base.gram().selfadjointView<Eigen::Lower>();
  model::MatrixD cross = base.cross();
  uint64_t samples = base.samples_seen();
  for (const Message& m : acked) {
    Contribution c = ContributionOf(m, labels);
    gram += c.gram;
    cross += c.cross;
    samples += m.count;
  }
  // Which unacknowledged messages landed: least squares of the Q residual on their contributions.
  const model::MatrixD residual = recovered.cross() - cross;
  std::vector<Contribution> maybe;
  model::MatrixD basis(residual.size(), unacked.size());
  for (size_t u = 0; u < unacked.size(); ++u) {
    maybe.push_back(ContributionOf(unacked[u], labels));
    basis.col(u) = Eigen::Map<const Eigen::VectorXd>(maybe.back().cross.data(), residual.size());
  }
  Eigen::VectorXd coefficients = Eigen::VectorXd::Zero(unacked.size());
  if (!unacked.empty()) {
    coefficients = basis.colPivHouseholderQr().solve(
        Eigen::Map<const Eigen::VectorXd>(residual.data(), residual.size()));
  }
  int landed = 0;
  for (size_t u = 0; u < unacked.size(); ++u) {
    const double c = coefficients[u];
    ASSERT_TRUE(std::abs(c) < 1e-6 || std::abs(c - 1) < 1e-6)
        << "unacknowledged message " << u << " (" << unacked[u].count
        << " samples) applied with weight " << c << ": half-applied";
    if (std::abs(c - 1) < 1e-6) {
      gram += maybe[u].gram;
      cross += maybe[u].cross;
      samples += unacked[u].count;
      ++landed;
    }
  }
  const model::MatrixD recovered_gram = recovered.gram().selfadjointView<Eigen::Lower>();
  const double gram_error = MaxAbs(recovered_gram - gram) / MaxAbs(gram);
  const double cross_error = MaxAbs(recovered.cross() - cross) / MaxAbs(cross);
  EXPECT_LE(gram_error, 1e-9);
  EXPECT_LE(cross_error, 1e-9);
  EXPECT_EQ(recovered.samples_seen(), samples);

  size_t acked_samples = 0;
  for (const Message& m : acked) acked_samples += m.count;
  const std::string log = ReadText(log_path_);
  size_t cuts = 0;
  for (size_t at = log.find("cut the torn tail"); at != std::string::npos;
       at = log.find("cut the torn tail", at + 1)) {
    ++cuts;
  }
  std::printf(
      "crash test: %d SIGKILL rounds (%d during streams), %zu acknowledged messages / %zu "
      "samples all recovered; %zu unacknowledged messages, %d landed whole, none partly; torn "
      "tails cut: %zu; G rel. error %.2e, Q rel. error %.2e\n",
      kRounds, kills_during_streams, acked.size(), acked_samples, unacked.size(), landed, cuts,
      gram_error, cross_error);
  EXPECT_GT(acked.size(), 0u);
}

// ---- corruption ------------------------------------------------------------------------------

// The segment files of the state directory, oldest first, with the number of bytes each holds.
std::vector<std::string> Segments(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (update::ParseSegmentFileName(entry.path().filename().string())) {
      names.push_back(entry.path().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

void FlipByte(const std::string& path, size_t offset) {
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  ASSERT_TRUE(contents.ok());
  ASSERT_LT(offset, contents->size());
  (*contents)[offset] ^= 0x20;
  ASSERT_TRUE(base::WriteFileAtomically(path, *contents).ok());
}

TEST_F(DurabilityTest, TornTailIsCutAndLoggedAndTheServerStarts) {
  const std::vector<std::string> args = {"--snapshot_every_samples=0"};
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(state_dir_, log_path_, args);
  ASSERT_NE(server, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Stream(server->client(), {{size_t(i) * 10, 10}}));
  server->Kill();
  const std::string newest = Segments(state_dir_).back();
  const uintmax_t size = std::filesystem::file_size(newest);
  std::filesystem::resize_file(newest, size - 5);

  server = ServerProcess::Start(state_dir_, log_path_, args);
  ASSERT_NE(server, nullptr) << ReadText(log_path_);
  const std::string log = ReadText(log_path_);
  EXPECT_THAT(log, HasSubstr(absl::StrCat("cut the torn tail of the update log: ", newest)));
  EXPECT_THAT(log, HasSubstr("bytes dropped"));
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok());
  // The torn (last) message is gone, the two before it are there.
  EXPECT_EQ(info->samples_seen(), fixture->bundle->upper.samples_seen() + 20);
}

TEST_F(DurabilityTest, FlippedByteInTheLogRefusesToStartNamingFileAndOffset) {
  const std::vector<std::string> args = {"--snapshot_every_samples=0"};
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(state_dir_, log_path_, args);
  ASSERT_NE(server, nullptr);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Stream(server->client(), {{size_t(i) * 10, 10}}));
  server->Kill();
  const std::string segment = Segments(state_dir_).back();
  // Inside the second record's payload: whole records follow, so this is no torn tail.
  absl::StatusOr<std::string> contents = base::ReadFile(segment);
  ASSERT_TRUE(contents.ok());
  uint32_t first_length = 0;
  std::memcpy(&first_length, contents->data() + update::kSegmentHeaderBytes + 4, 4);
  const size_t second = update::kSegmentHeaderBytes + update::kRecordHeaderBytes + first_length;
  FlipByte(segment, second + 100);

  int status = 0;
  server = ServerProcess::Start(state_dir_, log_path_, args, &status);
  ASSERT_EQ(server, nullptr) << "the server started on a corrupt log";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string log = ReadText(log_path_);
  EXPECT_THAT(log, HasSubstr(absl::StrCat(segment, ": offset ", second)));
  EXPECT_THAT(log, HasSubstr("refusing to start"));
}

TEST_F(DurabilityTest, DamagedSnapshotsFallBackWhileTheLogAllowsItElseRefuse) {
  const std::vector<std::string> args = {"--snapshot_every_samples=0", "--log_segment_bytes=4096"};
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(state_dir_, log_path_, args);
  ASSERT_NE(server, nullptr);
  size_t next = 0;
  auto stream = [&](int messages) {
    for (int i = 0; i < messages; ++i, next += 10) {
      ASSERT_TRUE(Stream(server->client(), {{next, 10}}));
    }
  };
  stream(3);
  absl::StatusOr<v1::SnapshotInfo> older = server->Snapshot();
  ASSERT_TRUE(older.ok()) << older.status();
  stream(3);
  absl::StatusOr<v1::SnapshotInfo> newer = server->Snapshot();
  ASSERT_TRUE(newer.ok()) << newer.status();
  EXPECT_EQ(newer->log_position(), 6u);
  stream(2);
  server->Kill();
  const uint64_t expected_samples = fixture->bundle->upper.samples_seen() + next;

  // The newest snapshot damaged: start from the older one and replay the log after it.
  FlipByte(newer->path(), newer->bytes() / 2);
  server = ServerProcess::Start(state_dir_, log_path_, args);
  ASSERT_NE(server, nullptr) << ReadText(log_path_);
  EXPECT_THAT(ReadText(log_path_), HasSubstr(absl::StrCat("skipping damaged snapshot: snapshot ",
                                                          newer->path())));
  // Quarantined, so that later snapshots cannot prune the intact older one in its favour.
  EXPECT_FALSE(std::filesystem::exists(newer->path()));
  EXPECT_TRUE(std::filesystem::exists(newer->path() + ".damaged"));
  EXPECT_TRUE(std::filesystem::exists(older->path()));
  absl::StatusOr<v1::ModelInfo> info = server->client().GetModelInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->samples_seen(), expected_samples);
  server->Kill();

  // Both damaged: the bundle would need the log from record 1, which the segments deleted after the
  // second snapshot no longer hold: refuse, naming what is missing.
  FlipByte(older->path(), older->bytes() / 2);
  int status = 0;
  server = ServerProcess::Start(state_dir_, log_path_, args, &status);
  ASSERT_EQ(server, nullptr) << "the server started without the records it needs";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  const std::string log = ReadText(log_path_);
  EXPECT_THAT(log, HasSubstr("records from 1 are needed"));
  EXPECT_THAT(log, HasSubstr("refusing to start"));
}

}  // namespace
}  // namespace strata
