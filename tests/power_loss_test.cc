// Power loss and kills against the durable path, in-process, on the fault-injecting Env
// (tests/fault_injection_env.h):
//
// FaultInjectionEnvTest: the simulation itself drops what was not fsync'd (and keeps what was), so
// that the tests below cannot pass by accident.
// StaleTemporaryFileTest: a kill during a snapshot write leaves snapshot-P.snap.tmp; recovery
// removes it (and nothing that is not the server's).
// PowerLossTest: a real StrataService (in-process gRPC server, UpdateLog, automatic snapshots,
// small segments) takes Update streams; the disk "crashes" after every possible number of file
// system operations, power is lost (unsynced data dropped), and Recover() must bring back every
// acknowledged sample exactly once and no record half-applied; then the service goes on on the
// same directory and is crashed again.
#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/lower_tier_extractor.h"
#include "model/upper_tier.h"
#include "server/service.h"
#include "strata/v1/strata.grpc.pb.h"
#include "tests/fault_injection_env.h"
#include "tests/model_test_util.h"
#include "update/model_store.h"
#include "update/recovery.h"
#include "update/snapshot.h"
#include "update/update_log.h"
#include "update/update_record.h"

namespace strata::server {
namespace {

using ::testing::HasSubstr;
using update::FaultInjectionEnv;

std::string MakeTempDir(const char* name) {
  std::string dir_template = absl::StrCat("/tmp/", name, ".XXXXXX");
  EXPECT_NE(mkdtemp(dir_template.data()), nullptr);
  return dir_template;
}

std::string Contents(const std::string& path) {
  absl::StatusOr<std::string> contents = base::ReadFile(path);
  return contents.ok() ? *contents : std::string("<missing>");
}

// ---- the simulation itself -----------------------------------------------------------------

class FaultInjectionEnvTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("strata_fault_env_test"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<update::WritableFile> Open(const std::string& name) {
    absl::StatusOr<std::unique_ptr<update::WritableFile>> file =
        env_.OpenAppendable(Path(name), false);
    EXPECT_TRUE(file.ok()) << file.status();
    return file.ok() ? *std::move(file) : nullptr;
  }
  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }
  bool Exists(const std::string& name) const { return std::filesystem::exists(Path(name)); }

  FaultInjectionEnv env_;
  std::string dir_;
};

TEST_F(FaultInjectionEnvTest, PowerLossDropsUnsyncedAppendsAndKeepsSyncedOnes) {
  std::unique_ptr<update::WritableFile> file = Open("a");
  ASSERT_TRUE(env_.SyncDirectory(dir_).ok());
  ASSERT_TRUE(file->Append("synced").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(file->Append("-lost").ok());
  EXPECT_EQ(Contents(Path("a")), "synced-lost");  // a kill (no power loss) keeps everything
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("a")), "synced");
}

TEST_F(FaultInjectionEnvTest, SkippedFsyncsMakeNothingDurable) {
  env_.skip_file_syncs = true;  // a writer that "forgot" its fsync
  std::unique_ptr<update::WritableFile> file = Open("a");
  ASSERT_TRUE(env_.SyncDirectory(dir_).ok());
  ASSERT_TRUE(file->Append("acknowledged?").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("a")), "");
}

TEST_F(FaultInjectionEnvTest, AnUnsyncedCreateVanishesEvenWithItsDataSynced) {
  std::unique_ptr<update::WritableFile> file = Open("new");
  ASSERT_TRUE(file->Append("data").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_FALSE(Exists("new"));

  file = Open("kept");
  ASSERT_TRUE(file->Append("data").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(env_.SyncDirectory(dir_ + "/").ok());  // any spelling of the directory
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("kept")), "data");
}

