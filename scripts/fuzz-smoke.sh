#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time with libFuzzer and
# fails if any of them finds a crash, a panic or a timeout.
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]     (default 30; 0: build only)
#
# Works with a stable toolchain and needs nothing but cargo and a C++
# compiler (libfuzzer-sys builds libFuzzer); cargo-fuzz is not needed.
# scripts/fuzz-rustc.sh instruments the hybridgrid crates, the targets and
# the parsers they drive for libFuzzer's coverage; the rest builds plain
# (fuzz/Cargo.toml has the cheap profile). Crashing inputs are kept in
# fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/ (both
# ignored by git). Set FUZZ_TARGETS="a b" to run only some targets and
# FUZZ_TARGET_DIR to build elsewhere than fuzz/target.
set -euo pipefail

secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null; then
    echo "fuzz-smoke: needs a C++ compiler for libFuzzer (apt-get install g++)" >&2
    exit 2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/fuzz/target}
export RUSTC_WRAPPER="$root/scripts/fuzz-rustc.sh"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

targets=${FUZZ_TARGETS:-"compile_request worker_info args_classify config_yaml cache_entry cert_names"}

echo "fuzz-smoke: building ($host)"
start=$(date +%s)
# --target: build scripts and proc macros are host units, never instrumented.
cargo build --locked --release --target "$host" --bins
echo "fuzz-smoke: built in $(( $(date +%s) - start ))s"
if [ "$secs" = 0 ]; then
    exit 0 # build only
fi

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
