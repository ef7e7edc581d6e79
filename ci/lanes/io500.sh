#!/usr/bin/env bash
# Lane: `rustre-bench io500` once over tcp. The bench brings a local cluster up on a scratch
# directory (`rustre cluster up`), runs the IO500 phases with rank processes (under mpirun when it
# is installed), the POSIX baseline on /dev/shm, fio, the transport ceiling and the tcp-to-device
# pipeline on the same CPUs, brings the cluster down, and writes JSON; the lane checks every phase
# has a positive figure, nothing failed to verify, the score is positive and every ceiling has a
# figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../deps.sh
source ci/deps.sh
# Release binaries (the io500-rxe and rxe lanes build the same ones), so the figures printed are
# the ones the targets speak of; size 1 takes a few seconds here.
rustre_lane_build release
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/rustre-io500-lane.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

RUSTRE_BIN_DIR="$BIN" "$BIN/rustre-bench" io500 --fabric tcp --size 1 --ranks 2 \
  --json "$OUT/io500.json" --plot "$OUT/io500.svg"

python3 - "$OUT/io500.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
bad = [n for n, p in j["phases"].items() if not p["value"] > 0]
assert len(j["phases"]) == 12 and not bad, f"phases without a positive figure: {bad}"
assert j["verification_failures"] == 0, "verification failures"
assert j["score"] > 0, f"score {j['score']}"
print(f"io500 lane: score {j['score']:.3f} (bandwidth {j['bandwidth_gib_s']:.3f} GiB/s, "
      f"metadata {j['metadata_kiops']:.3f} kIOPS), launched by {j['launched_by']}")
ph, b = j["phases"], j["baselines"]
for d in ("write", "read"):
    ceiling = min(b["device"][f"{d}_gib_s"], b["transport"][f"{d}_gib_s"])
    easy, hard = ph[f"ior-easy-{d}"]["value"], ph[f"ior-hard-{d}"]["value"]
    pipe = b["tcp_to_device"][f"{d}_gib_s"]
    assert pipe > 0, f"tcp-to-device {d} ceiling {pipe}"
    print(f"io500 lane: ior-easy-{d} {easy:.3f} GiB/s = {easy / ceiling:.2f}x min(device, transport) "
          f"{ceiling:.3f}, {easy / pipe:.2f}x tcp-to-device {pipe:.3f} ({pipe / ceiling:.2f}x the min); "
          f"ior-hard-{d} {hard:.3f} GiB/s = {hard / easy:.2f}x ior-easy")
PY
grep -q "<svg" "$OUT/io500.svg"
