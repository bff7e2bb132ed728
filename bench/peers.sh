#!/usr/bin/env bash
# Side-by-side build benchmark: plain make, hybridgrid (cold with an empty
# local cache, with the cache off, and fully cached; loopback grid of one
# coordinator, whose shared cache tier is off so that every cold compile
# reaches a worker, and two workers), distcc,
# icecream, ccache (cold/warm), sccache (cold/warm), plus one cache-hit
# compile for ccache (direct mode), sccache and hybridgrid (direct mode, and
# with direct mode off). Medians of several runs,
# alternating the tools; every build's objects are checked against the
# plain build's. Prints a markdown section; with --out FILE (e.g.
# docs/benchmarks.md) writes it there, replacing the section of the same
# project, and with it any notes written under that section by hand.
#
#   bench/peers.sh [--project lua|zlib] [--cflags FLAGS] [--runs N] [--jobs N] [--out FILE] [--quick]
#
# --cflags replaces the project's compile flags (e.g. '-O2 -g' for debug
# info); distcc and icecream objects that then differ from the plain build's
# are reported in the table instead of stopping the run.
#
# Runs as root on Debian (installs the peers with apt). Everything runs in a
# private network namespace with only loopback up, so no daemon or discovery
# traffic leaves the machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
project=lua runs=3 jobs=$(( $(nproc) * 2 )) out="" quick=0 cflags=""
while [ $# -gt 0 ]; do
    case "$1" in
        --project) project=$2; shift 2 ;;
        --cflags) cflags=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --quick) quick=1; runs=1; shift ;;
        --inner) inner=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "${inner:-0}" != 1 ]; then
    # Outside the namespace: install, build, fetch sources, then re-enter.
    bench_install distcc icecc ccache sccache hyperfine make time curl bc
    if [ $quick = 1 ]; then
        (cd "$here" && cargo build -q -p hybridgrid)   # a check that the script runs, not figures
    else
        (cd "$here" && cargo build --release -q -p hybridgrid)
    fi
    bash "$here/scripts/setup.d/real-projects.sh" >/dev/null
    args=(--project "$project" --runs "$runs" --jobs "$jobs" --out "$out" --cflags "$cflags")
    [ $quick = 1 ] && args+=(--quick)
    exec unshare --net -- bash -c 'ip link set lo up && exec "$0" --inner "$@"' "$0" "${args[@]}"
fi

target_dir=${CARGO_TARGET_DIR:-$here/target}
bin="$target_dir/release"
[ $quick = 1 ] && bin="$target_dir/debug"
bench_workdir hg-bench
bench_on_exit() { SCCACHE_DIR="$work/sccache" sccache --stop-server >/dev/null 2>&1; }

sources=${HG_SOURCES_DIR:-/var/cache/hybridgrid-test-sources}
case "$project" in
    lua)
        tarball=$(ls "$sources"/lua5.4_*.orig.tar.* | tail -1)
        cc_plain="gcc -std=gnu99"; target=linux; configure=":"; one_file=src/lvm.c
        one_flags="-std=gnu99 -O2 -Wall -Wextra -DLUA_COMPAT_5_3 -DLUA_USE_LINUX" ;;
    zlib)
        tarball=$(ls "$sources"/zlib_*.orig.tar.* | tail -1)
        cc_plain="gcc"; target=""; configure="./configure >/dev/null"; one_file=deflate.c
        one_flags="-O3 -D_LARGEFILE64_SOURCE=1 -DHAVE_HIDDEN" ;;
    *) echo "unknown project $project" >&2; exit 2 ;;
esac
make_extra=()
if [ -n "$cflags" ]; then
    case "$project" in
        lua) make_extra=(MYCFLAGS="$cflags") ;;
        zlib) configure="CFLAGS='$cflags' ./configure >/dev/null" ;;
    esac
fi
label="$project${cflags:+ with $cflags}"
tar -C "$work" -xf "$tarball"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d ! -name home | head -1)
(cd "$src" && eval "$configure")

# The grid: a coordinator and two workers on loopback.
bench_start_grid "$bin" "$work" 19300
# distcc and icecream daemons on loopback.
distccd --daemon --no-detach --allow 127.0.0.1 --listen 127.0.0.1 --port 19350 --jobs "$(nproc)" \
    --log-stderr 2>"$work/distccd.log" & pids+=($!)
export DISTCC_HOSTS="127.0.0.1:19350/$(( $(nproc) * 2 ))"
icecc-scheduler -p 19360 >"$work/ice-sched.log" 2>&1 & pids+=($!)
iceccd -s 127.0.0.1:19360 -m "$(nproc)" -b "$work/icecc-env" >"$work/iceccd.log" 2>&1 & pids+=($!)

objects() { (cd "$src" && find . -name '*.o' -newer "$work/stamp" -print0 | sort -z | xargs -0 sha256sum); }
clean() { (cd "$src" && make -s clean >/dev/null 2>&1 || true); }
reference=""
declare -A times cpus differs

