#!/usr/bin/env bash
# Lane: the README's first command at a small size. Brings a local cluster up on a temporary data
# directory, runs the demo workload through librustre (writes, reads back and verifies a striped
# file, creates/stats/unlinks small files), checks every daemon is stopped afterwards, and always
# brings the cluster down and removes the directory, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../deps.sh
source ci/deps.sh
# The dev profile (dependencies at opt-level 2) keeps this lane to seconds on two cores; the
# release build is the quickstart's.
rustre_lane_build debug
RUSTRE="${CARGO_TARGET_DIR:-$PWD/target}/debug/rustre"
DATA=$(mktemp -d "${TMPDIR:-/tmp}/rustre-cluster-lane.XXXXXX")
cleanup() {
  local rc=$?
  "$RUSTRE" cluster down --data "$DATA" >/dev/null 2>&1 || true
  if [ "$rc" != 0 ]; then
    # The data directory goes away: show what the daemons said first.
    for log in "$DATA"/logs/*.log; do
      [ -e "$log" ] || continue
      echo "--- last lines of $log"
      tail -n 40 "$log"
    done
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

"$RUSTRE" demo --data "$DATA" --osts 4 --size-per-ost 1G --file-size 256M --small-files 500

# The demo brought the cluster down: status must show every daemon stopped (exit code 3).
set +e
"$RUSTRE" cluster status --data "$DATA"
rc=$?
set -e
if [ "$rc" != 3 ]; then
  echo "cluster lane: expected every daemon stopped after the demo (status exit 3), got exit $rc" >&2
  exit 1
fi
echo "cluster lane: demo passed and the cluster is down"
