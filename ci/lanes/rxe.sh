#!/usr/bin/env bash
# The soft-RoCE lane: builds the verbs tests and rustre-bench on the host, then runs them inside the
# ci/rxe VM (rxe0 on dummy0), where an RDMA device exists, so a skipped verbs test is a failure
# (RUSTRE_REQUIRE_RDMA=1). Ends with `rustre-bench fabric --provider verbs` beside perftest.
#   RUSTRE_SKIP_RXE=1  skip this lane (local iteration only; CI never sets it)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=../deps.sh
source ci/deps.sh

if [ "${RUSTRE_SKIP_RXE:-0}" = 1 ]; then
  echo "rxe lane: skipped (RUSTRE_SKIP_RXE=1)"
  exit 0
fi

echo "rxe lane: building the verbs tests and rustre-bench"
# Test binaries that have verbs tests: the conformance suite (tests/verbs.rs), rkey scope and
# caller-chosen xids (integration tests), and the hostile-peer checks in the unit tests (verbs::).
tests=$(rustre_test_exe rustre-fabric verbs)
rkey_tests=$(rustre_test_exe rustre-fabric rkey_scope)
xid_tests=$(rustre_test_exe rustre-fabric xid)
unit_tests=$(rustre_test_exe rustre-fabric lib)
for t in "$tests" "$rkey_tests" "$xid_tests" "$unit_tests"; do
  [ -x "$t" ] || { echo "rxe lane: a verbs test binary was not built" >&2; exit 1; }
done
rustre_lane_build release
bench=$ROOT/target/release/rustre-bench

share=${RUSTRE_RXE_SHARE:-$ROOT/target/rxe-share}
mkdir -p "$share"
json=$share/fabric-verbs.json
rm -f "$json"

# Inside the VM: every verbs test must run and pass, then the benchmark writes its JSON to the
# shared directory (the only path that outlives the VM).
RUSTRE_REQUIRE_RDMA=1 RUSTRE_RXE_SHARE=$share "$ROOT/ci/rxe" bash -c '
  set -euo pipefail
  echo "== verbs conformance tests on $RUSTRE_RXE_DEVICE ($RUSTRE_RXE_ADDR)"
  "$1" --test-threads=2
  echo "== rkey scope, caller-chosen xids and hostile peers over verbs"
  "$4" --test-threads=1 verbs_
  "$5" --test-threads=1 verbs_
  "$6" --test-threads=1 verbs::
  echo "== rustre-bench fabric --provider verbs (clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown))"
  "$2" fabric --provider verbs --listen "verbs://$RUSTRE_RXE_ADDR:0" --seconds 1 --json "$3"
' rxe-lane "$tests" "$bench" "$json" "$rkey_tests" "$xid_tests" "$unit_tests"

[ -s "$json" ] || { echo "rxe lane: the benchmark wrote no $json" >&2; exit 1; }
echo "rxe lane: $json"
cat "$json"
