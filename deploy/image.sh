#!/usr/bin/env bash
# Builds the strata-server image from deploy/Dockerfile with a real container engine and proves it
# from outside: Debian's podman (rootful, daemonless) with runc.
#
#   deploy/image.sh build        build localhost/strata:latest (and print its size)
#   deploy/image.sh test [BIN]   build, then: run it with a model bundle and a state volume, wait for
#                                its HEALTHCHECK to pass, call Predict and Update from outside the
#                                container (BIN/strata, default build/bin; BIN/strata-train fits the
#                                bundle), stop it (exit code 0), start a new container on the same
#                                volume and check that the update survived; also that the server
#                                runs as uid 10001. Prints each step and PASS / FAIL.
#
# What a Debian 12 machine without systemd or a registry needs, and this script sets up (once; in
# ${STRATA_PODMAN_DIR:-/var/tmp/strata-podman}, never in the user's podman configuration):
#   - podman, buildah, runc and debootstrap from Debian (installed with apt-get if missing);
#   - base images: the Dockerfile's FROM lines name debian:12 and debian:12-slim, made here with
#     `debootstrap --variant=minbase bookworm` from this machine's Debian mirror and
#     `podman import`ed under those names (builds use --pull=never: no registry is reachable);
#   - engine settings: cgroup_manager=cgroupfs and events_logger=file (no systemd), runtime=runc
#     (crun fails on this cgroup layout), ulimits no higher than the host's hard limits, host
#     networking (the container listens on a free loopback port), --format docker (the OCI format
#     drops HEALTHCHECK).
# The build stage's compiler cache is a buildah cache mount, so rebuilds after a change recompile
# only what changed; the base images and the apt layer are cached in the storage above.
#
# Needs root. Without mount namespaces (an unprivileged container) it exits 77 (ctest: skipped).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:-}"
bin="$(cd "${2:-${STRATA_BUILD_DIR:-$src/build}/bin}" 2>/dev/null && pwd || true)"
image="${STRATA_IMAGE:-localhost/strata:latest}"
dir="${STRATA_PODMAN_DIR:-/var/tmp/strata-podman}"
case "$mode" in build|test) ;; *) sed -n '2,10p' "$0" >&2; exit 2 ;; esac

say() { echo "image: $*"; }
[ "$(id -u)" = 0 ] || { say "needs root (rootful podman)"; exit 2; }
# A container engine needs mount namespaces; an unprivileged container (the clean-room debian:12)
# does not give them.
if ! unshare --mount --propagation private true 2>/dev/null; then
  say "SKIP: no mount namespaces here (an unprivileged container?): no container engine can run"
  exit 77
fi

# ---- the engine ---------------------------------------------------------------------------------
setup_engine() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing podman, buildah, runc, debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap >/dev/null
  fi
  mkdir -p "$dir"
  cat > "$dir/containers.conf" <<CONF
[containers]
netns = "host"
cgroupns = "host"
log_driver = "k8s-file"
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
  cat > "$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "/run/strata-podman"
graphroot = "$dir/storage"
CONF
  export CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf"
}

