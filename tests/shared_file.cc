#include "tests/shared_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace strata::test {
namespace {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::Status MakeShared(absl::string_view key, const std::string& path,
                        absl::FunctionRef<absl::Status(const std::string& path)> make) {
  const char* shared_dir = std::getenv("STRATA_TEST_SHARED_DIR");
  if (shared_dir == nullptr || *shared_dir == '\0') return make(path);

  std::error_code error;
  std::filesystem::create_directories(shared_dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot make ", shared_dir, ": ", error.message()));
  }
  const std::string shared = absl::StrCat(shared_dir, "/", key);
  const std::string lock_path = shared + ".lock";
  const int lock = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) return ErrnoStatus("cannot open", lock_path);
  absl::Cleanup close_lock = [lock] { close(lock); };  // closing releases the lock
  if (flock(lock, LOCK_EX) != 0) return ErrnoStatus("cannot lock", lock_path);

  if (!std::filesystem::exists(shared)) {
    // Made under another name and renamed, so `shared` exists only whole.
    const std::string partial = shared + ".partial";
    absl::Status made = make(partial);
    if (!made.ok()) {
      std::filesystem::remove(partial, error);
      return made;
    }
    if (std::rename(partial.c_str(), shared.c_str()) != 0) {
      return ErrnoStatus("cannot rename to", shared);
    }
  }
  std::filesystem::copy_file(shared, path, std::filesystem::copy_options::overwrite_existing,
                             error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot copy ", shared, " to ", path, ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace strata::test
