#!/usr/bin/env bash
# serving_bench.sh: Predict serving throughput and latency of strata-server against the gRPC floor.
#
# On loopback, side by side in the same run, for concurrency 1, 8, 32 and 64 and two load
# generators (ghz, and the lighter h2load from Debian's nghttp2-client):
#   echo    strata-bench-echo: a bare gRPC callback server answering Predict with a reply of the same
#           serialized size as strata-server's, and no model work: the floor gRPC sets here;
#   strata  strata-server (dynamic batching on, its defaults) on a real model bundle;
# every request is one Fashion-MNIST test image (784 pixel bytes). The bound the model's own
# compute leaves is 1 / (t_rpc + t_img), with t_rpc = 1 / echo QPS at the same point and t_img the
# lower tier's per-image time at batch 64 (strata-bench-lower, same spec, the server's device); the
# ratio is strata QPS / bound. At concurrency 32, strata-server with --batching=off is measured too.
# "cpu s" columns are the CPU seconds each server and the generator used during the point (from
# /proc and bash's `times`), so the generator's share of the 2 cores is visible.
#
# Errors are counted, not assumed away: ghz reports status codes; h2load cannot see grpc-status
# (it is in trailers), so its responses must all be HTTP 200 and the server's own GetStats must show
# exactly h2load's successful requests as Predict ok and none failed.
#
# Builds nothing. Usage:
#   bench/serving_bench.sh [BUILD_DIR [BUNDLE]]
# BUILD_DIR (or $STRATA_BUILD_DIR; default build/) holds bin/strata-server, strata-train, strata,
# strata-bench-echo and strata-bench-lower. Without BUNDLE a model is trained on 3,000 images with
# $STRATA_BENCH_SPEC (default specs/fast.spec), which is also the spec t_img is measured with (give
# the bundle's own spec with BUNDLE). Environment: STRATA_BENCH_SECONDS (per point, default 4),
# STRATA_BENCH_CONCURRENCY (default "1 8 32 64"), STRATA_SERVER_ARGS (extra strata-server flags),
# GHZ (default .tools/bin/ghz, see scripts/install-ghz.sh), STRATA_BENCH_CONNECTIONS (HTTP/2
# connections per generator, default 1, as ghz's default).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-${STRATA_BUILD_DIR:-$src/build}}" && pwd)"
bin="$build/bin"
bundle="${2:-}"
spec="${STRATA_BENCH_SPEC:-$src/specs/fast.spec}"
seconds="${STRATA_BENCH_SECONDS:-4}"
concurrencies="${STRATA_BENCH_CONCURRENCY:-1 8 32 64}"
connections="${STRATA_BENCH_CONNECTIONS:-1}"
ghz="${GHZ:-$src/.tools/bin/ghz}"
read -r -a server_args <<< "${STRATA_SERVER_ARGS:-}"

for tool in strata-server strata-train strata strata-bench-echo strata-bench-lower; do
  [ -x "$bin/$tool" ] || { echo "serving_bench: $bin/$tool is missing (build it first)" >&2; exit 1; }
done
[ -x "$ghz" ] || { echo "serving_bench: no ghz at $ghz (scripts/install-ghz.sh)" >&2; exit 1; }
command -v h2load >/dev/null || { echo "serving_bench: no h2load (apt-get install nghttp2-client)" >&2; exit 1; }

source "$src/scripts/lib/serve.sh"
work="$(mktemp -d /tmp/strata_serving_bench.XXXXXX)"
trap 'serve_stop_all; rm -rf "$work"' EXIT

echo "== machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== generators: $("$ghz" --version 2>&1 | head -1 | sed 's/^/ghz /'), $(h2load --version 2>&1 | head -1); $connections connection(s) each; $seconds s per point"

if [ -z "$bundle" ]; then
  bundle="$work/model.bundle"
  echo "== training a bundle: $(basename "$spec"), 3000 images"
  serve_train_bundle "$bin" "$bundle" "$spec" 3000
fi

serve_start strata "$work" "$bin/strata-server" --bundle="$bundle" --address=127.0.0.1:0 "${server_args[@]}"
"$bin/strata" health --server="127.0.0.1:$strata_port" --wait=300s > /dev/null
serve_start strata_off "$work" "$bin/strata-server" --bundle="$bundle" --address=127.0.0.1:0 --batching=off \
  "${server_args[@]}"
"$bin/strata" health --server="127.0.0.1:$strata_off_port" --wait=300s > /dev/null
device="$("$bin/strata" stats --server="127.0.0.1:$strata_port" | awk '$1 == "device" {gsub(",", "", $2); print $2; exit}')"
grep -m1 "batching" "$work/strata.log" | sed 's/^.*Predict/== strata-server: Predict/'

"$bin/strata-bench-echo" --write_request="$work/request.bin" --write_frame="$work/request.frame" \
  --data=fashion-mnist:test --image_index=0 --images=1 | sed 's/^/== /'
