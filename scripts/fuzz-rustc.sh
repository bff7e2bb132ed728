#!/usr/bin/env bash
# RUSTC_WRAPPER of scripts/fuzz-smoke.sh: adds libFuzzer's coverage
# instrumentation (SanitizerCoverage) and `--cfg fuzzing` to the crates
# worth guiding the fuzzer through - the hybridgrid crates, the fuzz
# targets and the parsers they drive - and to nothing else. Instrumenting
# tokio, serde or zstd too made the build several times longer for no
# useful coverage. Build scripts and proc macros are never instrumented
# (they would not link without libFuzzer).
#
# Cargo runs it as: fuzz-rustc.sh RUSTC ARGS...
set -euo pipefail
rustc=$1
shift
instrument=${FUZZ_INSTRUMENT:-"hybridgrid-core hybridgrid-net hybridgrid-cache hybridgrid-exec hybridgrid-fuzz yaml-rust2 prost"}

crate= target= proc_macro=
prev=
for a in "$@"; do
    case "$prev" in
        --crate-name) crate=$a ;;
        --target) target=$a ;;
        --crate-type) [ "$a" = proc-macro ] && proc_macro=1 ;;
    esac
    prev=$a
done

pkg=${CARGO_PKG_NAME:-}
if [ -n "$target" ] && [ -z "$proc_macro" ] && [ -n "$pkg" ] \
    && [[ "$crate" != build_script_* ]] && [[ " $instrument " == *" $pkg "* ]]; then
    exec "$rustc" "$@" \
        -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        --cfg fuzzing
fi
exec "$rustc" "$@"
