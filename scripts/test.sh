#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds Strata and runs the whole test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
# ghz for the load smoke test (tests/ghz_smoke_test.sh); fast when .tools/bin/ghz is present.
scripts/install-ghz.sh >/dev/null
# grpcurl for tests/grpcurl_test.sh, the same way.
scripts/install-grpcurl.sh >/dev/null
# The Python venv (.tools/venv: tritonclient, grpcio-tools, pytest, the Python client) for
# tests/python's pytest suites; fast when it is up to date.
scripts/python-env.sh >/dev/null
ctest --test-dir "${STRATA_BUILD_DIR:-build}" --output-on-failure --timeout 900 -j "$(nproc)"
# Then the whole suite under ASan+UBSan, the concurrency tests under TSan and each fuzzer for a
# bounded time (scripts/sanitize.sh; its own build directories). STRATA_SKIP_SANITIZERS=1 skips
# them for a quick local run.
if [ "${STRATA_SKIP_SANITIZERS:-0}" != 1 ]; then
  scripts/sanitize.sh
fi
