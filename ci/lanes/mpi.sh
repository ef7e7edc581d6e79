#!/usr/bin/env bash
# The MPI lane: libclient/examples/mpi/rustre_mpi_io.c built with mpicc and run with 4 ranks
# against a real local cluster (mdsd + 4 ostd processes on /dev/shm files, 127.0.0.1 only):
# N-1 strided and N-N writes, read back by another rank, every byte verified.
#   RUSTRE_MPI_RECORDS=N   records of 47008 bytes per rank (default 64)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=../deps.sh
source ci/deps.sh

if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  echo "mpi: mpicc/mpirun missing (ci/test installs openmpi-bin and libopenmpi-dev)" >&2
  exit 1
fi

rustre_lane_build debug
BIN=$ROOT/target/debug
CLUSTER_DIR=$(mktemp -d /tmp/rustre-mpi.XXXXXX)
# shellcheck source=../../libclient/tests/local-cluster.sh
source "$ROOT/libclient/tests/local-cluster.sh"
trap 'cluster_stop; rm -rf "$CLUSTER_DIR"' EXIT

mpicc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I"$ROOT/libclient/include" \
  -o "$CLUSTER_DIR/rustre_mpi_io" "$ROOT/libclient/examples/mpi/rustre_mpi_io.c" \
  -L"$BIN" -lrustre -Wl,-rpath,"$BIN"

cluster_start 4
echo "mpi: cluster up, MDS at $CLUSTER_MDS"
MPIRUN=(mpirun -n 4 --oversubscribe)
if [ "$(id -u)" = 0 ]; then MPIRUN+=(--allow-run-as-root); fi
# Loopback only, no InfiniBand probing in containers.
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
"${MPIRUN[@]}" "$CLUSTER_DIR/rustre_mpi_io" "$CLUSTER_DIR/client.toml" "${RUSTRE_MPI_RECORDS:-64}"
