#!/usr/bin/env bash
# Lane: `rustre-bench io500` over verbs inside the ci/rxe soft-RoCE VM: the bench brings a local
# cluster up inside the VM with `--fabric verbs` on rxe0's address, runs the phases with rank
# processes it starts itself, the POSIX baseline and the ceilings (perftest for verbs), and writes
# JSON to the shared directory; the lane checks every phase has a positive figure, nothing failed
# to verify, and the score is positive.
#   RUSTRE_SKIP_RXE=1  skip this lane (local iteration only; CI never sets it)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=../deps.sh
source ci/deps.sh

if [ "${RUSTRE_SKIP_RXE:-0}" = 1 ]; then
  echo "io500-rxe lane: skipped (RUSTRE_SKIP_RXE=1)"
  exit 0
fi

rustre_lane_build release
BIN=$ROOT/target/release
share=${RUSTRE_RXE_SHARE:-$ROOT/target/rxe-share}
mkdir -p "$share"
json=$share/io500-verbs.json
rm -f "$json"

RUSTRE_BIN_DIR=$BIN RUSTRE_RXE_SHARE=$share "$ROOT/ci/rxe" bash -c '
  set -euo pipefail
  echo "== rustre-bench io500 --fabric verbs on $RUSTRE_RXE_DEVICE ($RUSTRE_RXE_ADDR)"
  # The VM'"'"'s own file systems (tmpfs under an overlay, kernel 6.1) refuse O_DIRECT, which the
  # OSTs need: their devices go to the directory shared with the host.
  export TMPDIR=$RUSTRE_RXE_SHARE/io500-tmp
  rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
  "$1/rustre-bench" io500 --fabric verbs --host "$RUSTRE_RXE_ADDR" --launcher self --size 0.1 --stonewall 3 \
    --ranks 2 --cluster-dir "$TMPDIR" --json "$2"
' io500-rxe-lane "$BIN" "$json"

rm -rf "$share/io500-tmp"
[ -s "$json" ] || { echo "io500-rxe lane: the benchmark wrote no $json" >&2; exit 1; }
python3 - "$json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
bad = [n for n, p in j["phases"].items() if not p["value"] > 0]
assert len(j["phases"]) == 12 and not bad, f"phases without a positive figure: {bad}"
assert j["verification_failures"] == 0, "verification failures"
assert j["score"] > 0, f"score {j['score']}"
print(f"io500-rxe lane: score {j['score']:.3f} (bandwidth {j['bandwidth_gib_s']:.3f} GiB/s, "
      f"metadata {j['metadata_kiops']:.3f} kIOPS) over verbs")
PY
