#!/usr/bin/env bash
# Installs ghz (the gRPC load generator, https://ghz.sh) into the project-local .tools/bin with
# `go install`. Idempotent: when .tools/bin/ghz is already the pinned version it returns at once.
# Prints the path of the ghz binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly GHZ_VERSION="v0.121.0"
readonly GOBIN_DIR="${STRATA_TOOLS_BIN:-$PWD/.tools/bin}"
readonly GHZ="$GOBIN_DIR/ghz"

# `go install` builds report version "dev", so the installed version is kept in a stamp file.
readonly STAMP="$GOBIN_DIR/.ghz-version"
if [ -x "$GHZ" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$GHZ_VERSION" ]; then
  echo "$GHZ"
  exit 0
fi

# The Go toolchain of this kind of machine lives in /usr/local/go (Debian's golang-go is too old for
# ghz, which needs Go 1.23); a non-interactive shell may not have it on PATH.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install-ghz: go (1.23 or newer) is not installed; it builds ghz" >&2; exit 1; }
mkdir -p "$GOBIN_DIR"
echo "install-ghz: go install github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION into $GOBIN_DIR" >&2
GOBIN="$GOBIN_DIR" GOFLAGS="${GOFLAGS:-} -mod=mod" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >&2
"$GHZ" --help >/dev/null 2>&1  # it runs (kingpin prints help on stderr)
echo "$GHZ_VERSION" > "$STAMP"
echo "$GHZ"
