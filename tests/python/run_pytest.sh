#!/usr/bin/env bash
# Runs one pytest suite of tests/python against the build in BUILD_DIR, in the project's venv
# (scripts/python-env.sh makes it, with the pinned PyPI packages and the Python client package).
#
# Usage: run_pytest.sh BUILD_DIR SOURCE_DIR TEST_FILE [pytest args...]   (ctest passes them)
set -euo pipefail
build_dir="$1" source_dir="$2" test_file="$3"
shift 3
python="$("$source_dir/scripts/python-env.sh" | tail -n 1)"
export STRATA_BUILD_DIR="$build_dir" STRATA_SOURCE_DIR="$source_dir"
# -p no:cacheprovider: no .pytest_cache in the source tree.
exec "$python" -m pytest -p no:cacheprovider -v "$source_dir/tests/python/$test_file" "$@"
