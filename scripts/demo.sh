#!/usr/bin/env bash
# The Strata demo, from a fresh Debian 12 machine:
#   1. fit the lower tier in one step (and an initial readout) on the first 30,000 Fashion-MNIST
#      training images;
#   2. start strata-server on that bundle;
#   3. measure test accuracy, stream the other 30,000 training images through Update, measure again.
# Work files go to ${STRATA_DEMO_DIR:-build/demo}. Extra arguments go to strata-train (for example
# --spec=specs/default.spec, which overrides the demo's specs/fast.spec).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh strata-train strata-server strata

bin="${STRATA_BUILD_DIR:-build}/bin"
dir="${STRATA_DEMO_DIR:-build/demo}"
mkdir -p "$dir"
source scripts/lib/serve.sh

echo
echo "== 1. one-step fit on the first 30,000 training images"
"$bin/strata-train" --train=fashion-mnist:train --train_limit=30000 --test=fashion-mnist:test \
  --spec=specs/fast.spec --out="$dir/model.bundle" "$@" | tee "$dir/train.log"

echo
echo "== 2. strata-server"
trap serve_stop_all EXIT
serve_start server "$dir" "$bin/strata-server" --bundle="$dir/model.bundle" --address=127.0.0.1:0
address="127.0.0.1:$server_port"
client=("$bin/strata" --server="$address")
"${client[@]}" health --wait=60s
"${client[@]}" info

echo
echo "== 3. test accuracy before the update"
"${client[@]}" predict --data=fashion-mnist:test | tee "$dir/before.log"

echo
echo "== 4. Update: stream the other 30,000 training images"
"${client[@]}" update --data=fashion-mnist:train --offset=30000 --limit=30000 --batch=500 \
  | tee "$dir/update.log"

echo
echo "== 5. test accuracy after the update"
"${client[@]}" predict --data=fashion-mnist:test | tee "$dir/after.log"
"${client[@]}" stats

serve_stop server
trap - EXIT

echo
echo "== summary"
grep '^fit' "$dir/train.log"
echo "test accuracy before update: $(awk '/^accuracy/ {print $2}' "$dir/before.log")"
echo "update:                      $(grep -m1 -E '^[0-9.]+ s \(' "$dir/update.log")"
echo "test accuracy after update:  $(awk '/^accuracy/ {print $2}' "$dir/after.log")"
