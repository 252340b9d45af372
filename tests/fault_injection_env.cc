#include "tests/fault_injection_env.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/file.h"

namespace strata::update {
namespace {

// The key of a directory: the same for "DIR", "DIR/" and the parent of "DIR/NAME".
std::string DirectoryKey(const std::string& dir) {
  std::string key = std::filesystem::path(dir).lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key;
}

std::string DirectoryOf(const std::string& path) {
  return DirectoryKey(std::filesystem::path(path).parent_path().string());
}

absl::Status InjectedError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": injected I/O error"));
}

// Writes `bytes` as the whole of `path` (power-loss bookkeeping: not an Env operation).
absl::Status PutFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("restore ", path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace

class FaultInjectionEnv::File final : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    if (env_->fail_writes) return InjectedError("write", path_);
    bool torn = false;
    absl::Status status = env_->BeginOperation("write", path_, &torn);
    // The crashing write reaches the file only in part, as a kill during write(2) can leave it.
    if (torn) base_->Append(data.substr(0, data.size() / 2)).IgnoreError();
    if (status.ok()) status = base_->Append(data);
    absl::MutexLock lock(&env_->mu_);
    env_->files_[path_].size = base_->Size();
    return status;
  }

  absl::Status Sync() override {
    ++env_->syncs;
    if (env_->fail_sync) return InjectedError("fdatasync", path_);
    if (absl::Status status = env_->BeginOperation("fdatasync", path_); !status.ok()) {
      return status;
    }
    if (env_->skip_file_syncs) return absl::OkStatus();
    uint64_t covered = 0;  // an fsync covers at least what was written before it started
    {
      absl::MutexLock lock(&env_->mu_);
      covered = env_->files_[path_].size;
    }
    absl::Status status = base_->Sync();
    if (status.ok()) {
      absl::MutexLock lock(&env_->mu_);
      FileState& state = env_->files_[path_];
      state.synced = std::max(state.synced, covered);
    }
    return status;
  }

  uint64_t Size() const override { return base_->Size(); }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  const std::unique_ptr<WritableFile> base_;
};

void FaultInjectionEnv::CrashAfter(int64_t operations) {
  absl::MutexLock lock(&mu_);
  crash_at_ = operations < 0 ? -1 : operations_ + operations;
}

bool FaultInjectionEnv::crashed() const {
  absl::MutexLock lock(&mu_);
  return crashed_;
}

std::string FaultInjectionEnv::crashed_operation() const {
  absl::MutexLock lock(&mu_);
  return crashed_operation_;
}

int64_t FaultInjectionEnv::operations() const {
  absl::MutexLock lock(&mu_);
  return operations_;
}

absl::Status FaultInjectionEnv::BeginOperation(absl::string_view what, const std::string& path,
                                               bool* torn) {
  absl::MutexLock lock(&mu_);
  if (crashed_) {
    return absl::UnavailableError(absl::StrCat(
        what, " ", path, ": injected crash happened earlier: the disk no longer changes"));
  }
  if (operations_++ == crash_at_) {
    crashed_ = true;
    crashed_operation_ = absl::StrCat(what, " ", path);
    if (torn != nullptr) *torn = true;
    return absl::UnavailableError(absl::StrCat(what, " ", path, ": injected crash"));
  }
  return absl::OkStatus();
}

std::optional<std::string> FaultInjectionEnv::DurableBytes(const std::string& path) {
  absl::StatusOr<std::string> bytes = base_->ReadFile(path);
  if (!bytes.ok()) return std::nullopt;
  if (auto it = files_.find(path); it != files_.end() && it->second.synced < bytes->size()) {
    bytes->resize(it->second.synced);
  }
  return *std::move(bytes);
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::OpenAppendable(
    const std::string& path, bool truncate) {
  if (absl::Status status = BeginOperation(truncate ? "open (truncate)" : "open", path);
      !status.ok()) {
    return status;
  }
  std::error_code error;
  const bool existed = std::filesystem::exists(path, error);
  absl::StatusOr<std::unique_ptr<WritableFile>> file = base_->OpenAppendable(path, truncate);
  if (!file.ok()) return file.status();
  absl::MutexLock lock(&mu_);
  if (!existed) {
    files_[path] = FileState{};
    unsynced_[DirectoryOf(path)].push_back({EntryChange::kCreate, path, "", std::nullopt});
  } else if (truncate) {
    files_[path] = FileState{};
  } else if (!files_.count(path)) {
    files_[path] = FileState{(*file)->Size(), (*file)->Size()};
  }
  return std::unique_ptr<WritableFile>(new File(this, path, *std::move(file)));
}

absl::StatusOr<std::string> FaultInjectionEnv::ReadFile(const std::string& path) {
  return base_->ReadFile(path);
}

absl::Status FaultInjectionEnv::WriteFileAtomically(const std::string& path,
                                                    absl::string_view contents) {
  ++atomic_writes;
  if (fail_atomic_writes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("write ", path, ".tmp: No space left on device (injected)"));
  }
  const std::string tmp = path + ".tmp";
  absl::Status status = WriteFileAtomicallySteps(path, tmp, contents);
  // As base::WriteFileAtomically: a failed write removes its temporary file; a crashed process
  // removes nothing.
  std::error_code error;
  if (!status.ok() && !crashed() && std::filesystem::exists(tmp, error)) {
    DeleteFile(tmp).IgnoreError();
  }
  return status;
}

