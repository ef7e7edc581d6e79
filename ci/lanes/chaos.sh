#!/usr/bin/env bash
# The chaos lane: the failover tests with 20 kill -9 failovers each instead of 3 (the normal
# suite's count): the active MDS of a pair under a create/write/unlink storm through the Rust
# client, then the active OSS of a pair under a streaming write and small-file creates. Every
# acknowledged operation and byte must survive, `mdsd check` and `ostd check` must be clean.
# Then the same for a whole local cluster run as pairs (`rustre cluster up --ha`), killing the
# active MDS and an active OSS alternately with `rustre cluster fail` under one streaming write
# and one create/unlink storm.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=../deps.sh
source ci/deps.sh

export RUSTRE_CHAOS_FAILOVERS=${RUSTRE_CHAOS_FAILOVERS:-20}
echo "chaos: $RUSTRE_CHAOS_FAILOVERS MDS failovers"
# Selected by filter from the workspace's test build, which is then not built again.
cargo nextest run --workspace --locked -E 'binary_id(rustre-mdsd::client_failover)' --no-capture
echo "chaos: $RUSTRE_CHAOS_FAILOVERS OSS failovers"
cargo nextest run --workspace --locked -E 'binary_id(rustre-ostd::failover)' --no-capture
echo "chaos: $RUSTRE_CHAOS_FAILOVERS failovers of an HA local cluster (rustre cluster up --ha / fail), MDS and OSS alternately, under one stream + storm"
cargo nextest run --workspace --locked -E 'binary_id(rustre-cli::chaos)' --no-capture
echo "chaos: rustre-bench failover (MDS and OSS pairs as processes, kills alternating)"
rustre_lane_build debug
JSON=$(mktemp /tmp/rustre-failover.XXXXXX)
trap 'rm -f "$JSON"' EXIT
target/debug/rustre-bench failover --trials 10 --json "$JSON"
cat "$JSON"
