#include "update/state_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace strata::update {
namespace {

absl::Status OsError(absl::string_view what, const std::string& path, int error) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat(what, " ", path, ": ", std::strerror(error)));
}

// The pid the holder wrote into the lock file, for the message ("unknown" if unreadable).
std::string HolderPid(int fd) {
  char buffer[32] = {};
  const ssize_t n = pread(fd, buffer, sizeof(buffer) - 1, 0);
  const std::string pid = n > 0 ? std::string(absl::StripAsciiWhitespace(buffer)) : "";
  return pid.empty() ? "unknown" : pid;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateDirLock>> StateDirLock::Acquire(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return OsError("cannot create the state directory", dir, error.value());
  const std::string path = absl::StrCat(dir, "/LOCK");
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return OsError("cannot open the state directory's lock", path, errno);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int lock_error = errno;
    const std::string holder = HolderPid(fd);
    close(fd);
    if (lock_error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("the state directory ", dir, " is in use by another strata-server (pid ",
                       holder, ", holding ", path, "); one server per --state_dir"));
    }
    return OsError("cannot lock", path, lock_error);
  }
  // For the message a second server prints; the lock itself is the flock, not this content.
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const int write_error = errno;
    close(fd);
    return OsError("cannot write", path, write_error);
  }
  return std::unique_ptr<StateDirLock>(new StateDirLock(path, fd));
}

StateDirLock::~StateDirLock() { close(fd_); }

}  // namespace strata::update
