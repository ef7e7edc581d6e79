#!/usr/bin/env bash
# The C ABI lane: the committed header is current, test_capi.c builds with the system C compiler
# against librustre.so and librustre.a, and passes against a real local cluster (mdsd + ostd
# processes on /dev/shm files, 127.0.0.1 only).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=../deps.sh
source ci/deps.sh

echo "capi: header is current (cbindgen)"
cargo nextest run --workspace --locked -E 'binary_id(rustre-client::header)'

echo "capi: building librustre, mdsd, ostd"
rustre_lane_build debug
BIN=$ROOT/target/debug
CLUSTER_DIR=$(mktemp -d /tmp/rustre-capi.XXXXXX)
# shellcheck source=../../libclient/tests/local-cluster.sh
source "$ROOT/libclient/tests/local-cluster.sh"
trap 'cluster_stop; rm -rf "$CLUSTER_DIR"' EXIT

CC=${CC:-cc}
CFLAGS=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -I"$ROOT/libclient/include")
"$CC" "${CFLAGS[@]}" -o "$CLUSTER_DIR/test_capi" "$ROOT/libclient/tests/c/test_capi.c" \
  -L"$BIN" -lrustre -Wl,-rpath,"$BIN" -pthread
"$CC" "${CFLAGS[@]}" -o "$CLUSTER_DIR/test_capi_static" "$ROOT/libclient/tests/c/test_capi.c" \
  "$BIN/librustre.a" -lrdmacm -libverbs -pthread -ldl -lm
# The header compiles as C++ too.
if command -v c++ >/dev/null; then
  echo '#include "rustre.h"' | c++ -x c++ -fsyntax-only -Wall -Werror -I"$ROOT/libclient/include" -
fi

cluster_start 2
echo "capi: cluster up, MDS at $CLUSTER_MDS (shared library)"
"$CLUSTER_DIR/test_capi" "$CLUSTER_DIR/client.toml" "$CLUSTER_MDS"
cluster_stop

cluster_start 2
echo "capi: cluster up, MDS at $CLUSTER_MDS (static library)"
"$CLUSTER_DIR/test_capi_static" "$CLUSTER_DIR/client.toml" "$CLUSTER_MDS"
