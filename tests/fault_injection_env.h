// An Env over the real file system whose writes can be made to fail (LevelDB's
// fault_injection_test): a failed fsync of an appendable file, a failed atomic file write. For the
// unit tests of what the state directory holds (update log, version reservation).
#ifndef STRATA_TESTS_FAULT_INJECTION_ENV_H_
#define STRATA_TESTS_FAULT_INJECTION_ENV_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/env.h"

namespace strata::test {

class FaultInjectionEnv final : public server::Env {
 public:
  // While set, WritableFile::Sync() fails (and is counted in `syncs` either way).
  std::atomic<bool> fail_sync{false};
  std::atomic<int> syncs{0};
  // While set, WriteFileAtomically() fails before touching the file, as when the disk is full
  // (and is counted in `atomic_writes` either way).
  std::atomic<bool> fail_atomic_writes{false};
  std::atomic<int> atomic_writes{0};

  absl::StatusOr<std::unique_ptr<server::WritableFile>> OpenAppendable(const std::string& path,
                                                                       bool truncate) override {
    absl::StatusOr<std::unique_ptr<server::WritableFile>> file =
        Default()->OpenAppendable(path, truncate);
    if (!file.ok()) return file.status();
    return std::unique_ptr<server::WritableFile>(new File(this, *std::move(file)));
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    return Default()->ReadFile(path);
  }
  absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) override {
    ++atomic_writes;
    if (fail_atomic_writes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("write ", path, ".tmp: No space left on device (injected)"));
    }
    return Default()->WriteFileAtomically(path, contents);
  }
  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) override {
    return Default()->ListDirectory(dir);
  }
  absl::Status CreateDirectories(const std::string& dir) override {
    return Default()->CreateDirectories(dir);
  }
  absl::Status DeleteFile(const std::string& path) override { return Default()->DeleteFile(path); }
  absl::Status Truncate(const std::string& path, uint64_t size) override {
    return Default()->Truncate(path, size);
  }
  absl::Status SyncDirectory(const std::string& dir) override {
    return Default()->SyncDirectory(dir);
  }

 private:
  class File final : public server::WritableFile {
   public:
    File(FaultInjectionEnv* env, std::unique_ptr<server::WritableFile> base)
        : env_(env), base_(std::move(base)) {}
    absl::Status Append(absl::string_view data) override { return base_->Append(data); }
    absl::Status Sync() override {
      ++env_->syncs;
      if (env_->fail_sync) return absl::InternalError("fdatasync: injected I/O error");
      return base_->Sync();
    }
    uint64_t Size() const override { return base_->Size(); }

   private:
    FaultInjectionEnv* env_;
    std::unique_ptr<server::WritableFile> base_;
  };
};

}  // namespace strata::test

#endif  // STRATA_TESTS_FAULT_INJECTION_ENV_H_
