// Helpers shared by the libFuzzer targets in fuzz/: a per-process scratch directory and a check that
// aborts (so libFuzzer records the input as a crash) when an invariant of the code under test fails.
#ifndef STRATA_FUZZ_FUZZ_UTIL_H_
#define STRATA_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace strata::fuzz {

// Aborts with `what` if `condition` is false. Unlike assert() it is not compiled out by NDEBUG.
#define STRATA_FUZZ_CHECK(condition, what)                                                      \
  do {                                                                                          \
    if (!(condition)) {                                                                         \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: %s\n", __FILE__, __LINE__, #condition, \
                   std::string(what).c_str());                                                  \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)

// A directory private to this process, created on first use and kept for the process's lifetime
// (libFuzzer may run several fuzzer processes at once with -jobs/-fork, and ctest runs the targets
// in parallel, so a fixed path would be shared). Under /dev/shm when it exists: the readers fsync
// what they repair, and tmpfs makes that free, which keeps the fuzzers fast.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string pattern =
        std::string(base) + "/strata-fuzz-" + std::to_string(getpid()) + "-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    // Removed at exit; a crash leaves it behind, which is harmless (the name is per-process).
    static std::string cleanup_path;
    cleanup_path = pattern;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(cleanup_path, ignored);
    });
    return pattern;
  }();
  return dir;
}

}  // namespace strata::fuzz

#endif  // STRATA_FUZZ_FUZZ_UTIL_H_
