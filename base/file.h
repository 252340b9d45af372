// Whole-file reads and crash-safe whole-file writes.
#ifndef STRATA_BASE_FILE_H_
#define STRATA_BASE_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::base {

// Reads the whole file. NOT_FOUND if it does not exist; otherwise errors name the path and the
// failing call with errno's text.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` with `contents` so that a crash at any moment leaves either the old file or the
// new one, whole: writes PATH.tmp, fsyncs it, renames it over PATH, fsyncs the directory.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// An absl::Status for a failed system call: "<what> <path>: <strerror(errno)>", with a code chosen
// from errno (ENOENT -> NOT_FOUND, EACCES -> PERMISSION_DENIED, ENOSPC -> RESOURCE_EXHAUSTED, ...).
absl::Status ErrnoStatus(absl::string_view what, absl::string_view path, int err);

}  // namespace strata::base

#endif  // STRATA_BASE_FILE_H_