build() { # name, CC value, env...
    local name=$1 cc=$2; shift 2
    clean; touch "$work/stamp"; sleep 0.01
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$src" && env "$@" /usr/bin/time -f '%U %S' -o "$work/$name.cpu" \
        make -s -j"$jobs" $target "${make_extra[@]}" CC="$cc" >"$work/$name.out" 2>&1) || {
        echo "build $name failed:"; tail -20 "$work/$name.out"; exit 1; }
    t1=$(date +%s.%N)
    local objs; objs=$(objects)
    if [ -z "$reference" ]; then reference=$objs
    elif [ "$objs" != "$reference" ]; then
        case $name in
            # Peers that compile preprocessed text remotely: with -g their
            # line tables differ from a local build's. Reported, not fatal.
            distcc|icecream) differs[$name]=1 ;;
            *) echo "$name: objects differ from the plain build"; diff <(echo "$reference") <(echo "$objs") | head; exit 1 ;;
        esac
    fi
    times[$name]+="$(echo "$t1 - $t0" | bc) "
    cpus[$name]+="$(awk '{print $1 + $2}' "$work/$name.cpu") "
}

hg_clear() { "$bin/hgbuild" cache clear >/dev/null; }
hgbuild_build() { # name, env...
    local name=$1; shift
    clean; touch "$work/stamp"; sleep 0.01
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$src" && /usr/bin/time -f '%U %S' -o "$work/$name.cpu" \
        env "$@" "$bin/hgbuild" make -s -j"$jobs" $target "${make_extra[@]}" CC="$cc_plain" >"$work/$name.out" 2>&1) || {
        echo "build $name failed:"; tail -20 "$work/$name.out"; exit 1; }
    t1=$(date +%s.%N)
    [ "$(objects)" = "$reference" ] || { echo "$name: objects differ from the plain build"; exit 1; }
    times[$name]+="$(echo "$t1 - $t0" | bc) "
    cpus[$name]+="$(awk '{print $1 + $2}' "$work/$name.cpu") "
}

# The previous run's server may still hold the port for a moment: retry.
start_sccache() {
    for _ in $(seq 40); do
        SCCACHE_DIR="$work/sccache" SCCACHE_IDLE_TIMEOUT=0 sccache --start-server >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    echo "the sccache server did not start"; exit 1
}

for r in $(seq "$runs"); do
    echo "run $r/$runs"
    build plain "$cc_plain"
    hg_clear; hgbuild_build hybridgrid-cold
    hgbuild_build hybridgrid-cached
    hgbuild_build hybridgrid-nocache HG_CACHE__ENABLED=false
    build distcc "distcc $cc_plain"
    build icecream "icecc $cc_plain" ICECC_SCHEDULER_HOST=127.0.0.1:19360
    rm -rf "$work/ccache"; build ccache-cold "ccache $cc_plain" CCACHE_DIR="$work/ccache"
    build ccache-warm "ccache $cc_plain" CCACHE_DIR="$work/ccache"
    SCCACHE_DIR="$work/sccache" sccache --stop-server >/dev/null 2>&1 || true
    rm -rf "$work/sccache"
    start_sccache
    build sccache-cold "sccache $cc_plain" SCCACHE_DIR="$work/sccache"
    build sccache-warm "sccache $cc_plain" SCCACHE_DIR="$work/sccache"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
base=$(echo "${times[plain]}" | median)

# One cache-hit compile (warm caches from the builds above).
hit_runs=$([ $quick = 1 ] && echo 5 || echo 30)
cd "$src"
obj=$(dirname "$one_file")/hit-bench.o
# The tools take turns in rounds (a few runs each) so that a change in the
# machine's load hits them alike; every run's wall and CPU time is kept.
hit_rounds=$([ $quick = 1 ] && echo 1 || echo 5)
per_round=$(( hit_runs / hit_rounds ))
hf_round() { # name, command (env set by the caller)
    hyperfine -N --warmup 2 --runs "$per_round" --export-json "$work/$1.round.json" "$2" >/dev/null 2>&1
    python3 - "$work/$1.round.json" "$work/$1.runs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
with open(sys.argv[2], "a") as f:
    for w, u, s in zip(r["times"], r.get("user_times") or [r["user"]] * len(r["times"]),
                       r.get("system_times") or [r["system"]] * len(r["times"])):
        f.write(f"{w} {u + s}\n")
PY
}
for _ in $(seq "$hit_rounds"); do
    CCACHE_DIR="$work/ccache" hf_round ccache "ccache gcc $one_flags -c $one_file -o $obj"
    hf_round hybridgrid "$bin/hgbuild cc $one_flags -c $one_file -o $obj"
    SCCACHE_DIR="$work/sccache" hf_round sccache "sccache gcc $one_flags -c $one_file -o $obj"
    HG_CACHE__DIRECT_MODE=false hf_round hybridgrid-pp "$bin/hgbuild cc $one_flags -c $one_file -o $obj"
