# Sourced by ci/lanes/capi.sh and ci/lanes/mpi.sh: a local rustre cluster of real `mdsd` and
# `ostd` processes (target/debug) on /dev/shm files, listening on 127.0.0.1 only.
#
#   cluster_start NUM_OSTS      formats, starts, waits until every daemon serves; writes
#                               $CLUSTER_DIR/client.toml
#   CLUSTER_OST_BYTES           size of each OST device file (default 256 MiB)
#   CLUSTER_OST_WORKERS         ostd worker threads (default 2)
#   cluster_stop                stops the daemons by pid (also run from the EXIT trap)
#
# Needs: BIN (directory of mdsd/ostd), CLUSTER_DIR (scratch directory).

CLUSTER_PIDS=()

cluster_wait_line() { # FILE PATTERN PID: waits up to 30 s for PATTERN in FILE while PID lives
  local file=$1 pattern=$2 pid=$3 i
  for ((i = 0; i < 300; i++)); do
    if grep -q "$pattern" "$file" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "daemon $pid exited before serving; its log:" >&2
      cat "$file" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file" >&2
  cat "$file" >&2
  return 1
}

cluster_start() {
  local n=$1 i addr osts=()
  mkdir -p "$CLUSTER_DIR"
  local shm=/dev/shm/rustre-lane-$$
  CLUSTER_SHM=$shm
  for ((i = 0; i < n; i++)); do
    "$BIN/ostd" mkfs --index "$i" --fsname lanefs "$shm-ost$i" --size "${CLUSTER_OST_BYTES:-$((256 << 20))}" >/dev/null
    "$BIN/ostd" serve --device "$shm-ost$i" --listen tcp://127.0.0.1:0 --node lane \
      --workers "${CLUSTER_OST_WORKERS:-2}" --mmp-interval-ms 200 >"$CLUSTER_DIR/ost$i.log" 2>&1 &
    CLUSTER_PIDS+=($!)
    cluster_wait_line "$CLUSTER_DIR/ost$i.log" "ostd: serving OST$i on" $! || return 1
    addr=$(grep -o "ostd: serving OST$i on [^ ]*" "$CLUSTER_DIR/ost$i.log" | awk '{print $5}')
    osts+=(--ost "$i=$addr")
  done
  "$BIN/mdsd" mkfs --fsname lanefs --size $((64 << 20)) "$shm-mdt" >/dev/null
  "$BIN/mdsd" serve --device "$shm-mdt" --listen tcp://127.0.0.1:0 --node lane \
    --mmp-interval-ms 200 "${osts[@]}" >"$CLUSTER_DIR/mds.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  cluster_wait_line "$CLUSTER_DIR/mds.log" "mdsd: serving on" $! || return 1
  addr=$(grep -o "mdsd: serving on [^ ]*" "$CLUSTER_DIR/mds.log" | awk '{print $4}')
  printf 'fsname = "lanefs"\nmds = ["%s"]\n\n[client]\nmax_inflight_per_ost = 8\n' "$addr" >"$CLUSTER_DIR/client.toml"
  CLUSTER_MDS=$addr
}

cluster_stop() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${CLUSTER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  CLUSTER_PIDS=()
  if [ -n "${CLUSTER_SHM:-}" ]; then rm -f "$CLUSTER_SHM"-*; fi
}
