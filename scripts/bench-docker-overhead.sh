#!/bin/sh
# Per-compile overhead of the Docker executor (exec into a long-lived
# container) against native compiles of the same file. Needs dockerd and the
# test images (scripts/start-dockerd.sh, scripts/build-test-images.sh).
#   HG_BENCH_N=50 scripts/bench-docker-overhead.sh
set -eu
cd "$(dirname "$0")/.."
cargo test -p hybridgrid-exec --features docker --test docker \
    -- --ignored --nocapture bench_docker_exec_overhead