absl::Status FaultInjectionEnv::WriteFileAtomicallySteps(const std::string& path,
                                                         const std::string& tmp,
                                                         absl::string_view contents) {
  {
    absl::StatusOr<std::unique_ptr<WritableFile>> file = OpenAppendable(tmp, /*truncate=*/true);
    if (!file.ok()) return file.status();
    if (absl::Status s = (*file)->Append(contents); !s.ok()) return s;
    if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
  }
  if (absl::Status s = BeginOperation("rename", tmp); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    std::optional<std::string> replaced = DurableBytes(path);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      return base::ErrnoStatus("rename to " + path + " from", tmp, errno);
    }
    files_[path] = files_[tmp];
    files_.erase(tmp);
    unsynced_[DirectoryOf(path)].push_back({EntryChange::kRename, path, tmp, std::move(replaced)});
  }
  return SyncDirectory(DirectoryOf(path));
}

absl::StatusOr<std::vector<std::string>> FaultInjectionEnv::ListDirectory(const std::string& dir) {
  return base_->ListDirectory(dir);
}

absl::Status FaultInjectionEnv::CreateDirectories(const std::string& dir) {
  return base_->CreateDirectories(dir);
}

absl::Status FaultInjectionEnv::DeleteFile(const std::string& path) {
  if (absl::Status status = BeginOperation("unlink", path); !status.ok()) return status;
  absl::MutexLock lock(&mu_);
  std::optional<std::string> durable = DurableBytes(path);
  absl::Status status = base_->DeleteFile(path);
  if (!status.ok()) return status;
  files_.erase(path);
  unsynced_[DirectoryOf(path)].push_back({EntryChange::kDelete, path, "", std::move(durable)});
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::Truncate(const std::string& path, uint64_t size) {
  if (fail_writes) return InjectedError("ftruncate", path);
  if (absl::Status status = BeginOperation("ftruncate", path); !status.ok()) return status;
  absl::Status status = base_->Truncate(path, size);  // fsyncs
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  files_[path] = FileState{size, size};
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::SyncDirectory(const std::string& dir) {
  if (fail_sync) return InjectedError("fsync directory", dir);
  if (absl::Status status = BeginOperation("fsync directory", dir); !status.ok()) return status;
  absl::Status status = base_->SyncDirectory(dir);
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  unsynced_.erase(DirectoryKey(dir));
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::DropUnsyncedData() {
  absl::MutexLock lock(&mu_);
  std::error_code error;
  // File data: back to what the last fsync covered.
  for (auto& [path, state] : files_) {
    if (!std::filesystem::exists(path, error)) continue;
    if (std::filesystem::file_size(path, error) > state.synced) {
      std::filesystem::resize_file(path, state.synced, error);
      if (error) return base::ErrnoStatus("truncate (power loss)", path, error.value());
    }
    state.size = state.synced;
  }
  // Directory entries: undo the unsynced changes, newest first.
  for (auto& [dir, changes] : unsynced_) {
    for (auto change = changes.rbegin(); change != changes.rend(); ++change) {
      switch (change->kind) {
        case EntryChange::kCreate:
          std::filesystem::remove(change->path, error);
          files_.erase(change->path);
          break;
        case EntryChange::kRename:
          std::filesystem::rename(change->path, change->from, error);
          if (error) return base::ErrnoStatus("undo rename", change->path, error.value());
          files_[change->from] = files_[change->path];
          files_.erase(change->path);
          if (change->bytes.has_value()) {
            if (absl::Status s = PutFile(change->path, *change->bytes); !s.ok()) return s;
            files_[change->path] = FileState{change->bytes->size(), change->bytes->size()};
          }
          break;
        case EntryChange::kDelete:
          if (change->bytes.has_value()) {
            if (absl::Status s = PutFile(change->path, *change->bytes); !s.ok()) return s;
            files_[change->path] = FileState{change->bytes->size(), change->bytes->size()};
          }
          break;
      }
    }
  }
  unsynced_.clear();
  crashed_ = false;
  crashed_operation_.clear();
  crash_at_ = -1;
  return absl::OkStatus();
}

}  // namespace strata::update
