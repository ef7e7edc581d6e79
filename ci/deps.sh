# shellcheck shell=bash
# What building and testing rustre needs from the system, installed idempotently.
# Sourced by ci/test (everything) and ./quickstart (only what a build needs).

# Building: rdma-sys runs bindgen over the verbs headers (the fabric's default `verbs` feature).
RUSTRE_BUILD_PACKAGES=(
  libibverbs-dev librdmacm-dev libclang-dev pkg-config clang
)
# Testing: the verbs user space, the rxe VM lane, the baselines, MPI and FUSE.
RUSTRE_TEST_PACKAGES=(
  rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest
  qemu-system-x86 busybox-static kmod cpio iproute2
  fio openmpi-bin libopenmpi-dev fuse3 libfuse3-dev rsync tar
)

# rustre_install_packages PKG…: installs the Debian packages not yet installed.
rustre_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  printf '\n=== installing Debian packages: %s ===\n' "${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# rustre_require_cargo: fails with a clear message when there is no Rust toolchain.
rustre_require_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  echo "rustre needs a Rust toolchain (1.85 or newer, edition 2024): install it with rustup, then run this again" >&2
  return 1
}
