#!/usr/bin/env bash
# The configure step through hgbuild and the builds after it, as a user runs
# them: gzip 1.12's autoconf `./configure` (hundreds of probe compiles and
# links) and fribidi 1.0.8's `meson setup`, plain against `CC="hgbuild cc"`
# with a loopback grid (a coordinator and two workers) up; then, in later
# commands, cold builds at -j cores and -j twice the cores with hgbuild's
# cache emptied. The two take turns in each round, on fresh trees at the
# same path; each round also checks that both configure steps made the same
# decisions (config.h byte-identical). The plain Meson build names `cc`
# itself: Meson would otherwise put a ccache or sccache it finds in front. Prints the medians and their ratio, and with
# --out writes a section into docs/benchmarks.md.
#
#   bench/configure.sh [--rounds N] [--bin DIR] [--out FILE] [--quick] [--configure-only]
#
# --configure-only: the configure steps alone, no builds (more rounds in the
# same time; its own section in docs/benchmarks.md).
# --quick: one round with debug binaries, nothing written (CI checks that
# the script works). Runs as root on Debian, in a private network namespace
# with only loopback up. Needs meson, ninja-build and
# scripts/setup.d/real-projects.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
rounds=5 bin="" out="" quick=0 configure_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --bin) bin=$(cd "$2" && pwd); shift 2 ;;
        --out) out=$2; shift 2 ;;
        --quick) quick=1; rounds=1; shift ;;
        --configure-only) configure_only=1; shift ;;
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
        "$0" --rounds "$rounds" --bin "$bin" --out "$out" $([ $quick = 1 ] && echo --quick) \
        $([ $configure_only = 1 ] && echo --configure-only)
fi

bench_workdir hg-configure-bench
bench_start_grid "$bin" "$work" 19750 >/dev/null
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

cores=$(nproc)
cfg_tasks=0
# configured NAME TOOL DIR CMD...: times the configure step CMD in DIR into
# NAME.TOOL, counting the grid's tasks during hgbuild's.
configured() {
    local name=$1 tool=$2 dir=$3 t0; shift 3
    t0=$(tasks)
    timed "$dir" "$@" >> "$work/$name.$tool"
    [ "$tool" = plain ] || cfg_tasks=$(( cfg_tasks + $(tasks) - t0 ))
}
# builds NAME TOOL DIR CLEAN BUILD...: in later commands, a cold build at -j
# cores and at -j twice that (BUILD gets -jN appended), cleaned with CLEAN
# before the second; hgbuild's cache emptied before each.
builds() {
    [ "$configure_only" = 1 ] && return 0
    local name=$1 tool=$2 dir=$3 clean=$4 j; shift 4
    for j in "$cores" $((cores * 2)); do
        rm -rf "$HOME/.hybridgrid/cache"
        timed "$dir" "$@" "-j$j" >> "$work/$name.$tool.j$j"
        (cd "$dir" && $clean >/dev/null 2>&1)
    done
}
for _ in $(seq "$rounds"); do
    rm -rf "$HOME/.hybridgrid/cache"
    d=$(fresh "$gzip_tar"); configured ac plain "$d" ./configure; cp "$d/lib/config.h" "$work/ac.h"
    builds ac plain "$d" "make clean" make
    d=$(fresh "$gzip_tar"); configured ac hg "$d" ./configure CC="$bin/hgbuild cc"
    cmp -s "$d/lib/config.h" "$work/ac.h" || { echo "gzip: config.h differs through hgbuild" >&2; exit 1; }
    builds ac hg "$d" "make clean" make
    d=$(fresh "$fribidi_tar"); configured ms plain "$d" env CC=cc meson setup build -Ddocs=false; cp "$d/build/config.h" "$work/ms.h"
    builds ms plain "$d" "ninja -C build -t clean" meson compile -C build
    d=$(fresh "$fribidi_tar"); configured ms hg "$d" env CC="$bin/hgbuild cc" meson setup build -Ddocs=false
    cmp -s "$d/build/config.h" "$work/ms.h" || { echo "fribidi: config.h differs through hgbuild" >&2; exit 1; }
    builds ms hg "$d" "ninja -C build -t clean" meson compile -C build
done

row() { # LABEL PLAIN_FILE HG_FILE
    local p h
    p=$(median < "$2") h=$(median < "$3")
    printf "| %s | %.2f s | %.2f s | %.2fx |\n" "$1" "$p" "$h" "$(echo "$h / $p" | bc -l)"
}
if [ "$configure_only" = 1 ]; then
    heading="## Configure steps alone through hgbuild ("
    {
        echo "$heading$(date +%F))"
        echo
        echo "\`bench/configure.sh --configure-only --rounds $rounds\` on $cores cores: each configure"
        echo "step plain and with \`CC=\"hgbuild cc\"\` (a loopback grid of two workers up, no build"
        echo "after it), taking turns on fresh trees at the same path; medians of $rounds rounds."
        echo "config.h was byte-identical in every round; the grid ran $cfg_tasks tasks."
        echo
        echo "| step | plain | through hgbuild | ratio |"
        echo "|---|---|---|---|"
        row "gzip 1.12 \`./configure\` (autoconf)" "$work/ac.plain" "$work/ac.hg"
        row "fribidi 1.0.8 \`meson setup\`" "$work/ms.plain" "$work/ms.hg"
    } > "$work/section.md"
else
    heading="## Configure through hgbuild ("
    {
        echo "## Configure through hgbuild ($(date +%F))"
        echo
        echo "\`bench/configure.sh --rounds $rounds\` on $cores cores, as a user runs it: the configure step"
        echo "plain and with \`CC=\"hgbuild cc\"\` (a loopback grid of two workers up), then in later"
        echo "commands a cold build at -j$cores and at -j$((cores * 2)) (cleaned between), hgbuild's local"
        echo "cache emptied before each; plain and hgbuild take turns on fresh trees at the same path;"
        echo "medians of $rounds rounds. config.h was byte-identical in every round. Configure probes"
        echo "(autoconf's \`conftest.c\`, Meson's \`meson-private/tmp*/testfile.c\`, CMake's \`try_compile\`"
        echo "projects) compile on the client: the grid ran $cfg_tasks tasks during the configure steps."
        echo
        echo "| step | plain | through hgbuild | ratio |"
        echo "|---|---|---|---|"
        row "gzip 1.12 \`./configure\` (autoconf)" "$work/ac.plain" "$work/ac.hg"
        row "gzip 1.12 \`make -j$cores\`" "$work/ac.plain.j$cores" "$work/ac.hg.j$cores"
        row "gzip 1.12 \`make -j$((cores * 2))\`" "$work/ac.plain.j$((cores * 2))" "$work/ac.hg.j$((cores * 2))"
        row "fribidi 1.0.8 \`meson setup\`" "$work/ms.plain" "$work/ms.hg"
        row "fribidi 1.0.8 \`meson compile -j$cores\`" "$work/ms.plain.j$cores" "$work/ms.hg.j$cores"
        row "fribidi 1.0.8 \`meson compile -j$((cores * 2))\`" "$work/ms.plain.j$((cores * 2))" "$work/ms.hg.j$((cores * 2))"
    } > "$work/section.md"
fi
cat "$work/section.md"
if [ $quick = 0 ] && [ -n "$out" ]; then
    python3 "$here/bench/write-section.py" "$out" "$work/section.md" "$heading"
fi
