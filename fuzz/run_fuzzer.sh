#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time on a COPY of its committed corpus (the fuzzer adds
# the inputs it finds to the corpus directory it is given; the committed one must not churn).
#
#   fuzz/run_fuzzer.sh FUZZER CORPUS_DIR
#
# STRATA_FUZZ_SECONDS (default 20): -max_total_time. A crash, leak, sanitizer report, failed
# invariant or timeout fails the run; the input that caused it is kept in
# $STRATA_FUZZ_ARTIFACTS (default /tmp/strata-fuzz-artifacts) and the reproduce command is printed.
# Prints the fuzzer's final stats line (execs/s) for scripts/sanitize.sh to report.
set -euo pipefail
fuzzer=$1
corpus=$2
seconds=${STRATA_FUZZ_SECONDS:-20}
name=$(basename "$fuzzer")
artifacts=${STRATA_FUZZ_ARTIFACTS:-/tmp/strata-fuzz-artifacts}/$name
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-fuzz-$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$corpus/." "$work/"

# Third-party leaks (gRPC / protobuf globals) only; see sanitizers/lsan.supp.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(cd "$(dirname "$0")/.." && pwd)/sanitizers/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# One OpenMP thread: the lower tier's Features() is parallel, the fuzz inputs are tiny.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

status=0
# -rss_limit_mb: a bundle or log record that makes the reader allocate more than this is a bug
# (allocations must be bounded by the input's size). -timeout: one input taking over 10 s is a hang.
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$work" > "$work.log" 2>&1 || status=$?
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
  "$work.log" || true
if [ "$status" -ne 0 ]; then
  tail -60 "$work.log"
  echo "run_fuzzer: $name FAILED (exit $status); artifacts in $artifacts:" >&2
  ls -l "$artifacts" >&2 || true
  echo "reproduce: $fuzzer $artifacts/<crash-file>" >&2
fi
rm -f "$work.log"
exit "$status"