# debian:12 and debian:12-slim from this machine's mirror (one minbase root serves both names).
make_base_images() {
  podman image exists docker.io/library/debian:12 && podman image exists docker.io/library/debian:12-slim \
    && return 0
  local mirror root="$dir/rootfs"
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)"
  say "making the debian:12 base image with debootstrap from $mirror (once, a few minutes)"
  rm -rf "$root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" > "$dir/debootstrap.log" 2>&1 \
    || { tail -5 "$dir/debootstrap.log"; exit 1; }
  # The machine's apt sources and proxy settings, so that apt-get in the build reaches the mirror.
  rm -f "$root/etc/apt/sources.list"
  [ -f /etc/apt/sources.list.d/debian.sources ] && cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
  local f
  for f in /etc/apt/apt.conf.d/*; do
    case "$f" in *proxy*|*docker*|*artifact*) cp "$f" "$root/etc/apt/apt.conf.d/" ;; esac
  done
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  mkdir -p "$root/var/lib/apt/lists/partial"
  : > "$root/etc/resolv.conf"
  tar -C "$root" --numeric-owner -c . \
    | podman import -q --change 'CMD ["bash"]' - docker.io/library/debian:12 > /dev/null
  podman tag docker.io/library/debian:12 docker.io/library/debian:12-slim
  rm -rf "$root"
}

build_image() {
  local start=$SECONDS
  say "building $image from deploy/Dockerfile (podman build --format docker --pull=never)"
  podman build --pull=never --network=host --format docker -f "$src/deploy/Dockerfile" \
    -t "$image" "$src" > "$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; say "FAIL: build"; exit 1; }
  say "built in $((SECONDS - start)) s; size $(podman image inspect --format '{{.Size}}' "$image" \
    | awk '{printf "%.0f MB", $1 / 1e6}')"
}

setup_engine
make_base_images
build_image
[ "$mode" = test ] || exit 0

# ---- the test -----------------------------------------------------------------------------------
[ -x "$bin/strata" ] && [ -x "$bin/strata-train" ] \
  || { say "needs the host's strata and strata-train in $bin (build them first)"; exit 2; }
work="$(mktemp -d /tmp/strata_image_test.XXXXXX)"
name="strata-image-test-$$"
volume="$name-state"
cleanup() {
  podman rm -f -t 0 "$name" > /dev/null 2>> "$work/podman.log" || true
  podman volume rm -f "$volume" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { say "FAIL: $*"; podman logs "$name" 2>&1 | tail -20 || true; exit 1; }

mkdir -p "$work/models"
"$bin/strata-train" --train=fashion-mnist:train --train_limit=2000 --test= \
  --spec="$src/specs/small.spec" --out="$work/models/strata.bundle" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; fail "strata-train"; }
chmod -R a+rX "$work"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
address="127.0.0.1:$port"
client=("$bin/strata" --server="$address")

# start: a container on the state volume, serving on $address (host network), health-checked by
# the image's own HEALTHCHECK (STRATA_HEALTH_ADDRESS points it at the port).
start() {
  podman run -d --name "$name" --network=host -e STRATA_HEALTH_ADDRESS="$address" \
    -v "$work/models:/models:ro" -v "$volume:/var/lib/strata" "$image" \
    --bundle=/models/strata.bundle --address="$address" --state_dir=/var/lib/strata > /dev/null \
    2>> "$work/podman.log" || { cat "$work/podman.log"; fail "podman run"; }
  local t0=$SECONDS
  # No systemd timer runs HEALTHCHECKs here: run the image's check as the engine would.
  until podman healthcheck run "$name" > /dev/null 2>&1; do
    [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || fail "the server exited"
    [ $((SECONDS - t0)) -lt 300 ] || fail "not healthy after 300 s"
    sleep 1
  done
  say "container healthy after $((SECONDS - t0)) s ($(podman inspect --format '{{.State.Health.Status}}' "$name"))"
}

samples_seen() { "${client[@]}" info | awk '/^samples seen/ {print $3}'; }

start
uid="$(podman exec "$name" sh -c 'id -u')"
[ "$uid" = 10001 ] || fail "the server runs as uid $uid, expected 10001"
say "runs as uid $uid"
"${client[@]}" predict --data=fashion-mnist:test --limit=500 > "$work/predict.txt" || fail "Predict"
say "Predict from outside: $(grep -m1 -i accuracy "$work/predict.txt")"
before="$(samples_seen)"
"${client[@]}" update --data=fashion-mnist:train --offset=2000 --limit=300 --batch=100 \
  > "$work/update.txt" || fail "Update"
after="$(samples_seen)"
[ "$after" -eq $((before + 300)) ] || fail "samples seen $before -> $after after 300 updates"
say "Update from outside: samples seen $before -> $after"

# (podman logs that it cannot reach systemd to manage health-check timers: there is none here.)
podman stop -t 20 "$name" > /dev/null 2>> "$work/podman.log"
code="$(podman inspect --format '{{.State.ExitCode}}' "$name")"
[ "$code" = 0 ] || fail "podman stop: the server exited with $code, expected 0"
say "podman stop: exit code 0"
podman rm "$name" > /dev/null 2>> "$work/podman.log"

start
restarted="$(samples_seen)"
[ "$restarted" = "$after" ] || fail "after a restart on the same volume: samples seen $restarted, expected $after"
say "restarted on the same state volume: samples seen $restarted (the update survived)"
say "PASS"
