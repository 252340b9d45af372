// Files that several test processes of one ctest run need and that are expensive to make (a model
// fitted on Fashion-MNIST): made once per run and copied to each test that asks.
//
// ctest runs every GoogleTest test in a process of its own, so a suite's shared fixture is rebuilt
// for each of its tests; under the sanitizers the fits alone took minutes of CI. The tests get
// STRATA_TEST_SHARED_DIR (tests/CMakeLists.txt), a directory the fixture test
// `shared_test_files_reset` empties at the start of every ctest run, so a file there was made by
// this run's code. Without the variable (a test binary run by hand) every call makes its own file.
#ifndef STRATA_TESTS_SHARED_FILE_H_
#define STRATA_TESTS_SHARED_FILE_H_

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace strata::test {

// Writes `path` as `make(path)` would. With STRATA_TEST_SHARED_DIR set, the file is made once
// under the name `key` in that directory (by the first process to ask; the others wait for it
// under a lock) and copied to `path`. `key` must name what `make` writes: the same key, the same
// bytes. A failed `make` leaves nothing behind and its status is returned.
absl::Status MakeShared(absl::string_view key, const std::string& path,
                        absl::FunctionRef<absl::Status(const std::string& path)> make);

}  // namespace strata::test

#endif  // STRATA_TESTS_SHARED_FILE_H_