TEST_F(FaultInjectionEnvTest, UnsyncedDeletesAndRenamesAreUndone) {
  ASSERT_TRUE(env_.WriteFileAtomically(Path("f"), "old").ok());
  ASSERT_TRUE(env_.DeleteFile(Path("f")).ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("f")), "old");

  // A replacement whose directory fsync never happened: the old file comes back, no tmp is left.
  env_.CrashAfter(4);  // create tmp, write, fsync, rename; the directory fsync crashes
  EXPECT_FALSE(env_.WriteFileAtomically(Path("f"), "new").ok());
  EXPECT_TRUE(env_.crashed());
  EXPECT_EQ(Contents(Path("f")), "new");  // what a kill would leave
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("f")), "old");
  EXPECT_FALSE(Exists("f.tmp"));
  ASSERT_TRUE(env_.WriteFileAtomically(Path("f"), "new").ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("f")), "new");
}

TEST_F(FaultInjectionEnvTest, ACrashTearsThatWriteAndFreezesTheDisk) {
  std::unique_ptr<update::WritableFile> file = Open("a");  // operation 1
  env_.CrashAfter(1);
  ASSERT_TRUE(file->Append("0123").ok());
  absl::Status torn = file->Append("456789");
  EXPECT_THAT(torn.message(), HasSubstr("injected crash"));
  EXPECT_EQ(Contents(Path("a")), "0123456");  // half of the crashing write
  EXPECT_FALSE(file->Append("x").ok());
  EXPECT_FALSE(file->Sync().ok());
  EXPECT_FALSE(env_.SyncDirectory(dir_).ok());
  EXPECT_FALSE(env_.DeleteFile(Path("a")).ok());
  EXPECT_EQ(Contents(Path("a")), "0123456");
  EXPECT_EQ(env_.operations(), 3);
  EXPECT_THAT(env_.crashed_operation(), HasSubstr("write"));
  ASSERT_TRUE(env_.DropUnsyncedData().ok());  // nothing was synced, not even the create
  EXPECT_FALSE(Exists("a"));
  EXPECT_FALSE(env_.crashed());
}

TEST_F(FaultInjectionEnvTest, InjectedWriteAndSyncFailuresChangeNothing) {
  std::unique_ptr<update::WritableFile> file = Open("a");
  env_.fail_writes = true;
  EXPECT_THAT(file->Append("x").message(), HasSubstr("injected"));
  EXPECT_FALSE(env_.WriteFileAtomically(Path("b"), "x").ok());
  EXPECT_FALSE(Exists("b.tmp"));
  env_.fail_writes = false;
  env_.fail_sync = true;
  EXPECT_THAT(file->Sync().message(), HasSubstr("injected"));
  EXPECT_THAT(env_.SyncDirectory(dir_).message(), HasSubstr("injected"));
  EXPECT_EQ(Contents(Path("a")), "");
}

// ---- a small model and the durable service around it ----------------------------------------

constexpr int kHeight = 10, kWidth = 8, kInput = kHeight * kWidth;
constexpr int kMaxBatch = 2;  // so that 3-sample messages are absorbed in two chunks

class Model {
 public:
  static Model& Get() {
    static Model* const model = new Model;
    return *model;
  }
  const std::string& bundle_path() const { return bundle_path_; }
  model::Bundle Read() const {
    absl::StatusOr<model::Bundle> bundle = model::ReadBundle(bundle_path_);
    EXPECT_TRUE(bundle.ok()) << bundle.status();
    return *std::move(bundle);
  }

 private:
  Model() {
    dir_ = MakeTempDir("strata_power_loss_model");
    bundle_path_ = dir_ + "/model.bundle";
    const model::MatrixF images = model::MakeImages(60, kHeight, kWidth);
    absl::StatusOr<model::LowerTier> lower =
        model::LowerTier::Fit(model::SmallArchitecture(), images);
    EXPECT_TRUE(lower.ok()) << lower.status();
    model::UpperTier upper(lower->feature_size(), /*lambda=*/1.0);
    std::vector<std::string> labels;
    for (int i = 0; i < images.rows(); ++i) labels.push_back(absl::StrCat("c", i % 3));
    EXPECT_TRUE(upper.AbsorbLabeled(lower->Features(images), labels).ok());
    model::Bundle bundle{std::make_shared<const model::LowerTier>(*std::move(lower)),
                         std::move(upper), 1};
    EXPECT_TRUE(model::WriteBundle(bundle, bundle_path_).ok());
  }
  std::string dir_, bundle_path_;
};

