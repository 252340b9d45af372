#!/usr/bin/env bash
# A project-local Python for the text encoder's proofs and bench: a venv in .tools/text-venv
# (git-ignored) on Debian's python3, with the PyPI packages they compare against, pinned:
#   tokenizers    Hugging Face's tokenizer (token ids must equal ours)
#   numpy         the independent float reference forward pass (tests/text/reference.py)
#   onnxruntime   the speed baseline of strata-bench-text
# Idempotent: returns at once when the venv holds these versions. Prints the venv's python
# on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly VENV="${STRATA_TEXT_VENV:-$PWD/.tools/text-venv}"
readonly REQUIREMENTS="numpy==2.2.6 tokenizers==0.21.1 onnxruntime==1.22.0"

if [ "$(cat "$VENV/.requirements" 2>/dev/null)" = "$REQUIREMENTS" ] && [ -x "$VENV/bin/python" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
/usr/bin/python3 -m venv --help >/dev/null 2>&1 || {
  echo "text-python-env: needs python3-venv (scripts/setup.sh installs it)" >&2; exit 1; }
echo "text-python-env: creating $VENV with $REQUIREMENTS (PyPI)" >&2
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"
# shellcheck disable=SC2086  # the list is split on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
  $REQUIREMENTS >&2
echo "$REQUIREMENTS" > "$VENV/.requirements"
echo "$VENV/bin/python"
