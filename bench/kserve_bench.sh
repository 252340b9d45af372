#!/usr/bin/env bash
# strata.v1 Predict against KServe v2 ModelInfer on one server: ghz loads each in turn with the
# same single 784-byte image (deploy/ghz/predict.json and model_infer.json; ModelInfer's image in
# raw_input_contents, as tritonclient sends it), at concurrency 1 and 32, alternating over several
# rounds so that drift on a shared machine hits both alike. Prints calls/s and mean latency per
# round and the median per protocol; the difference is the KServe front-end's cost (tensor
# translation and a second parse), since both run through the same batcher.
#
# Usage: bench/kserve_bench.sh [BUILD_DIR [SECONDS [ROUNDS]]]   (defaults: build, 5, 3)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-$src/build}" && pwd)"
seconds="${2:-5}"
rounds="${3:-3}"
source "$src/scripts/lib/serve.sh"
ghz="$("$src/scripts/install-ghz.sh" | tail -n 1)"
work="$(mktemp -d /tmp/strata_kserve_bench.XXXXXX)"
trap 'serve_stop_all; rm -rf "$work"' EXIT

serve_train_bundle "$build/bin" "$work/model.bundle" "$src/specs/default.spec" 10000
serve_start server "$work" "$build/bin/strata-server" --bundle="$work/model.bundle" \
  --address=127.0.0.1:0
address="127.0.0.1:$server_port"
"$build/bin/strata" health --server="$address" --wait=120s > /dev/null

for concurrency in 1 32; do
  for round in $(seq 1 "$rounds"); do
    for config in predict model_infer; do
      "$ghz" --config="$src/deploy/ghz/$config.json" --concurrency="$concurrency" \
        --connections="$(( concurrency > 1 ? 2 : 1 ))" --duration="${seconds}s" --format=json \
        --output="$work/$config.c$concurrency.r$round.json" "$address"
    done
  done
done
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
for concurrency in (1, 32):
    medians = {}
    for config in ("predict", "model_infer"):
        rps = []
        for r in range(1, rounds + 1):
            report = json.load(open(f"{work}/{config}.c{concurrency}.r{r}.json"))
            errors = report.get("errorDistribution") or {}
            if errors:
                sys.exit(f"{config}: errors {errors}")
            rps.append(report["rps"])
            print(f"c={concurrency:2d} round {r} {config:12s} {report['rps']:8.0f} calls/s, "
                  f"mean {report['average'] / 1e6:.3f} ms")
        medians[config] = statistics.median(rps)
    ratio = medians["model_infer"] / medians["predict"]
    print(f"c={concurrency:2d} median: Predict {medians['predict']:.0f} calls/s, ModelInfer "
          f"{medians['model_infer']:.0f} calls/s ({ratio:.2f}x)")
PY
