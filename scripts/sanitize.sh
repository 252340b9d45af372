#!/usr/bin/env bash
# Sanitizer, fuzzing and clang runs (CI runs this after the main suite; docs/operations.md "Fuzzing
# and sanitizers"). Three build directories beside build/, one CMake preset each (CMakePresets.json):
#
#   build-asan  preset asan: gcc, STRATA_SANITIZE=address,undefined: the whole ctest suite (spawned
#               strata-server processes are ASan/UBSan builds too) but the "deploy" label (the
#               container image is a release build either way). Any report fails the test.
#   build-tsan  preset tsan: gcc, STRATA_SANITIZE=thread: the tests labelled "concurrency"
#               (tests/CMakeLists.txt says which and why).
#   build-fuzz  preset fuzz: clang, STRATA_FUZZ=ON: the three libFuzzer targets, each run by ctest
#               for STRATA_FUZZ_SECONDS (default 20) on a copy of its corpus in fuzz/corpus/; and
#               strata-server, strata-train and strata, so that clang's thread-safety analysis
#               (-Werror=thread-safety) checks every library and binary: a violation fails the build.
#
# Usage: scripts/sanitize.sh [asan] [tsan] [fuzz]   (default: all three, in that order)
# Prints the wall time of every build and run. Exits non-zero if any run fails (all still run).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(asan tsan fuzz)

failed=()
timing=()
# run NAME COMMAND...: runs a step, records its wall time and whether it failed.
run() {
  local name=$1 start=$SECONDS
  shift
  echo "==== sanitize: $name"
  if "$@"; then
    timing+=("$name: $((SECONDS - start)) s")
  else
    timing+=("$name: $((SECONDS - start)) s FAILED")
    failed+=("$name")
  fi
}

# Options every sanitized process inherits (tests, and the strata-server processes they spawn).
# halt_on_error: the first report kills the process, so it cannot pass unnoticed in a child server.
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$root/sanitizers/lsan.supp:print_suppressions=0
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/sanitizers/tsan.supp"
export OMP_WAIT_POLICY=PASSIVE

build() {  # build PRESET: configure and build the CMake preset (its targets, CMakePresets.json)
  cmake --preset "$1" >/dev/null &&
    # gtest_discover_tests runs each test binary at build time to list its tests; no leak check
    # there (a listing process is not a test run).
    ASAN_OPTIONS=detect_leaks=0 nice cmake --build --preset "$1" -j "$jobs"
}

for step in "${steps[@]}"; do
  case $step in
    asan)
      run "asan build" build asan
      # ASan makes the Fashion-MNIST fits several times slower than in build/; the preset's per-test
      # timeout is the main suite's 900 s doubled.
      run "asan ctest (whole suite)" ctest --preset asan -j "$jobs"
      ;;
    tsan)
      # ThreadSanitizer sees only instrumented code: Debian's libgomp (OpenMP) is not, so its
      # worker threads' hand-offs are invisible and would be reported as races; the preset runs the
      # tests with OMP_NUM_THREADS=1 (OpenMP regions then run on the calling thread). absl::Mutex is
      # annotated by sanitizers/absl_mutex_tsan.cc. Debian's gRPC is uninstrumented too, so tests
      # with a real server are not labelled "concurrency": its own threads' hand-offs (slices, TCP
      # endpoints) would be reported as races, and under TSan they take over 9 minutes on 2 cores.
      run "tsan build" build tsan
      run "tsan ctest (label concurrency)" ctest --preset tsan -j "$jobs"
      ;;
    fuzz)
      run "clang build (fuzzers; thread-safety analysis of every binary)" build fuzz
      # The fuzzers run one after another: each is single-process, and running them side by side
      # on a loaded machine only lowers every one's exec/s.
      run "fuzz runs (${STRATA_FUZZ_SECONDS:-20} s each)" ctest --preset fuzz
      ;;
    *)
      echo "sanitize: unknown step $step (asan, tsan, fuzz)" >&2
      exit 2
      ;;
  esac
done

echo "==== sanitize: times"
printf '  %s\n' "${timing[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "sanitize: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "sanitize: all passed"
