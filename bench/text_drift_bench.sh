#!/usr/bin/env bash
# The text task's drift run through a real strata-server (docs/text-task.md, "Drift through the
# server"): the data set at 1/--keep of the sources (data/debian_sections.py; default 32, about
# 1,850 packages: the server encodes every text), a text bundle with an empty head
# (all-MiniLM-L6-v2, max_tokens 256, + a 2,048-unit random ReLU expansion; strata-train
# --empty_upper), then strata-bench-text-drift: sections arrive in 5 groups, then libdevel and libs
# (the two largest sections) swap labels; prequential accuracy and joules per phase for the eager
# and the energy-aware + forget-on-drift policies.
# Builds nothing: run `scripts/build.sh strata-server strata-train strata-bench-text-drift` first.
# Usage: bench/text_drift_bench.sh [--keep=32] [extra strata-bench-text-drift flags]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${STRATA_BUILD_DIR:-build}"
keep=32
extra=()
for arg in "$@"; do
  case "$arg" in
    --keep=*) keep=${arg#*=} ;;
    *) extra+=("$arg") ;;
  esac
done
model_dir=$(scripts/fetch-minilm.sh | tail -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 data/debian_sections.py "$work/data.jsonl" --keep="$keep" | tail -1
# strata-train needs some labelled texts even for an empty head (the spec's stages are fit on
# them: the expansion only draws its random weights).
/usr/bin/python3 - "$work/data.jsonl" "$work/train.tsv" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for r in rows[:64]:
        f.write(f"{r['section']}\t{r['text']}\n")
PY
printf 'text encoder=%s max_tokens=256 max_bytes=65536\nexpand units=2048\n' "$model_dir" \
  > "$work/text.spec"
"$build/bin/strata-train" --spec="$work/text.spec" --train="$work/train.tsv" --test= \
  --empty_upper --lambda=1 --out="$work/text.bundle" > "$work/train.log"
"$build/bin/strata-bench-text-drift" --bundle="$work/text.bundle" --data="$work/data.jsonl" \
  "${extra[@]}"
