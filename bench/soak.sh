#!/usr/bin/env bash
# Soak bench: a real strata-server with durability on (--state_dir), loaded by ghz with Predict and
# Update at the same time (total concurrency 32 by default: 24 Predict + 8 Update streams), for a
# warm-up and then a measured period, while the server's resident memory is sampled every second.
# Prints, per RPC: calls, errors, QPS, p50 / p99; the server's RSS after warm-up and at the end and the
# growth; the CPU seconds ghz and the server used; and whether the final model equals a batch fit of
# the acknowledged samples (strata-soak-check: the server's snapshot vs the bundle + every sample of
# every OK Update stream absorbed at once). docs/operations.md, "Soak test", explains the output.
#
# Criteria (exit status 1 if one fails): 0 errors for both RPCs in both phases, RSS growth below
# --rss_limit_pct (skipped with --rss_limit_pct=off, for short runs where warm-up is not over), and
# model equality within --tolerance. Exit status 2: usage or setup error.
#
# Usage: bench/soak.sh [--build_dir=build] [--seconds=60] [--warmup=10] [--predict_concurrency=24]
#          [--update_concurrency=8] [--bundle=PATH] [--rss_limit_pct=5] [--tolerance=1e-9]
#          [--keep]    (keep the work directory: server log, ghz reports, RSS samples)
#   Quick check (about 30 s): bench/soak.sh --build_dir=build --seconds=8 --warmup=2 --rss_limit_pct=off
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="$src/build"
seconds=60
warmup=10
predict_c=24
update_c=8
bundle=""
rss_limit=5
tolerance=1e-9
keep=0
for arg in "$@"; do
  case "$arg" in
    --build_dir=*) build_dir="${arg#*=}" ;;
    --seconds=*) seconds="${arg#*=}" ;;
    --warmup=*) warmup="${arg#*=}" ;;
    --predict_concurrency=*) predict_c="${arg#*=}" ;;
    --update_concurrency=*) update_c="${arg#*=}" ;;
    --bundle=*) bundle="${arg#*=}" ;;
    --rss_limit_pct=*) rss_limit="${arg#*=}" ;;
    --tolerance=*) tolerance="${arg#*=}" ;;
    --keep) keep=1 ;;
    *) sed -n '/^# Usage/,/^#   Quick/p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
  esac
done
bin="$(cd "$build_dir" && pwd)/bin"
for tool in strata-server strata strata-train strata-soak-check; do
  [ -x "$bin/$tool" ] || { echo "soak: $bin/$tool is missing (build it first)" >&2; exit 2; }
done
ghz="$("$src/scripts/install-ghz.sh" | tail -n 1)"

source "$src/scripts/lib/serve.sh"
SERVE_FAIL_STATUS=2  # a server that does not start is a setup error
work="$(mktemp -d /tmp/strata_soak.XXXXXX)"
sampler_pid=""
cleanup() {
  if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null || true; fi
  serve_stop_all
  if [ "$keep" = 1 ]; then echo "soak: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ -z "$bundle" ]; then
  bundle="$work/model.bundle"
  serve_train_bundle "$bin" "$bundle" "$src/specs/small.spec" 1000
fi

# --device=float: strata-soak-check recomputes the features with the bundle's float lower tier.
serve_start server "$work" "$bin/strata-server" --bundle="$bundle" --address=127.0.0.1:0 \
  --state_dir="$work/state" --device=float
address="127.0.0.1:$server_port"
"$bin/strata" health --server="$address" --wait=120s > /dev/null

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
( while kill -0 "$server_pid" 2>/dev/null; do
    echo "$(date +%s.%N) $(rss_kb)"
    sleep 1
  done ) > "$work/rss.log" 2>/dev/null &
sampler_pid=$!

# run_phase NAME SECONDS: Predict and Update load at the same time; each ghz's CPU time (bash's
# `time`: user, system, wall seconds) lands in NAME.RPC.time, its JSON report in NAME.RPC.json.
run_phase() {
  local name="$1" duration="$2" pids=() rpc c
  for rpc in predict update; do
    if [ "$rpc" = predict ]; then c="$predict_c"; else c="$update_c"; fi
    ( TIMEFORMAT='%U %S %R'
      time "$ghz" --config="$src/deploy/ghz/$rpc.json" --concurrency="$c" --duration="${duration}s" \
        --duration-stop=wait --format=json --output="$work/$name.$rpc.json" "$address" \
        2> "$work/$name.$rpc.err" ) 2> "$work/$name.$rpc.time" &
    pids+=($!)
  done
  local failed=0 pid
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ "$failed" = 1 ]; then
    cat "$work/$name".*.err >&2
    echo "soak: ghz failed in the $name phase" >&2
    exit 2
  fi
}

echo "soak: server $address (pid $server_pid, --device=float, state $work/state); ghz" \
  "$predict_c Predict + $update_c Update streams; warm-up ${warmup}s, measured ${seconds}s"
run_phase warmup "$warmup"
rss_start="$(rss_kb)"
cpu_start="$(cpu_ticks)"
run_phase soak "$seconds"
rss_end="$(rss_kb)"
cpu_end="$(cpu_ticks)"
echo "$rss_start $rss_end $(( cpu_end - cpu_start )) $(getconf CLK_TCK)" > "$work/server.usage"

# The model check: a snapshot of the statistics now (every acknowledged stream has been absorbed:
# ghz waited for all of them), against the bundle + the acknowledged samples as one batch.
snapshot_line="$("$bin/strata" snapshot --server="$address")"
snapshot="$(echo "$snapshot_line" | sed -n 's/^snapshot \(.*\): model version.*/\1/p')"
[ -f "$snapshot" ] || { echo "soak: no snapshot file in: $snapshot_line" >&2; exit 2; }

# Stop the server (SIGTERM: drain and exit 0) so its final RSS samples are complete.
server_status=0
serve_stop server || server_status=$?
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""

status=0
python3 "$src/bench/soak_report.py" --work="$work" --update_config="$src/deploy/ghz/update.json" \
  --rss_limit_pct="$rss_limit" > "$work/report.txt" || status=$?
cat "$work/report.txt"
[ "$status" -le 1 ] || exit 2
copies="$(sed -n 's/^acknowledged Update streams: \([0-9]*\).*/\1/p' "$work/report.txt")"
"$bin/strata-soak-check" --bundle="$bundle" --snapshot="$snapshot" --samples="$work/payload.txt" \
  --copies="$copies" --tolerance="$tolerance" || status=1
if [ "$server_status" != 0 ]; then
  echo "server exit status after SIGTERM: $server_status (expected 0)"
  status=1
fi
if [ "$status" = 0 ]; then echo "soak: PASS"; else echo "soak: FAIL"; fi
exit "$status"
