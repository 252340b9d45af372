#!/usr/bin/env bash
# Runs deploy/Dockerfile's build and run steps on this Debian 12 machine, without a Docker engine:
# the build stage's RUN steps in a copy of the repository (the COPY context, minus
# Dockerfile.dockerignore), the runtime stage's steps into a root-like directory (the artefacts
# copied where COPY --from says), then starts the result as the image would (ENTRYPOINT + CMD, ENV,
# as the non-root USER, with its VOLUME) and runs the HEALTHCHECK command until it reports healthy,
# then SIGTERM: the server must exit 0. Any failing Dockerfile step fails this script.
#
# The base images (debian:12, debian:12-slim) are this machine's own Debian 12 directories, used
# as the read-only lower layers of copy-on-write overlays: the steps' writes (apt, useradd, mkdir,
# the build tree) land in the work directory, never on the host. Everything is mounted inside a
# private mount namespace that disappears with the script; the server runs in its own network
# namespace (loopback only), so its fixed port cannot collide with anything on the machine.
# Needs root (mounts, chroot, dropping to the image's USER), as `docker build` does.
# deploy/dockerfile_steps.py does the work; docs/operations.md, "Running the Dockerfile without
# Docker", lists what each instruction becomes.
#
# Usage: deploy/run-dockerfile-steps.sh [--bundle=PATH] [--keep]
#   --bundle: the model to serve at /models/strata.bundle (default: a small one trained by the
#             image's own strata-train); --keep: keep the work directory (server log, volume).
set -euo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle=""
keep=0
for arg in "$@"; do
  case "$arg" in
    --bundle=*) bundle="$(realpath "${arg#*=}")" ;;
    --keep) keep=1 ;;
    *) sed -n '/^# Usage/,/^#   --bundle.*$/p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "run-dockerfile-steps: needs root (overlay mounts, chroot, setpriv), as docker build does" >&2
  exit 2
fi

work="$(mktemp -d /tmp/strata_dockerfile_steps.XXXXXX)"
cleanup() {
  # The mounts lived in the namespace of the python process, which has exited: only plain
  # directories are left here (--one-file-system guards against a surprise anyway).
  if [ "$keep" = 1 ]; then echo "run-dockerfile-steps: work directory kept: $work"
  else rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT

start=$(date +%s)
status=0
# nice: the build step compiles with every core; other work on the machine keeps its share.
nice -n 10 unshare --mount --propagation private \
  python3 "$src/deploy/dockerfile_steps.py" --work="$work" --context="$src" \
  --dockerfile="$src/deploy/Dockerfile" --bundle="$bundle" || status=$?
echo "run-dockerfile-steps: $([ "$status" = 0 ] && echo PASS || echo FAIL) after $(( $(date +%s) - start )) s"
exit "$status"