// Update message number `id` (from 1): 1 to 3 samples of distinct pixels, one of which may carry a
// label no earlier message used (a new class).
struct Message {
  std::vector<std::string> labels;
  std::vector<std::string> pixels;
};
Message MakeMessage(int id) {
  std::mt19937 random(static_cast<uint32_t>(id));
  Message message;
  const int count = 1 + id % 3;
  for (int i = 0; i < count; ++i) {
    message.labels.push_back(id % 7 == 0 && i == 0 ? absl::StrCat("new", id)
                                                   : absl::StrCat("c", (id + i) % 3));
    std::string pixels(kInput, '\0');
    for (char& p : pixels) p = static_cast<char>(random() & 0xff);
    message.pixels.push_back(std::move(pixels));
  }
  return message;
}

// What the statistics must be after messages `ids` (in log order): the bundle's plus each
// message absorbed exactly as replay does, independently of the service, log and snapshots.
model::UpperTier Reference(const std::vector<int>& ids) {
  model::Bundle bundle = Model::Get().Read();
  for (int id : ids) {
    const Message message = MakeMessage(id);
    update::UpdateRecordBuilder builder(kInput);
    for (size_t i = 0; i < message.labels.size(); ++i) {
      builder.AddPixels(message.labels[i], message.pixels[i]);
    }
    absl::StatusOr<update::UpdateRecord> record =
        update::DecodeUpdateRecord(builder.Finish(), kInput);
    EXPECT_TRUE(record.ok());
    EXPECT_TRUE(update::AbsorbUpdateRecord(model::FloatLowerTierExtractor(bundle.lower), *record,
                                           kMaxBatch, bundle.upper)
                    .ok());
  }
  return std::move(bundle.upper);
}

double RelativeDifference(const model::MatrixD& a, const model::MatrixD& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return 1e300;
  return (a - b).norm() / std::max(1e-300, b.norm());
}

// "" if `recovered` holds exactly the statistics of messages `ids`, else what differs.
std::string CompareStatistics(const model::UpperTier& recovered, const std::vector<int>& ids) {
  const model::UpperTier expected = Reference(ids);
  if (recovered.samples_seen() != expected.samples_seen()) {
    return absl::StrCat("samples seen ", recovered.samples_seen(), ", expected ",
                        expected.samples_seen());
  }
  if (recovered.labels() != expected.labels()) return "the class labels differ";
  const model::MatrixD g1 = recovered.gram().selfadjointView<Eigen::Lower>();
  const model::MatrixD g2 = expected.gram().selfadjointView<Eigen::Lower>();
  const double dg = RelativeDifference(g1, g2);
  const double dq = RelativeDifference(recovered.cross(), expected.cross());
  if (dg > 1e-12 || dq > 1e-12) return absl::StrCat("G differs by ", dg, ", Q by ", dq);
  return "";
}

// One life of the server on a state directory: Recover() + FileUpdateLog::Open() + StrataService with
// durability, behind an in-process gRPC server, as strata-server's main() wires them.
class Life {
 public:
  struct Options {
    uint64_t segment_bytes = 700;  // two or three records per segment: frequent rolls
    uint64_t snapshot_every_samples = 7;
  };

  // Recovers `dir` with `env`. On failure status() says why and nothing else is started.
  Life(FaultInjectionEnv* env, const std::string& dir, Options options) {
    model::Bundle bundle = Model::Get().Read();
    absl::StatusOr<update::RecoveryReport> report =
        update::Recover(env, dir, kMaxBatch, model::FloatLowerTierExtractor(bundle.lower), &bundle);
    if (!report.ok()) {
      status_ = report.status();
      return;
    }
    report_ = *std::move(report);
    recovered_.emplace(bundle.upper);
    ServiceOptions service_options;
    service_options.max_batch = kMaxBatch;
    service_options.inference_threads = 1;
    service_ = std::make_unique<StrataService>(&store_, service_options);
    grpc::ServerBuilder builder;
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    update::UpdateLogOptions log_options;
    log_options.segment_bytes = options.segment_bytes;
    absl::StatusOr<std::unique_ptr<update::FileUpdateLog>> log =
        update::FileUpdateLog::Open(env, dir, report_.log_position + 1, log_options);
    if (log.ok()) {
      log_ = *std::move(log);
      Durability durability;
      durability.log = log_.get();
      durability.env = env;
      durability.state_dir = dir;
      durability.snapshot_every_samples = options.snapshot_every_samples;
      service_->EnableDurability(std::move(durability));
    } else {
      open_status_ = log.status();  // a crash while starting the new segment: serve nothing
      return;
    }
    status_ = store_.Load(std::move(bundle), nullptr, report_.versions.get());
    stub_ = v1::Strata::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }

  ~Life() {
    if (server_ != nullptr) {
      server_->Shutdown();
      service_->Drain();
      server_->Wait();
    }
  }

  const absl::Status& status() const { return status_; }
  const absl::Status& open_status() const { return open_status_; }
  const update::RecoveryReport& report() const { return report_; }
  const model::UpperTier& recovered() const { return *recovered_; }
  bool serving() const { return status_.ok() && open_status_.ok(); }

  // One Update stream with messages `ids`; true if its UpdateSummary came back OK (acknowledged).
  bool Update(const std::vector<int>& ids) {
    grpc::ClientContext context;
    v1::UpdateSummary summary;
    std::unique_ptr<grpc::ClientWriter<v1::UpdateRequest>> writer =
        stub_->Update(&context, &summary);
    for (int id : ids) {
      const Message message = MakeMessage(id);
      v1::UpdateRequest request;
      for (size_t i = 0; i < message.labels.size(); ++i) {
        v1::LabeledSample* sample = request.add_samples();
        sample->set_label(message.labels[i]);
        sample->mutable_sample()->set_pixels(message.pixels[i]);
      }
      if (!writer->Write(request)) break;
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    return status.ok();
  }

  bool Snapshot() {
    grpc::ClientContext context;
    v1::SnapshotRequest request;
    v1::SnapshotInfo info;
    return stub_->Snapshot(&context, request, &info).ok();
  }

 private:
  absl::Status status_, open_status_;
  update::RecoveryReport report_;
  std::optional<model::UpperTier> recovered_;
  update::ModelStore store_;
  std::unique_ptr<StrataService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<update::FileUpdateLog> log_;
  std::unique_ptr<v1::Strata::Stub> stub_;
};

// ---- kills: the stale temporary file -----------------------------------------------------------

TEST(StaleTemporaryFileTest, AKillDuringASnapshotWriteLeavesATmpThatRecoveryRemoves) {
  const std::string dir = MakeTempDir("strata_stale_tmp_test");
  FaultInjectionEnv env;
  model::Bundle bundle = Model::Get().Read();
  ASSERT_TRUE(update::WriteSnapshot(&env, dir, 1, 0, bundle.upper).ok());
  // The next snapshot's write is killed after its tmp file was written (before the fsync): no
  // power loss, so the kernel keeps the whole tmp file.
  env.CrashAfter(2);
  ASSERT_FALSE(update::WriteSnapshot(&env, dir, 1, 5, bundle.upper).ok());
  const std::string tmp = dir + "/" + update::SnapshotFileName(5) + ".tmp";
  ASSERT_TRUE(std::filesystem::exists(tmp));
  EXPECT_EQ(std::filesystem::file_size(tmp),  // the whole snapshot
            std::filesystem::file_size(dir + "/" + update::SnapshotFileName(0)));
  // And one from moving a damaged snapshot aside; and a file that is not the server's.
  const std::string damaged_tmp = dir + "/" + update::SnapshotFileName(3) + ".damaged.tmp";
  ASSERT_TRUE(base::WriteFileAtomically(damaged_tmp + ".x", "x").ok());
  std::filesystem::rename(damaged_tmp + ".x", damaged_tmp);
  ASSERT_TRUE(base::WriteFileAtomically(dir + "/notes.tmp", "mine").ok());

  absl::StatusOr<update::RecoveryReport> report =
      update::Recover(update::Env::Default(), dir, kMaxBatch,
                      model::FloatLowerTierExtractor(bundle.lower), &bundle);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->temporary_files_removed, (std::vector<std::string>{damaged_tmp, tmp}));
  EXPECT_FALSE(std::filesystem::exists(tmp));
  EXPECT_FALSE(std::filesystem::exists(damaged_tmp));
  EXPECT_TRUE(std::filesystem::exists(dir + "/notes.tmp"));
  EXPECT_EQ(report->snapshot_path, dir + "/" + update::SnapshotFileName(0));
  std::filesystem::remove_all(dir);
}