done
hf_round gcc "gcc $one_flags -c $one_file -o $obj"
# Median wall time and mean CPU time (user + system) over every run.
hf() { awk '{print $1}' "$work/$1.runs" | median; }
hf_cpu() { awk '{s += $2} END {print s / NR}' "$work/$1.runs"; }
ccache_hit=$(hf ccache) sccache_hit=$(hf sccache) hg_hit=$(hf hybridgrid)
hg_pp_hit=$(hf hybridgrid-pp) gcc_plain=$(hf gcc)

{
    echo "## Build benchmark: $label ($(date -u +%Y-%m-%d))"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo), $(uname -sr);" \
         "gcc $(gcc -dumpfullversion), hybridgrid $("$bin/hgbuild" --version | awk '{print $2}'), distcc $(distcc --version | head -1 | awk '{print $2}')," \
         "icecc $(icecc --version 2>&1 | head -1 | awk '{print $2}'), ccache $(ccache --version | head -1 | awk '{print $3}'), sccache $(sccache --version | awk '{print $2}')."
    echo "All on one machine, loopback only: hybridgrid with a coordinator and two workers, distccd and iceccd on 127.0.0.1."
    echo "Command: \`bench/peers.sh --project $project${cflags:+ --cflags '$cflags'} --runs $runs --jobs $jobs\`. Median of $runs runs, tools alternating; every build's objects equal the plain build's unless marked."
    echo
    ccache_warm=$(echo "${times[ccache-warm]}" | median)
    ccache_warm_cpu=$(echo "${cpus[ccache-warm]}" | median)
    echo "| build | median wall time (s) | ratio to plain make | ratio to ccache warm | CPU of make and its children (s) | CPU ratio to ccache warm |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in plain hybridgrid-cold hybridgrid-nocache hybridgrid-cached distcc icecream ccache-cold ccache-warm sccache-cold sccache-warm; do
        m=$(echo "${times[$name]}" | median)
        c=$(echo "${cpus[$name]}" | median)
        case $name in
            hybridgrid-cold|hybridgrid-nocache|distcc|icecream|sccache-*) cpu_cells="$(printf '%.2f' "$c") | n/a (the work is in daemons)" ;;
            *) cpu_cells="$(printf '%.2f | %.2fx' "$c" "$(echo "$c / $ccache_warm_cpu" | bc -l)")" ;;
        esac
        shown=$name; [ -n "${differs[$name]:-}" ] && shown="$name (objects differ from plain)"
        printf '| %s | %.2f | %.2fx | %.2fx | %s |\n' "$shown" "$m" "$(echo "$m / $base" | bc -l)" "$(echo "$m / $ccache_warm" | bc -l)" "$cpu_cells"
    done
    echo
    echo "CPU is user + system time of \`make\` and every process it waited for (GNU time), so it counts"
    echo "the compilers and cache clients but not daemons (hybridgrid's workers, distccd, iceccd, the"
    echo "sccache server): comparable between plain, ccache and the fully cached hybridgrid build, whose"
    echo "hits are all served in the client. On a shared machine it varies far less than wall time."
    echo
    echo "Single cache-hit compile of \`$one_file\` (hyperfine, $hit_runs runs per tool in $hit_rounds rounds, the tools taking turns; median wall time, mean CPU time):"
    echo
    echo "| tool | median wall (ms) | ratio to ccache hit | mean CPU (ms) | CPU ratio to ccache hit |"
    echo "|---|---:|---:|---:|---:|"
    ccache_cpu=$(hf_cpu ccache)
    row() { local c; c=$(hf_cpu "$3")
        printf '| %s | %.1f | %.2fx | %.1f | %.2fx |\n' "$1" "$(echo "$2 * 1000" | bc -l)" "$(echo "$2 / $ccache_hit" | bc -l)" \
            "$(echo "$c * 1000" | bc -l)" "$(echo "$c / $ccache_cpu" | bc -l)"; }
    row "gcc -c (no cache, baseline)" "$gcc_plain" gcc
    row "ccache hit (direct mode)" "$ccache_hit" ccache
    row "sccache hit (client only; the server's CPU is not counted)" "$sccache_hit" sccache
    row "hgbuild hit (direct mode)" "$hg_hit" hybridgrid
    row "hgbuild hit (direct mode off: preprocessor runs)" "$hg_pp_hit" hybridgrid-pp
    echo
} > "$work/section.md"

cat "$work/section.md"
if [ $quick = 0 ] && [ -n "$out" ]; then
    python3 "$here/bench/write-section.py" "$out" "$work/section.md" "## Build benchmark: $label ("
    echo "wrote $out"
fi
