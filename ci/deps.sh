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

# The lanes' own builds, one per profile. Cargo picks dependency features from the packages a
# command selects, so each different `-p` list is a separate build of much of the dependency graph
# (minutes on two cores, up to a GiB of target/): every lane asks for the same selection.
# rustre_lane_build debug    every target of the workspace: the same units as the test build
#                            (`cargo nextest run --workspace`), so after it this builds nothing and
#                            only puts librustre.so/.a and the binaries in target/debug
# rustre_lane_build release  the bench, the CLI and the daemons, as the bench lanes measure them
rustre_lane_build() {
  case "$1" in
    debug) cargo build --locked -q --workspace --all-targets ;;
    release) cargo build --locked -q --release -p rustre-bench -p rustre-cli -p rustre-ostd -p rustre-mdsd ;;
    *)
      echo "rustre_lane_build: debug or release, not '$1'" >&2
      return 2
      ;;
  esac
}

# rustre_test_exe PACKAGE TARGET: the path of a test binary from the workspace's test build (the
# one `cargo nextest run --workspace` makes, so nothing is rebuilt). TARGET is an integration
# test's name, or `lib` for the package's unit tests.
rustre_test_exe() {
  cargo test --workspace --locked --no-run --message-format=json |
    python3 -c '
import json, re, sys
pkg, target = sys.argv[1], sys.argv[2]
found = ""
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    # A package id is path+file:///DIR#NAME@VERSION, or path+file:///NAME#VERSION.
    if not re.search("[#/]" + re.escape(pkg) + "[@#]", m["package_id"]) or not m["profile"]["test"]:
        continue
    kind = m["target"]["kind"]
    if (target == "lib" and "lib" in kind) or (m["target"]["name"] == target and kind == ["test"]):
        found = found or m["executable"]
# Read to the end: cargo fails on a pipe closed under it.
print(found)
' "$1" "$2"
}