serve_start echo "$work" "$bin/strata-bench-echo" --request="$work/request.bin" \
  --reply_like="127.0.0.1:$strata_port" --address=127.0.0.1:0
sed 's/^/== /' "$work/echo.out"

# t_img: the lower tier's per-image time at batch 64 on the server's device.
case "$device" in
  float) path="float" ;;
  *) path="int8 $device" ;;
esac
echo "== t_img: strata-bench-lower --spec=$(basename "$spec") (device $device, batch 64)"
# Twice, keeping the faster: other processes on a shared machine only ever make it slower.
: > "$work/lower.txt"
for _ in 1 2; do
  OMP_WAIT_POLICY=PASSIVE "$bin/strata-bench-lower" --spec="$spec" --train_limit=2000 --seconds=1 \
    >> "$work/lower.txt" 2>&1 || { cat "$work/lower.txt"; exit 1; }
done
t_img_ms="$(awk -v path="$path" '
  { line = $0 }
  index(line, path " ") == 1 {
    rest = substr(line, length(path) + 1); split(rest, f, " ")
    if (f[1] == 64 && (best == "" || f[2] / 64 < best)) best = f[2] / 64
  }
  END { if (best != "") printf "%.6f", best }' "$work/lower.txt")"
[ -n "$t_img_ms" ] || { cat "$work/lower.txt"; echo "serving_bench: no '$path' batch-64 row" >&2; exit 1; }
echo "== t_img = $(awk -v t="$t_img_ms" 'BEGIN {printf "%.1f", t * 1000}') us per image ($path, batch 64)"

cpu_seconds() {  # user + system CPU seconds of process $1
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
predict_counts() {  # "ok failed" Predict counts of the server on port $1
  "$bin/strata" stats --server="127.0.0.1:$1" | awk '$1 == "Predict" {gsub(",", ""); print $3, $5; exit}'
}
children_cpu() {  # CPU seconds used by this shell's finished children so far
  # `times` runs in this shell (a builtin with a redirection does not fork); its second line is
  # the children's user and system time, e.g. "0m1.250s 0m0.310s".
  local file="$work/times.$BASHPID"
  times > "$file"
  tail -1 "$file" | awk '{
    split($1, u, "m"); split($2, s, "m"); sub("s", "", u[2]); sub("s", "", s[2]);
    print u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
}

# run GENERATOR SERVER_NAME CONCURRENCY -> "qps p50_ms p99_ms errors server_cpu generator_cpu"
run() {
  local generator="$1" name="$2" c="$3"
  local pid_var="${name}_pid" port_var="${name}_port"
  local pid="${!pid_var}" port="${!port_var}"
  local before_counts after_counts server_before server_after gen_before gen_after result
  before_counts="$(predict_counts "$port")"
  server_before="$(cpu_seconds "$pid")"
  children_cpu > "$work/gen_before"; gen_before="$(cat "$work/gen_before")"
  if [ "$generator" = ghz ]; then
    "$ghz" --insecure --proto="$src/proto/strata/v1/strata.proto" --import-paths="$src/proto" \
      --call=strata.v1.Strata.Predict --binary-file="$work/request.bin" --concurrency="$c" \
      --connections="$connections" --duration="${seconds}s" --format=json \
      --output="$work/ghz.json" "127.0.0.1:$port" > /dev/null 2>&1 || true
    children_cpu > "$work/gen_after"; gen_after="$(cat "$work/gen_after")"
    server_after="$(cpu_seconds "$pid")"
    result="$(python3 - "$work/ghz.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = {int(d["percentage"]): d["latency"] / 1e6 for d in (r.get("latencyDistribution") or [])}
codes = r.get("statusCodeDistribution") or {}
# ghz stops at --duration by closing its connections: the calls in flight then (at most the
# concurrency) fail on the client side only and are not errors of the server.
cut = lambda message: "closed network connection" in message or "code = Canceled" in message
errors = sum(v for k, v in (r.get("errorDistribution") or {}).items() if not cut(k))
ok = codes.get("OK", 0)
print(f"{ok / r['total'] * 1e9 if r.get('total') else 0:.0f} {lat.get(50, 0):.3f} {lat.get(99, 0):.3f} {errors}")
PY
)"
  else
    local streams=$(( (c + connections - 1) / connections ))
    # A fixed number of requests (about $seconds s at the rate ghz just measured), so that every
    # request completes and the server's counts can be checked exactly.
    local requests
    requests="$(awk -v q="${last_qps:-1000}" -v s="$seconds" -v c="$c" 'BEGIN {n = int(q * s); if (n < 20 * c) n = 20 * c; print n}')"
    rm -f "$work/h2load.log"
    h2load --requests="$requests" --clients="$connections" --threads=1 \
      --max-concurrent-streams="$streams" -H 'content-type: application/grpc' -H 'te: trailers' \
      --data="$work/request.frame" --log-file="$work/h2load.log" \
      "http://127.0.0.1:$port/strata.v1.Strata/Predict" > "$work/h2load.out" 2>&1 \
      && status=0 || status=$?
    children_cpu > "$work/gen_after"; gen_after="$(cat "$work/gen_after")"
    server_after="$(cpu_seconds "$pid")"
    after_counts="$(predict_counts "$port")"
    result="$(python3 - "$work/h2load.out" "$work/h2load.log" "$status" "$seconds" \
      "$before_counts" "$after_counts" <<'PY'
import re, sys
out, log, status, seconds = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ok0, failed0 = map(int, sys.argv[5].split()); ok1, failed1 = map(int, sys.argv[6].split())
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
lat = sorted(int(f[2]) for f in (l.split("\t") for l in open(log)) if len(f) >= 3 and f[1] == "200")
errors = 0 if status == 0 else 1
if m: errors += int(m.group(5)) + int(m.group(6)) + int(m.group(7))
if s: errors += int(s.group(2)) + int(s.group(3)) + int(s.group(4))
# grpc-status is in trailers h2load does not read: the server's own counts must show every
# request of the run as ok and none failed.
errors += failed1 - failed0
if s and ok1 - ok0 < int(s.group(1)): errors += int(s.group(1)) - (ok1 - ok0)
pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1000 if lat else 0
print(f"{float(rps.group(1)) if rps else 0:.0f} {pct(50):.3f} {pct(99):.3f} {errors}")
PY
)"
  fi
  echo "$result $(awk -v a="$server_before" -v b="$server_after" 'BEGIN {printf "%.1f", b - a}') $(awk -v a="$gen_before" -v b="$gen_after" 'BEGIN {printf "%.1f", b - a}')"
}

