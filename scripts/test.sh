#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds Strata and runs the whole test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
# ghz for the load smoke test (tests/ghz_smoke_test.sh); fast when .tools/bin/ghz is present.
scripts/install-ghz.sh >/dev/null
ctest --test-dir "${STRATA_BUILD_DIR:-build}" --output-on-failure --timeout 900 -j "$(nproc)"
