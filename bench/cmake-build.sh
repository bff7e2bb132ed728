#!/usr/bin/env bash
# A CMake project configured and built as a user runs it, each in its own
# command: double-conversion (23 C++ compiles, Release), plain
# (`cmake -G Ninja ...`, then `ninja -jN`) against hybridgrid
# (`hgbuild cmake ...`, then `hgbuild ninja -jN`, with a fresh local cache;
# then a plain `ninja -jN` in the same build directory after a clean, which
# must still go through the grid). Loopback grid of a coordinator (shared
# tier off) and two workers; N is the core count and twice it. The tools
# take turns in each round; prints the medians.
#
#   bench/cmake-build.sh [--rounds N] [--bin DIR]
#
# Runs as root on Debian, in a private network namespace with only loopback
# up. Needs cmake, ninja-build and scripts/setup.d/real-projects.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
rounds=3 bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --bin) bin=$(cd "$2" && pwd); shift 2 ;;
        --inner) inner=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "${inner:-0}" != 1 ]; then
    bench_install cmake ninja-build curl bc
    if [ -z "$bin" ]; then
        (cd "$here" && cargo build --release -q -p hybridgrid)
        bin="${CARGO_TARGET_DIR:-$here/target}/release"
    fi
    bash "$here/scripts/setup.d/real-projects.sh" >/dev/null
    exec unshare --net -- bash -c 'ip link set lo up && exec "$0" --inner --rounds "$1" --bin "$2"' "$0" "$rounds" "$bin"
fi

bench_workdir hg-cmake-bench
bench_start_grid "$bin" "$work" 19700 >/dev/null
sources=${HG_SOURCES_DIR:-/var/cache/hybridgrid-test-sources}
tar xzf "$(ls "$sources"/double-conversion_*.orig.tar.* | tail -1)" -C "$work"
src=$(ls -d "$work"/double-conversion-*/)
build="$work/build"
configure=(-G Ninja -S "$src" -B "$build" -DBUILD_TESTING=ON -DCMAKE_BUILD_TYPE=Release)
seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
cores=$(nproc)
for jobs in "$cores" $((cores * 2)); do
    : > "$work/plain" ; : > "$work/hg" ; : > "$work/later"
    for _ in $(seq "$rounds"); do
        rm -rf "$build"
        seconds cmake "${configure[@]}" >> "$work/plain.cfg"
        seconds ninja -C "$build" -j"$jobs" >> "$work/plain"
        rm -rf "$build" "$HOME/.hybridgrid/cache"
        seconds "$bin/hgbuild" cmake "${configure[@]}" >> "$work/hg.cfg"
        seconds "$bin/hgbuild" ninja -C "$build" -j"$jobs" >> "$work/hg"
        ninja -C "$build" -t clean >/dev/null; rm -rf "$HOME/.hybridgrid/cache"
        seconds ninja -C "$build" -j"$jobs" >> "$work/later"
    done
    p=$(median < "$work/plain") h=$(median < "$work/hg") l=$(median < "$work/later")
    printf -- "-j%s: plain ninja %.2f s; hgbuild ninja %.2f s (%.2fx); plain ninja in the hgbuild-configured directory %.2f s (%.2fx)\n" \
        "$jobs" "$p" "$h" "$(echo "$h / $p" | bc -l)" "$l" "$(echo "$l / $p" | bc -l)"
done
printf "configure: plain %.2f s, hgbuild %.2f s (medians)\n" "$(median < "$work/plain.cfg")" "$(median < "$work/hg.cfg")"
echo "grid tasks: $(curl -s http://127.0.0.1:19701/api/stats)"
