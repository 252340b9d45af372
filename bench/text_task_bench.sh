#!/usr/bin/env bash
# The Compound LLM on a real text task, offline (docs/text-task.md): Debian 12 package
# descriptions labelled by Section.
#   1. the data set: data/debian_sections.py (apt-get update of bookworm main into .tools/debian-lists
#      the first time; later runs read the lists there), 1/--keep of the sources;
#   2. strata-bench-text-task: the encoder (float, int8 cpu) + analytic head, expansion widths and
#      lexical views (the embedding with hashed word 1-2-grams appended, spec line `lexical`),
#      test accuracy, fit time, J/sentence by tier, class-incremental vs joint (embeddings cached
#      in .tools/cache/text-task, keyed by the data file's crc32c: a rerun skips the encoding);
#   3. the TF-IDF + LinearSVC baseline on the same split (bench/text_task_tfidf.py);
#   4. strata-bench-text on 1,024 of the task's texts: sentences/s at batch 1 and 32 with the task's
#      length distribution;
#   5. the task table and the two targets (head above TF-IDF; int8 within 0.5 points of float).
# Builds nothing: run `scripts/build.sh strata-bench-text-task strata-bench-text` first.
# Usage: bench/text_task_bench.sh [--build_dir=build] [--keep=8] [--widths=0,2048,8192]
#                                 [--lexical=2048,4096] [--seconds=5] [--threads=N]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build
keep=8
widths=0,2048,8192
lexical=2048,4096
seconds=5
threads=$(nproc)
for arg in "$@"; do
  case "$arg" in
    --build_dir=*) build_dir=${arg#*=} ;;
    --keep=*) keep=${arg#*=} ;;
    --widths=*) widths=${arg#*=} ;;
    --lexical=*) lexical=${arg#*=} ;;
    --seconds=*) seconds=${arg#*=} ;;
    --threads=*) threads=${arg#*=} ;;
    *) echo "usage: $0 [--build_dir=build] [--keep=8] [--widths=...] [--lexical=...] [--seconds=5]" \
            "[--threads=N]" >&2
       exit 2 ;;
  esac
done
echo "text_task_bench: $threads threads; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
model_dir=$(scripts/fetch-minilm.sh | tail -1)
mkdir -p .tools/data
data=.tools/data/debian-sections-keep$keep.jsonl
/usr/bin/python3 data/debian_sections.py "$data" --keep="$keep"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

OMP_NUM_THREADS=$threads "$build_dir/bin/strata-bench-text-task" --data="$data" \
  --model_dir="$model_dir" --widths="$widths" --lexical="$lexical" | tee "$work/task.txt"
OMP_NUM_THREADS=$threads /usr/bin/python3 bench/text_task_tfidf.py "$data" | tee "$work/tfidf.txt"
/usr/bin/python3 - "$data" "$work/texts.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for r in [r for r in rows if r["split"] == "test"][:1024]:
        f.write(json.dumps(r["text"]) + "\n")
PY
echo "speed with the task's texts (first 1,024 test texts):"
OMP_NUM_THREADS=$threads "$build_dir/bin/strata-bench-text" --texts="$work/texts.jsonl" \
  --model_dir="$model_dir" --paths=float,cpu --seconds="$seconds" | tee "$work/speed.txt"

/usr/bin/python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def json_lines(name):
    return [json.loads(l[5:]) for l in open(f"{work}/{name}") if l.startswith("JSON ")]
task = json_lines("task.txt")[0]
tfidf = json_lines("tfidf.txt")[0]
speed = {(r["path"], r["batch"]): r for r in json_lines("speed.txt")[0]}
print(f"\ntask table ({task['packages']} packages, data crc32c {task['crc32c']}):")
print("| model | test accuracy | fit time | J/sentence (predict) | J/sentence (learn) | sentences/s batch 1 / 32 |")
print("| --- | --- | --- | --- | --- | --- |")
best = {}
for h in task["heads"]:
    predict = h["encoder_j_per_sentence"] + h["expand_j_per_sentence"] + h["readout_j_per_sentence"]
    learn = (h["encoder_j_per_sentence"] + h["expand_j_per_sentence"] + h["absorb_j_per_sentence"]
             + h["refresh_j_per_sentence"])
    s1, s32 = speed.get((h["path"], 1)), speed.get((h["path"], 32))
    rate = f"{s1['sentences_per_s']:.1f} / {s32['sentences_per_s']:.1f}" if s1 and s32 else ""
    view = f"lexical {h['lexical']}, " if h.get("lexical") else ""
    print(f"| {h['path']} encoder + head, {view}width {h['width']} ({h['features']} features) | "
          f"{100 * h['test_accuracy']:.2f} % | {h['fit_seconds']:.2f} s | {1e3 * predict:.3f} mJ | "
          f"{1e3 * learn:.3f} mJ | {rate} |")
    if h["validation_accuracy"] > best.get(h["path"], {"validation_accuracy": -1})["validation_accuracy"]:
        best[h["path"]] = h
print(f"| TF-IDF + LinearSVC ({tfidf['features']} features) | {100 * tfidf['test_accuracy']:.2f} % | "
      f"{tfidf['fit_seconds']:.2f} s | {1e3 * tfidf['predict_j_per_sentence']:.6f} mJ | | |")
for path, h in best.items():
    verdict = "above" if h["test_accuracy"] > tfidf["test_accuracy"] else "NOT above"
    view = f"lexical {h['lexical']}, " if h.get("lexical") else ""
    print(f"target: {path} head ({view}width {h['width']}, chosen on validation) "
          f"{100 * h['test_accuracy']:.2f} % vs TF-IDF {100 * tfidf['test_accuracy']:.2f} %: {verdict}")
if "float" in best and "int8 cpu" in best:
    f, q = best["float"], best["int8 cpu"]
    same = [h for h in task["heads"] if h["path"] == "int8 cpu" and h["width"] == f["width"]
            and h.get("lexical") == f.get("lexical")][0]
    gap = 100 * (f["test_accuracy"] - same["test_accuracy"])
    print(f"target: int8 vs float at lexical {f.get('lexical', 0)}, width {f['width']}: {gap:+.2f} points "
          f"({'within' if abs(gap) <= 0.5 else 'NOT within'} 0.5)")
c = task["class_incremental"]
print(f"class-incremental vs joint: float64 solution rel. diff {c['solution_difference']:.1e} "
      f"({'EQUAL' if c['solution_difference'] <= 1e-9 else 'NOT EQUAL'} to 1e-9), "
      f"{c['prediction_differences']} test predictions differ")
PY
