#!/usr/bin/env bash
# The configure step through hgbuild, as a user runs it: gzip 1.12's
# autoconf `./configure` (hundreds of probe compiles and links) and
# fribidi 1.0.8's `meson setup`, plain against `CC="hgbuild cc"` with a
# loopback grid (a coordinator and two workers) up and hgbuild's cache off.
# The two take turns in each round, on fresh trees at the same path; each
# round also checks that both configure steps made the same decisions
# (config.h byte-identical). Prints the medians and their ratio, and with
# --out writes a section into docs/benchmarks.md.
#
#   bench/configure.sh [--rounds N] [--bin DIR] [--out FILE] [--quick]
#
# --quick: one round with debug binaries, nothing written (CI checks that
# the script works). Runs as root on Debian, in a private network namespace
# with only loopback up. Needs meson, ninja-build and
# scripts/setup.d/real-projects.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
rounds=5 bin="" out="" quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --bin) bin=$(cd "$2" && pwd); shift 2 ;;
        --out) out=$2; shift 2 ;;
        --quick) quick=1; rounds=1; shift ;;
        --inner) inner=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "${inner:-0}" != 1 ]; then
    bench_install meson ninja-build curl bc
    if [ -z "$bin" ] && [ $quick = 1 ]; then
        (cd "$here" && cargo build -q -p hybridgrid --bins)   # a check that the script runs, not figures
        bin="${CARGO_TARGET_DIR:-$here/target}/debug"
    elif [ -z "$bin" ]; then
        (cd "$here" && cargo build --release -q -p hybridgrid --bins)
        bin="${CARGO_TARGET_DIR:-$here/target}/release"
    fi
    bash "$here/scripts/setup.d/real-projects.sh" >/dev/null
    exec unshare --net -- bash -c 'ip link set lo up && exec "$0" --inner "$@"' \
        "$0" --rounds "$rounds" --bin "$bin" --out "$out" $([ $quick = 1 ] && echo --quick)
fi

bench_workdir hg-configure-bench
bench_start_grid "$bin" "$work" 19750 >/dev/null
export HG_CACHE__ENABLED=false
sources=${HG_SOURCES_DIR:-/var/cache/hybridgrid-test-sources}
tarball() { ls "$sources"/$1_*.orig.tar.* | grep -v '\.asc$' | tail -1; }
gzip_tar=$(tarball gzip) fribidi_tar=$(tarball fribidi)
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# fresh TARBALL: a new tree at $work/tree; prints its directory.
fresh() { rm -rf "$work/tree"; mkdir -p "$work/tree"; tar xf "$1" -C "$work/tree"; ls -d "$work"/tree/*/; }
# timed DIR CMD...: runs CMD in DIR, prints the seconds it took.
timed() {
    local dir=$1 s; shift
    s=$(date +%s.%N)
    (cd "$dir" && "$@" >"$work/log" 2>&1) || { echo "failed: $*" >&2; tail -20 "$work/log" >&2; return 1; }
    echo "$(date +%s.%N) - $s" | bc
}
tasks() { curl -s "http://127.0.0.1:19751/api/stats" | sed -n 's/.*"total":\([0-9]*\)}.*/\1/p' | tail -1; }

before=$(tasks)
for _ in $(seq "$rounds"); do
    d=$(fresh "$gzip_tar"); timed "$d" ./configure >> "$work/ac.plain"; cp "$d/lib/config.h" "$work/ac.h"
    d=$(fresh "$gzip_tar"); timed "$d" ./configure CC="$bin/hgbuild cc" >> "$work/ac.hg"
    cmp -s "$d/lib/config.h" "$work/ac.h" || { echo "gzip: config.h differs through hgbuild" >&2; exit 1; }
    d=$(fresh "$fribidi_tar"); timed "$d" meson setup build -Ddocs=false >> "$work/ms.plain"; cp "$d/build/config.h" "$work/ms.h"
    d=$(fresh "$fribidi_tar"); timed "$d" env CC="$bin/hgbuild cc" meson setup build -Ddocs=false >> "$work/ms.hg"
    cmp -s "$d/build/config.h" "$work/ms.h" || { echo "fribidi: config.h differs through hgbuild" >&2; exit 1; }
done
grid=$(( $(tasks) - before ))

row() { # LABEL PLAIN_FILE HG_FILE
    local p h
    p=$(median < "$2") h=$(median < "$3")
    printf "| %s | %.2f s | %.2f s | %.2fx |\n" "$1" "$p" "$h" "$(echo "$h / $p" | bc -l)"
}
{
    echo "## Configure through hgbuild ($(date +%F))"
    echo
    echo "\`bench/configure.sh --rounds $rounds\` on $(nproc) cores: each configure step plain and with"
    echo "\`CC=\"hgbuild cc\"\` (a loopback grid up, hgbuild's cache off), taking turns on fresh trees"
    echo "at the same path; medians of $rounds rounds. config.h was byte-identical in every round."
    echo "Configure probes (autoconf's \`conftest.c\`, Meson's \`meson-private/tmp*/testfile.c\`,"
    echo "CMake's \`try_compile\` projects) compile on the client, so the grid ran $grid tasks."
    echo
    echo "| configure step | plain | through hgbuild | ratio |"
    echo "|---|---|---|---|"
    row "gzip 1.12 \`./configure\` (autoconf)" "$work/ac.plain" "$work/ac.hg"
    row "fribidi 1.0.8 \`meson setup\`" "$work/ms.plain" "$work/ms.hg"
} > "$work/section.md"
cat "$work/section.md"
if [ $quick = 0 ] && [ -n "$out" ]; then
    python3 "$here/bench/write-section.py" "$out" "$work/section.md" "## Configure through hgbuild ("
fi