# The QPS ghz measured for server $1 at concurrency $2 (h2load sizes its runs by it).
declare -A ghz_seen
ghz_qps() { echo "${ghz_seen[$1.$2]:-1000}"; }

total_errors=0
for generator in ghz h2load; do
  echo
  echo "== $generator, 1 image per request, $seconds s per point (QPS; latency ms; cpu = server CPU seconds in the point;"
  echo "   gen e/s = the generator's CPU seconds against echo / strata; bound = 1 / (1 / echo QPS + t_img))"
  printf "%-5s %8s %7s %7s %5s %8s %7s %7s %7s %8s %6s %9s %6s %6s\n" conc "echo" p50 p99 cpu \
    "strata" p50 p99 cpu bound ratio "gen e/s" errors batch
  points="$concurrencies"
  for c in $points; do
    last_qps="$(ghz_qps echo "$c")"
    read -r e_qps e_p50 e_p99 e_err e_cpu e_gen <<< "$(run "$generator" echo "$c")"
    [ "$generator" = ghz ] && ghz_seen[echo.$c]="$e_qps"
    last_qps="$(ghz_qps strata "$c")"
    read -r s_qps s_p50 s_p99 s_err s_cpu s_gen <<< "$(run "$generator" strata "$c")"
    [ "$generator" = ghz ] && ghz_seen[strata.$c]="$s_qps"
    bound="$(awk -v e="$e_qps" -v t="$t_img_ms" 'BEGIN {printf "%.0f", (e > 0) ? 1 / (1 / e + t / 1000) : 0}')"
    ratio="$(awk -v s="$s_qps" -v b="$bound" 'BEGIN {printf "%.0f%%", (b > 0) ? 100 * s / b : 0}')"
    printf "%-5s %8s %7s %7s %5s %8s %7s %7s %7s %8s %6s %9s %6s %6s\n" "$c" "$e_qps" "$e_p50" \
      "$e_p99" "$e_cpu" "$s_qps" "$s_p50" "$s_p99" "$s_cpu" "$bound" "$ratio" "$e_gen/$s_gen" \
      "$((e_err + s_err))" "on"
    total_errors=$((total_errors + e_err + s_err))
    if [ "$c" = 32 ]; then
      last_qps="$(ghz_qps strata_off "$c")"
      read -r o_qps o_p50 o_p99 o_err o_cpu o_gen <<< "$(run "$generator" strata_off "$c")"
      [ "$generator" = ghz ] && ghz_seen[strata_off.$c]="$o_qps"
      ratio="$(awk -v s="$o_qps" -v b="$bound" 'BEGIN {printf "%.0f%%", (b > 0) ? 100 * s / b : 0}')"
      printf "%-5s %8s %7s %7s %5s %8s %7s %7s %7s %8s %6s %9s %6s %6s\n" "$c" "" "" "" "" \
        "$o_qps" "$o_p50" "$o_p99" "$o_cpu" "$bound" "$ratio" "-/$o_gen" "$o_err" "off"
      total_errors=$((total_errors + o_err))
    fi
  done
done

echo
"$bin/strata" stats --server="127.0.0.1:$strata_port" | grep -i "batch" | sed 's/^/== strata-server (batching on): /' || true
echo "== load average at end: $(cut -d' ' -f1-3 /proc/loadavg); errors: $total_errors"
[ "$total_errors" -eq 0 ]
