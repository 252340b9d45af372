#!/usr/bin/env bash
# metrics_overhead.sh: what Prometheus metrics (--metrics_address) cost Predict serving.
#
# One real model bundle, two strata-server processes run one after the other with identical flags
# except that one has --metrics_address=127.0.0.1:0: "off" and "on". Each is loaded by ghz with
# deploy/ghz/predict.json (one 784-byte image per request) at each concurrency for
# STRATA_BENCH_SECONDS, alternating off/on/off/on STRATA_BENCH_ROUNDS times so that drift in the
# machine's load hits both alike. Prints QPS and p50 / p99 latency per run, the median QPS of each
# side and their ratio, and for "on" the scraped request count (which must equal ghz's OK count:
# the metrics saw every call) and how long a scrape takes.
#
# Builds nothing. Usage:
#   bench/metrics_overhead.sh [BUILD_DIR [BUNDLE]]
# BUILD_DIR (or $STRATA_BUILD_DIR; default build/) holds bin/strata-server, strata-train. Without
# BUNDLE a model is trained on 3,000 images with specs/fast.spec. Environment: STRATA_BENCH_SECONDS
# (default 5), STRATA_BENCH_CONCURRENCY (default "1 16"), STRATA_BENCH_ROUNDS (default 3),
# STRATA_SERVER_ARGS (extra strata-server flags), GHZ (default .tools/bin/ghz).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-${STRATA_BUILD_DIR:-$src/build}}" && pwd)"
bin="$build/bin"
bundle="${2:-}"
seconds="${STRATA_BENCH_SECONDS:-5}"
concurrencies="${STRATA_BENCH_CONCURRENCY:-1 16}"
rounds="${STRATA_BENCH_ROUNDS:-3}"
ghz="${GHZ:-$src/.tools/bin/ghz}"
read -r -a server_args <<< "${STRATA_SERVER_ARGS:-}"

source "$src/scripts/lib/serve.sh"
work="$(mktemp -d /tmp/strata_metrics_bench.XXXXXX)"
trap 'serve_stop_all; rm -rf "$work"' EXIT

if [ -z "$bundle" ]; then
  bundle="$work/model.bundle"
  serve_train_bundle "$bin" "$bundle" "$src/specs/fast.spec" 3000
fi

# start_server off|on: starts strata-server, sets $address (and $metrics_port for "on").
start_server() {
  rm -f "$work/metrics_port"
  local extra=()
  [ "$1" = on ] && extra=(--metrics_address=127.0.0.1:0 --metrics_port_file="$work/metrics_port")
  serve_start server "$work" "$bin/strata-server" --bundle="$bundle" --address=127.0.0.1:0 \
    "${extra[@]}" "${server_args[@]}"
  address="127.0.0.1:$server_port"
  "$bin/strata" health --server="$address" --wait=120s > /dev/null
  metrics_port="$(cat "$work/metrics_port" 2>/dev/null || true)"
}

stop_server() { serve_stop server || true; }

# scrape PORT: the body of GET /metrics (python3: no curl needed).
scrape() {
  python3 - "$1" <<'PY'
import sys, time, urllib.request
start = time.perf_counter()
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
sys.stderr.write(f"{(time.perf_counter() - start) * 1e3:.2f}\n")
print(body)
PY
}

printf "%-4s %-5s %4s %10s %9s %9s %12s %10s\n" side round c qps p50_ms p99_ms metrics_ok scrape_ms
for c in $concurrencies; do
  for round in $(seq 1 "$rounds"); do
    for side in off on; do
      start_server "$side"
      before=0
      if [ "$side" = on ]; then
        before="$(scrape "$metrics_port" 2>/dev/null \
          | awk -F' ' '/^strata_rpc_requests_total\{code="OK",method="Predict"\}/ {print $2}')"
        before="${before:-0}"
      fi
      "$ghz" --config="$src/deploy/ghz/predict.json" -c "$c" -z "${seconds}s" --format=json \
        --output="$work/report.json" "$address" > /dev/null
      read -r qps p50 p99 ok < <(python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = {d["percentage"]: d["latency"] for d in r.get("latencyDistribution") or []}
codes = r.get("statusCodeDistribution") or {}
print(f'{r["rps"]:.0f} {lat.get(50, 0) / 1e6:.3f} {lat.get(99, 0) / 1e6:.3f} {codes.get("OK", 0)}')
PY
)
      metrics_ok="-"; scrape_ms="-"
      if [ "$side" = on ]; then
        after="$(scrape "$metrics_port" 2> "$work/scrape_ms" \
          | awk -F' ' '/^strata_rpc_requests_total\{code="OK",method="Predict"\}/ {print $2}')"
        scrape_ms="$(cat "$work/scrape_ms")"
        metrics_ok="$(python3 -c "print(int(float('${after:-0}') - float('$before')))")"
        # ghz's OK count (minus the readiness probe already in "before").
        [ "$metrics_ok" = "$ok" ] || echo "MISMATCH: ghz OK $ok, metrics $metrics_ok" >&2
      fi
      printf "%-4s %-5s %4s %10s %9s %9s %12s %10s\n" "$side" "$round" "$c" "$qps" "$p50" "$p99" \
        "$metrics_ok" "$scrape_ms"
      echo "$c $side $qps" >> "$work/qps"
      stop_server
    done
  done
done

python3 - "$work/qps" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, side, qps = line.split()
    runs.setdefault(int(c), {}).setdefault(side, []).append(float(qps))
for c, sides in sorted(runs.items()):
    off, on = statistics.median(sides["off"]), statistics.median(sides["on"])
    print(f"concurrency {c}: median QPS off {off:.0f}, on {on:.0f}, on/off {on / off:.3f}")
PY
