#!/usr/bin/env bash
# ghz smoke test: a real strata-server on a small real model, loaded for a few seconds by ghz with
# deploy/ghz/predict.json (unary Predict) and deploy/ghz/update.json (client-streaming Update),
# through server reflection. Passes iff ghz completed calls and reports 0 errors for both, and the
# Update load really reached the model (samples seen grew).
#
# Usage: ghz_smoke_test.sh BINARY_DIR SOURCE_DIR   (ctest passes both)
set -euo pipefail
bin="$1/bin"
src="$2"

source "$src/scripts/lib/serve.sh"

ghz="$("$src/scripts/install-ghz.sh" | tail -n 1)"
work="$(mktemp -d /tmp/strata_ghz_smoke.XXXXXX)"
trap 'serve_stop_all; rm -rf "$work"' EXIT

serve_train_bundle "$bin" "$work/model.bundle" "$src/specs/small.spec" 1000
serve_start server "$work" "$bin/strata-server" --bundle="$work/model.bundle" --address=127.0.0.1:0
address="127.0.0.1:$server_port"
"$bin/strata" health --server="$address" --wait=120s

samples_seen() { "$bin/strata" info --server="$address" | awk '/^samples seen/ {print $3}'; }
seen_before="$(samples_seen)"

for config in predict update; do
  "$ghz" --config="$src/deploy/ghz/$config.json" --format=json --output="$work/$config.report.json" \
    "$address"
  python3 - "$config" "$work/$config.report.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
report = json.load(open(path))
count = report.get("count", 0)
errors = report.get("errorDistribution") or {}
codes = report.get("statusCodeDistribution") or {}
print(f"ghz {name}: {count} calls, {report.get('rps', 0):.0f} calls/s, average "
      f"{report.get('average', 0) / 1e6:.2f} ms, status codes {codes}, errors {errors}")
if count == 0:
    sys.exit(f"ghz {name}: no calls completed")
if errors or set(codes) - {"OK"}:
    sys.exit(f"ghz {name}: errors: {errors} {codes}")
PY
done

seen_after="$(samples_seen)"
echo "samples seen: $seen_before -> $seen_after"
[ "$seen_after" -gt "$seen_before" ] || { echo "the Update load absorbed nothing" >&2; exit 1; }
