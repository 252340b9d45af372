// Power loss and kills against the durable path, in-process, on the fault-injecting Env
// (tests/fault_injection_env.h):
//
// FaultInjectionEnvTest: the simulation itself drops what was not fsync'd (and keeps what was), so
// that the tests below cannot pass by accident.
// StaleTemporaryFileTest: a kill during a snapshot write leaves snapshot-P.snap.tmp; recovery
// removes it (and nothing that is not the server's).

#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "model/lower_tier.h"
#include "model/upper_tier.h"
#include "server/model_store.h"
#include "server/recovery.h"
#include "server/service.h"
#include "server/snapshot.h"
#include "server/update_log.h"
#include "server/update_record.h"
#include "strata/v1/strata.grpc.pb.h"
#include "tests/fault_injection_env.h"
#include "tests/model_test_util.h"

namespace strata::server {
namespace {

using ::testing::HasSubstr;

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

  std::unique_ptr<WritableFile> Open(const std::string& name) {
    absl::StatusOr<std::unique_ptr<WritableFile>> file = env_.OpenAppendable(Path(name), false);
    EXPECT_TRUE(file.ok()) << file.status();
    return file.ok() ? *std::move(file) : nullptr;
  }
  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }
  bool Exists(const std::string& name) const { return std::filesystem::exists(Path(name)); }

  FaultInjectionEnv env_;
  std::string dir_;
};

TEST_F(FaultInjectionEnvTest, PowerLossDropsUnsyncedAppendsAndKeepsSyncedOnes) {
  std::unique_ptr<WritableFile> file = Open("a");
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
  std::unique_ptr<WritableFile> file = Open("a");
  ASSERT_TRUE(env_.SyncDirectory(dir_).ok());
  ASSERT_TRUE(file->Append("acknowledged?").ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(env_.DropUnsyncedData().ok());
  EXPECT_EQ(Contents(Path("a")), "");
}

TEST_F(FaultInjectionEnvTest, AnUnsyncedCreateVanishesEvenWithItsDataSynced) {
  std::unique_ptr<WritableFile> file = Open("new");
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
  std::unique_ptr<WritableFile> file = Open("a");  // operation 1
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
  std::unique_ptr<WritableFile> file = Open("a");
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
    absl::StatusOr<model::LowerTier> lower = model::LowerTier::Fit(model::SmallArchitecture(), images);
    EXPECT_TRUE(lower.ok()) << lower.status();
    model::UpperTier upper(lower->feature_size(), /*lambda=*/1.0);
    std::vector<int> classes;
    for (int i = 0; i < images.rows(); ++i) {
      classes.push_back(upper.ClassIndexOrAdd(absl::StrCat("c", i % 3)));
    }
    EXPECT_TRUE(upper.Absorb(lower->Features(images), classes).ok());
    model::Bundle bundle{*std::move(lower), std::move(upper), 1};
    EXPECT_TRUE(model::WriteBundle(bundle, bundle_path_).ok());
  }
  std::string dir_, bundle_path_;
};

// ---- kills: the stale temporary file -----------------------------------------------------------

TEST(StaleTemporaryFileTest, AKillDuringASnapshotWriteLeavesATmpThatRecoveryRemoves) {
  const std::string dir = MakeTempDir("strata_stale_tmp_test");
  FaultInjectionEnv env;
  model::Bundle bundle = Model::Get().Read();
  ASSERT_TRUE(WriteSnapshot(&env, dir, 1, 0, bundle.upper).ok());
  // The next snapshot's write is killed after its tmp file was written (before the fsync): no
  // power loss, so the kernel keeps the whole tmp file.
  env.CrashAfter(2);
  ASSERT_FALSE(WriteSnapshot(&env, dir, 1, 5, bundle.upper).ok());
  const std::string tmp = dir + "/" + SnapshotFileName(5) + ".tmp";
  ASSERT_TRUE(std::filesystem::exists(tmp));
  EXPECT_EQ(std::filesystem::file_size(tmp),  // the whole snapshot
            std::filesystem::file_size(dir + "/" + SnapshotFileName(0)));
  // And one from moving a damaged snapshot aside; and a file that is not the server's.
  const std::string damaged_tmp = dir + "/" + SnapshotFileName(3) + ".damaged.tmp";
  ASSERT_TRUE(base::WriteFileAtomically(damaged_tmp + ".x", "x").ok());
  std::filesystem::rename(damaged_tmp + ".x", damaged_tmp);
  ASSERT_TRUE(base::WriteFileAtomically(dir + "/notes.tmp", "mine").ok());

  absl::StatusOr<RecoveryReport> report = Recover(Env::Default(), dir, kMaxBatch, &bundle);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->temporary_files_removed, (std::vector<std::string>{damaged_tmp, tmp}));
  EXPECT_FALSE(std::filesystem::exists(tmp));
  EXPECT_FALSE(std::filesystem::exists(damaged_tmp));
  EXPECT_TRUE(std::filesystem::exists(dir + "/notes.tmp"));
  EXPECT_EQ(report->snapshot_path, dir + "/" + SnapshotFileName(0));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace strata::server
