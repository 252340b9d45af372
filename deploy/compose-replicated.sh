#!/usr/bin/env bash
# Runs deploy/compose-replicated.yaml, unchanged, on this host with Debian's podman-compose and
# rootful podman (deploy/image.sh's engine settings and storage), and proves it from outside:
#
#   deploy/compose-replicated.sh [BIN]
#
#   1. the strata image: deploy/image.sh build (skipped with STRATA_SKIP_IMAGE_BUILD=1 if
#      ${STRATA_IMAGE:-localhost/strata:latest} exists); the nats:2.9.10 image the file names, built here from
#      Debian 12's nats-server 2.9.10 package (no registry is reachable from this machine);
#   2. `podman-compose up -d --no-build` on a copy of the compose file and deploy/nats/ in a work
#      directory, with a bundle fitted by BIN/strata-train (default build/bin) in its models/;
#   3. waits until the three replicas (host ports 50051-50053) report SERVING, streams 300 samples
#      through strata-1 with BIN/strata, and checks that all three serve the same model version at
#      the same log position with the same statistics digest;
#   4. `podman-compose down -v`. Prints each step and PASS / FAIL.
#
# Needs root; exits 77 (skipped) without mount namespaces, like deploy/image.sh.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(cd "${1:-${STRATA_BUILD_DIR:-$src/build}/bin}" && pwd)"
dir="${STRATA_PODMAN_DIR:-/var/tmp/strata-podman}"
say() { echo "compose: $*"; }
[ "$(id -u)" = 0 ] || { say "needs root (rootful podman)"; exit 2; }
if ! unshare --mount --propagation private true 2>/dev/null; then
  say "SKIP: no mount namespaces here: no container engine can run"
  exit 77
fi
[ -x "$bin/strata" ] && [ -x "$bin/strata-train" ] || { say "needs strata and strata-train in $bin"; exit 2; }

# ---- images -------------------------------------------------------------------------------------
if [ "${STRATA_SKIP_IMAGE_BUILD:-0}" != 1 ] || [ ! -f "$dir/containers.conf" ]; then
  "$src/deploy/image.sh" build
fi
export CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf"
podman image exists "${STRATA_IMAGE:-localhost/strata:latest}" || "$src/deploy/image.sh" build
if ! command -v podman-compose > /dev/null; then
  say "installing podman-compose"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman-compose > /dev/null
fi
if ! podman image exists docker.io/library/nats:2.9.10; then
  say "building nats:2.9.10 from Debian 12's nats-server package"
  mkdir -p "$dir/nats-image"
  printf '%s\n' 'FROM docker.io/library/debian:12-slim' \
    'RUN apt-get update -qq && apt-get install -y -qq nats-server && rm -rf /var/lib/apt/lists/*' \
    'ENTRYPOINT ["nats-server"]' > "$dir/nats-image/Containerfile"
  podman build --pull=never --network=host --format docker -t docker.io/library/nats:2.9.10 \
    "$dir/nats-image" > "$dir/nats-build.log" 2>&1 \
    || { tail -20 "$dir/nats-build.log"; say "FAIL: nats image"; exit 1; }
fi

# ---- up -----------------------------------------------------------------------------------------
work="$(mktemp -d /tmp/strata_compose.XXXXXX)"
project="strata-compose-$$"
compose=(podman-compose -p "$project" -f "$work/compose-replicated.yaml")
cleanup() {
  # `down -v` (podman-compose 1.0.3) leaves the anonymous volumes of the image's VOLUME lines.
  local volumes
  volumes="$(podman ps -a --filter "name=${project}_" --format '{{.ID}}' \
    | xargs -r podman inspect --format '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}')"
  "${compose[@]}" down -v > "$work/down.log" 2>&1 || true
  for v in $volumes; do podman volume rm -f "$v" > /dev/null 2>&1 || true; done
  podman network rm -f "${project}_default" > /dev/null 2>&1 || true
  [ "${STRATA_KEEP_COMPOSE_DIR:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
fail() {
  say "FAIL: $*"
  local c
  for c in nats-1 strata-1 strata-2 strata-3; do
    echo "--- $c"; podman logs --tail 15 "${project}_${c}_1" 2>&1 || true
  done
  exit 1
}
# STRATA_IMAGE (as deploy/image.sh): another tag than the file's strata:latest, e.g. so that
# concurrent image builds on one machine do not swap images under a run; the file is otherwise
# run as it is.
sed "s|^\(  image: \)strata:latest$|\1${STRATA_IMAGE:-strata:latest}|" \
  "$src/deploy/compose-replicated.yaml" > "$work/compose-replicated.yaml"
mkdir -p "$work/nats" "$work/models"
cp "$src/deploy/nats/nats.conf" "$work/nats/"
"$bin/strata-train" --train=fashion-mnist:train --train_limit=2000 --test= \
  --spec="$src/specs/small.spec" --out="$work/models/strata.bundle" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; fail "strata-train"; }
chmod -R a+rX "$work"
say "podman-compose up -d --no-build ($(podman-compose version 2>/dev/null | awk '/podman-compose/ {print $3; exit}'))"
start=$SECONDS
"${compose[@]}" up -d --no-build > "$work/up.log" 2>&1 || { tail -30 "$work/up.log"; fail "up"; }
for port in 50051 50052 50053; do
  until "$bin/strata" health --server="127.0.0.1:$port" --wait=2s --timeout=2s > /dev/null 2>&1; do
    [ $((SECONDS - start)) -lt 300 ] || fail "127.0.0.1:$port not SERVING after 300 s"
    sleep 1
  done
done
say "three replicas SERVING on 50051-50053 after $((SECONDS - start)) s; containers:" \
  "$(podman ps --filter "name=$project" --format '{{.Names}}' | sed "s/^${project}_//" | tr '\n' ' ')"

# ---- from outside -------------------------------------------------------------------------------
"$bin/strata" --server=127.0.0.1:50051 update --data=fashion-mnist:train --offset=2000 \
  --limit=300 --batch=100 > "$work/update.txt" || fail "Update through strata-1"
say "Update through strata-1: $(grep -m1 '^accepted' "$work/update.txt")"
summary() {  # version, log position and digest of the replica on port $1
  "$bin/strata" --server="127.0.0.1:$1" info \
    | awk '/^model version/ {v = $3} /^log position/ {p = $3} /^statistics/ {d = $2}
           END {print "version " v ", log position " p ", " d}'
}
first="$(summary 50051)"
for port in 50052 50053; do
  for _ in $(seq 1 100); do [ "$(summary $port)" = "$first" ] && break; sleep 0.1; done
  [ "$(summary $port)" = "$first" ] || fail "127.0.0.1:$port serves $(summary $port), strata-1 $first"
done
say "all three replicas: $first"
say "PASS"
