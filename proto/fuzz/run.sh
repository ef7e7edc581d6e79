#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer coverage instrumentation on a stable toolchain (the
# flags cargo-fuzz passes, minus the nightly-only sanitizer) and runs each for SECONDS.
#
#   proto/fuzz/run.sh [SECONDS]        (default 60; corpora kept in proto/fuzz/corpus/)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
target="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation out of build scripts and proc macros.
cargo build --release --target "$target"
for t in frame request; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # No single allocation may exceed the 4 MiB + 64 KiB frame limit (rounded up to 5 MB).
    "target/$target/release/$t" -max_total_time="$secs" -malloc_limit_mb=5 -rss_limit_mb=1024 \
        -artifact_prefix="artifacts/$t/" "corpus/$t"
done