// ---- power loss at every point of the durable path -------------------------------------------

// The workload of one life: Update streams of two messages each (ids from `first`), a Snapshot RPC
// in the middle; automatic snapshots and segment rolls happen on the way. Returns the ids of
// acknowledged messages and of all messages sent, in order.
struct Sent {
  std::vector<int> all, acknowledged;
};
Sent RunWorkload(Life& life, int first, int streams) {
  Sent sent;
  int id = first;
  for (int s = 0; s < streams; ++s) {
    const std::vector<int> ids = {id, id + 1};
    id += 2;
    sent.all.insert(sent.all.end(), ids.begin(), ids.end());
    if (!life.Update(ids)) break;  // the disk crashed: nothing more will be acknowledged
    sent.acknowledged.insert(sent.acknowledged.end(), ids.begin(), ids.end());
    if (s == streams / 2 && !life.Snapshot()) break;
  }
  return sent;
}

// After a power loss: recovers `dir` and checks it against what was sent. `landed` (the messages
// in the log, in order) is extended by the messages of this life that recovery found. Returns ""
// or what is wrong.
std::string RecoverAndCheck(FaultInjectionEnv& env, const std::string& dir, const Sent& sent,
                            std::vector<int>& landed, std::unique_ptr<Life>& next) {
  next = std::make_unique<Life>(&env, dir, Life::Options{});
  if (!next->status().ok()) return absl::StrCat("recovery failed: ", next->status().ToString());
  const uint64_t position = next->report().log_position;
  // Records are numbered 1, 2, ... across lives, one per message, in the order sent (one client
  // thread), so the log holds the earlier lives' messages and then a prefix of this life's.
  if (position < landed.size()) {
    return absl::StrCat("log position ", position, " below the ", landed.size(),
                        " records recovered before: recovered data was lost");
  }
  const size_t mine = position - landed.size();
  if (mine > sent.all.size()) {
    return absl::StrCat("log position ", position, ": more records than messages sent");
  }
  if (mine < sent.acknowledged.size()) {
    return absl::StrCat("only ", mine, " of this life's ", sent.acknowledged.size(),
                        " acknowledged messages recovered (log position ", position, ")");
  }
  landed.insert(landed.end(), sent.all.begin(), sent.all.begin() + static_cast<long>(mine));
  if (std::string diff = CompareStatistics(next->recovered(), landed); !diff.empty()) {
    return absl::StrCat("recovered statistics are not those of the ", landed.size(),
                        " messages in the log exactly once: ", diff);
  }
  absl::StatusOr<std::vector<std::string>> names = update::Env::Default()->ListDirectory(dir);
  if (!names.ok()) return names.status().ToString();
  for (const std::string& name : *names) {
    if (absl::EndsWith(name, ".tmp")) return absl::StrCat("a stale ", name, " survived recovery");
  }
  return "";
}

struct Round {
  std::string failure;     // "" if every check held
  std::string crashed_at;  // the operation the crash hit
};

