#!/usr/bin/env bash
# The fuzz lane: every decoder target of rustre-fuzz (fuzz-stable/) for a fixed time each, in
# release mode with overflow checks and debug assertions on (so arithmetic overflow is a
# finding, not a silent wrap). A panic, a hang (one input over 1 s) or an input allocating more
# than 64 MiB fails the lane with the target, the seed and the input in hex.
#
#   RUSTRE_FUZZ_SECONDS   seconds per target (default 8: 17 targets, about 2.5 minutes)
#   RUSTRE_FUZZ_SEED      run seed (default: the clock; printed, so a failure can be rerun)
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${RUSTRE_FUZZ_SECONDS:-8}
seed=${RUSTRE_FUZZ_SEED:-$(date +%s)}

echo "fuzz: building rustre-fuzz (release, overflow checks, debug assertions)"
# A target directory of its own: these flags would otherwise rebuild the release artifacts
# other lanes use.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/fuzz
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
cargo build --locked -q --release -p rustre-fuzz

echo "fuzz: seed $seed, $secs s per target (rerun one: RUSTRE_FUZZ_SEED=$seed $0, or see the replay line)"
"$CARGO_TARGET_DIR/release/rustre-fuzz" --seconds "$secs" --seed "$seed" --timeout-ms 1000 --alloc-limit-mb 64
