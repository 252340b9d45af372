#!/usr/bin/env bash
# Configures and builds Strata (Release, Ninja) into ${STRATA_BUILD_DIR:-build}.
# Extra arguments are passed to the build, e.g. a list of targets.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${STRATA_BUILD_DIR:-build}"
if [ ! -f "$build_dir/build.ninja" ]; then
  # The "release" preset of CMakePresets.json (Ninja, Release), in $build_dir.
  cmake --preset release -B "$build_dir" ${STRATA_CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -- "$@"
