#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time with libFuzzer and
# fails if any of them finds a crash, a panic or a timeout.
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]     (default 20: 6 targets, 2 minutes)
#
# Works with a stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the
# sanitizer flags cargo-fuzz would pass (`cargo fuzz run TARGET` works the
# same way when cargo-fuzz is installed). Crashing inputs are kept in
# fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/ (both
# ignored by git). Set FUZZ_TARGETS="a b" to run only some targets.
set -euo pipefail

secs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/fuzz/target}
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Zsanitizer=address"

targets=${FUZZ_TARGETS:-"compile_request worker_info args_classify config_yaml cache_entry cert_names"}

echo "fuzz-smoke: building ($host)"
# --target keeps build scripts and proc macros uninstrumented.
cargo build --release --target "$host" --bins

status=0
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "fuzz-smoke: $t for ${secs}s"
    if ! "$CARGO_TARGET_DIR/$host/release/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "corpus/$t" "${seeds[@]}" 2> "artifacts/$t/log.txt"; then
        echo "fuzz-smoke: $t FAILED; input and log in fuzz/artifacts/$t/" >&2
        tail -n 40 "artifacts/$t/log.txt" >&2
        status=1
    else
        grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "artifacts/$t/log.txt" \
            | sed "s/^/fuzz-smoke: $t /" || true
    fi
done
exit $status
