#!/usr/bin/env bash
# Makes the project's Python environment, .tools/venv: Debian's python3 (3.11) with the PyPI
# packages the Python client and its tests need, pinned in client/python/requirements-dev.txt
# (grpcio, grpcio-tools, protobuf, numpy, pytest, and tritonclient[grpc], the third-party KServe v2
# client the KServe tests use), then the Python client package itself (client/python), built from
# this tree (its build generates the strata.v1 stubs from proto/ with grpcio-tools).
#
# Idempotent and safe to run concurrently (ctest runs tests in parallel): a lock serialises runs;
# the PyPI packages are installed only when the pinned list changed, the client package on every
# run (a few seconds) so that it always matches the tree. Prints the venv's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly VENV="${STRATA_VENV:-$PWD/.tools/venv}"
readonly REQUIREMENTS="$PWD/client/python/requirements-dev.txt"
readonly STAMP="$VENV/.requirements"
mkdir -p "$(dirname "$VENV")"

exec 9>"$VENV.lock"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
  # Debian's python3 with its venv module (python3-venv, scripts/setup.sh), not a pyenv shim.
  /usr/bin/python3 -m venv "$VENV" >&2
fi
if ! cmp -s "$REQUIREMENTS" "$STAMP"; then
  echo "python-env: installing $(grep -cv '^\s*\(#\|$\)' "$REQUIREMENTS") pinned packages into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2
  cp "$REQUIREMENTS" "$STAMP"
fi
# --no-build-isolation: build with the venv's pinned setuptools and grpcio-tools, no download.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  --no-build-isolation --force-reinstall "$PWD/client/python" >&2
echo "$VENV/bin/python"
