#!/usr/bin/env bash
# Replicated mode on one machine (docs/replication.md): a three-node NATS JetStream cluster
# (deploy/nats/nats.conf, ports overridden per node) and three strata-server replicas sharing its
# update log, on 127.0.0.1:50051, :50052 and :50053.
#
#   scripts/cluster.sh [--bundle=PATH] [--demo]
#
# Without --bundle it fits one first (specs/fast.spec on 10,000 Fashion-MNIST images). With --demo
# it streams 5,000 samples through the first replica, shows that all three serve the same model
# version at the same log position with the same statistics digest, and stops; otherwise it keeps
# the cluster running until Ctrl-C. Work files (NATS storage, logs) go to
# ${STRATA_CLUSTER_DIR:-build/cluster}; ports from ${STRATA_CLUSTER_PORT:-50051} (replicas) and
# ${STRATA_NATS_PORT:-14222} (NATS clients; routes at +2000, monitoring at +4000).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="" demo=false
for arg in "$@"; do
  case "$arg" in
    --bundle=*) bundle="${arg#--bundle=}" ;;
    --demo) demo=true ;;
    *) echo "usage: scripts/cluster.sh [--bundle=PATH] [--demo]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
scripts/build.sh strata-train strata-server strata

bin="${STRATA_BUILD_DIR:-build}/bin"
dir="${STRATA_CLUSTER_DIR:-build/cluster}"
port="${STRATA_CLUSTER_PORT:-50051}"
nats_port="${STRATA_NATS_PORT:-14222}"
mkdir -p "$dir"
source scripts/lib/serve.sh
trap serve_stop_all EXIT

if [ -z "$bundle" ]; then
  echo "== fitting a model (specs/fast.spec, 10,000 images) into $dir/model.bundle"
  serve_train_bundle "$bin" "$dir/model.bundle" specs/fast.spec 10000
  bundle="$dir/model.bundle"
fi

echo "== three NATS JetStream nodes (clients on 127.0.0.1:$nats_port..$((nats_port + 2)))"
routes="[$(for i in 0 1 2; do printf 'nats://127.0.0.1:%d,' $((nats_port + 2000 + i)); done)]"
routes="${routes/,]/]}"
urls=""
for i in 0 1 2; do
  mkdir -p "$dir/nats-$i"
  SERVER_NAME="nats-$i" ROUTES="$routes" STORE_DIR="$dir/nats-$i" \
    nats-server -c deploy/nats/nats.conf -a 127.0.0.1 -p $((nats_port + i)) \
      -m $((nats_port + 4000 + i)) --cluster "nats://127.0.0.1:$((nats_port + 2000 + i))" \
      > "$dir/nats-$i.log" 2>&1 &
  serve_pids+=("$!")
  urls="${urls:+$urls,}nats://127.0.0.1:$((nats_port + i))"
done

echo "== three strata-server replicas (127.0.0.1:$port..$((port + 2)))"
for i in 0 1 2; do
  # Started one after the other: each waits for the JetStream cluster and catches up first.
  serve_start "replica$i" "$dir" "$bin/strata-server" --bundle="$bundle" \
    --address="127.0.0.1:$((port + i))" --nats_servers="$urls" --replica_id="replica-$i" \
    --max_message_bytes=4194304
  "$bin/strata" --server="127.0.0.1:$((port + i))" health --wait=120s
done

if $demo; then
  echo "== Update through replica-0: 5,000 samples"
  "$bin/strata" --server="127.0.0.1:$port" update --data=fashion-mnist:train --offset=20000 \
    --limit=5000 --batch=500
  # Every replica absorbs the samples and refreshes at the stream's marker: wait for all three.
  for _ in $(seq 1 240); do
    positions="$(for i in 0 1 2; do
      "$bin/strata" --server="127.0.0.1:$((port + i))" info | awk '/^log position/ {print $3}'
    done | sort -u)"
    [ "$(echo "$positions" | wc -l)" = 1 ] && [ "$positions" != 0 ] && break
    sleep 0.5
  done
  for i in 0 1 2; do
    echo "-- replica-$i"
    "$bin/strata" --server="127.0.0.1:$((port + i))" info \
      | grep -E '^(model version|samples seen|log position|statistics)'
  done
  exit 0
fi
echo
echo "Running. Try, in another shell:"
echo "  $bin/strata --server=127.0.0.1:$port update --data=fashion-mnist:train --offset=20000 --limit=5000"
echo "  $bin/strata --server=127.0.0.1:$((port + 1)) info     # same version, log position, digest"
echo "  $bin/strata --server=127.0.0.1:$((port + 2)) stats"
echo "Logs in $dir. Ctrl-C stops everything."
wait