// One round on a fresh directory: life 1 crashes after `crash_after` operations, power is lost,
// life 2 recovers (checked), runs more updates and crashes after `second_crash_after`, power is
// lost, life 3 recovers (checked).
Round RunRound(int64_t crash_after, int64_t second_crash_after, bool skip_file_syncs = false) {
  Round round;
  const std::string dir = MakeTempDir("strata_power_loss_test");
  FaultInjectionEnv env;
  env.skip_file_syncs = skip_file_syncs;
  std::vector<int> landed;
  int next_id = 1;
  for (int64_t crash : {crash_after, second_crash_after}) {
    Sent sent;
    std::unique_ptr<Life> life;
    {
      // The crash may hit start-up too (the new segment of FileUpdateLog::Open).
      env.CrashAfter(crash);
      life = std::make_unique<Life>(&env, dir, Life::Options{});
      if (!life->serving() && !env.crashed()) {
        round.failure = absl::StrCat("start-up failed: ", life->status().ToString(), " ",
                                     life->open_status().ToString());
        break;
      }
      if (life->serving()) sent = RunWorkload(*life, next_id, /*streams=*/6);
      next_id += 100;
      if (round.crashed_at.empty()) round.crashed_at = env.crashed_operation();
      life.reset();  // the process is gone
    }
    if (absl::Status lost = env.DropUnsyncedData(); !lost.ok()) {
      round.failure = lost.ToString();
      break;
    }
    std::unique_ptr<Life> recovered;
    round.failure = RecoverAndCheck(env, dir, sent, landed, recovered);
    if (!round.failure.empty()) break;
  }
  if (round.failure.empty() || getenv("STRATA_KEEP_TEST_DIR") == nullptr) {
    std::filesystem::remove_all(dir);
  } else {
    round.failure += absl::StrCat(" (directory kept: ", dir, ")");
  }
  return round;
}

// The operations one crash-free life performs.
int64_t OperationsOfOneLife() {
  const std::string dir = MakeTempDir("strata_power_loss_count");
  FaultInjectionEnv env;
  int64_t operations = 0;
  {
    Life life(&env, dir, Life::Options{});
    EXPECT_TRUE(life.serving());
    const int64_t before = env.operations();
    const Sent sent = RunWorkload(life, 1, 6);
    EXPECT_EQ(sent.acknowledged.size(), sent.all.size());
    operations = env.operations() - before;
  }
  std::filesystem::remove_all(dir);
  return operations;
}

// "write segment", "rename snapshot tmp", ... for a crashed_operation().
std::string OperationKind(const std::string& operation) {
  if (operation.empty()) return "(no crash: past the last operation)";
  const size_t path = operation.find(" /");
  const std::string what = operation.substr(0, path);
  const std::string file = operation.substr(path + 1);
  const char* kind = absl::EndsWith(file, ".snap.tmp") ? "snapshot tmp"
                     : absl::EndsWith(file, ".snap")   ? "snapshot"
                     : absl::EndsWith(file, ".log")    ? "segment"
                                                       : "state directory";
  return absl::StrCat(what, " ", kind);
}

TEST(PowerLossTest, EveryAcknowledgedSampleSurvivesExactlyOnceWhereverPowerIsLost) {
  const int64_t operations = OperationsOfOneLife();
  ASSERT_GT(operations, 40);
  std::map<std::string, int> crashed_at;  // operation kind -> rounds
  int rounds = 0;
  // Every crash point of the first life (counted from before its FileUpdateLog::Open, which adds a
  // few), and a second crash spread over the second life's.
  for (int64_t crash = 0; crash <= operations + 8; ++crash) {
    const Round round = RunRound(crash, (crash * 37) % (operations + 8));
    ++rounds;
    ASSERT_EQ(round.failure, "") << "crash after " << crash << " operations (at "
                                 << round.crashed_at << ")";
    ++crashed_at[OperationKind(round.crashed_at)];
  }
  std::printf("power loss: %d rounds over %lld operations per life; crashes by operation:\n",
              rounds, static_cast<long long>(operations));
  for (const auto& [kind, count] : crashed_at) std::printf("  %-60s %d\n", kind.c_str(), count);
}

TEST(PowerLossTest, TheCheckCatchesASkippedFsync) {
  // With fsyncs that report OK but make nothing durable, acknowledged updates must be found lost:
  // otherwise the test above could not see a missing fsync in the server.
  const int64_t operations = OperationsOfOneLife();
  int caught = 0;
  for (int64_t crash : {operations / 2, operations - 2}) {
    const Round round = RunRound(crash, crash, /*skip_file_syncs=*/true);
    if (!round.failure.empty()) ++caught;
    std::printf("skipped fsyncs, crash after %lld operations: %s\n", static_cast<long long>(crash),
                round.failure.c_str());
  }
  EXPECT_EQ(caught, 2);
}

}  // namespace
}  // namespace strata::server
