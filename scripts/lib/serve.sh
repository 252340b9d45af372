# Shell helpers for scripts that start strata processes: sourced, not run.
#
#   source "$src/scripts/lib/serve.sh"
#   serve_start NAME WORK_DIR COMMAND [ARGS...]
#       Starts COMMAND ARGS --port_file=WORK_DIR/NAME.port in the background (stdout to
#       WORK_DIR/NAME.out, stderr to WORK_DIR/NAME.log, OMP_WAIT_POLICY=PASSIVE so idle OpenMP
#       threads do not spin), waits until it has written its port, and sets NAME_pid and NAME_port.
#       If it exits first, prints its log and exits $SERVE_FAIL_STATUS (default 1). The process
#       is killed by serve_stop_all.
#   serve_stop NAME          SIGTERM to NAME and wait for it; returns its exit status.
#   serve_stop_all           SIGTERM to every process still running (for an EXIT trap).
#   serve_train_bundle BIN_DIR OUT SPEC IMAGES
#       strata-train on the first IMAGES Fashion-MNIST training images with SPEC, no test set;
#       its output goes to OUT.log and is printed if it fails.
# How long serve_start waits for the port (seconds; a model load on a busy machine can be slow).
SERVE_START_SECONDS="${SERVE_START_SECONDS:-300}"
SERVE_FAIL_STATUS="${SERVE_FAIL_STATUS:-1}"
serve_pids=()

serve_start() {
  local name="$1" work="$2"; shift 2
  rm -f "$work/$name.port"
  OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" "$@" --port_file="$work/$name.port" \
    > "$work/$name.out" 2> "$work/$name.log" &
  local pid=$!
  serve_pids+=("$pid")
  local _
  for _ in $(seq 1 $((SERVE_START_SECONDS * 10))); do
    [ -s "$work/$name.port" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$work/$name.log" >&2
      echo "$name exited during start-up" >&2
      exit "$SERVE_FAIL_STATUS"
    fi
    sleep 0.1
  done
  [ -s "$work/$name.port" ] || { echo "$name wrote no port in ${SERVE_START_SECONDS}s" >&2; exit "$SERVE_FAIL_STATUS"; }
  printf -v "${name}_pid" '%s' "$pid"
  printf -v "${name}_port" '%s' "$(cat "$work/$name.port")"
}

serve_stop() {
  local pid_var="${1}_pid"
  local pid="${!pid_var}" status=0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || status=$?
  return "$status"
}

serve_stop_all() {
  local pid
  for pid in "${serve_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${serve_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

serve_train_bundle() {
  local bin="$1" out="$2" spec="$3" images="$4"
  "$bin/strata-train" --train=fashion-mnist:train --train_limit="$images" --test= \
    --spec="$spec" --out="$out" > "$out.log" 2>&1 || { cat "$out.log" >&2; exit "$SERVE_FAIL_STATUS"; }
}
