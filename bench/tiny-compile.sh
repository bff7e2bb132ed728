#!/usr/bin/env bash
# The fixed cost of one remote compile: a tiny translation unit
# (`int f(int x){return x*2;}`) compiled by plain gcc and through hgbuild on a
# loopback grid (a coordinator and two workers), caches off everywhere, so
# every hgbuild run is a real remote compile. The tools take turns in rounds
# (hyperfine) so a change in the machine's load hits both alike. The
# coordinator's own mean task duration over the same runs (from its
# `hybridgrid_task_duration_seconds` histogram) is subtracted from hgbuild's
# median to give the client-side cost. Writes a markdown section into
# docs/benchmarks.md.
#
#   bench/tiny-compile.sh [--runs N] [--label TEXT] [--bin DIR] [--out FILE] [--quick]
#
# --label names the section (`## Tiny remote compile: TEXT`), so that two
# runs (before and after a change) can stand side by side. --bin measures the
# hg-coord, hg-worker and hgbuild in DIR instead of building them. --quick: a few
# runs with debug binaries, nothing written (CI checks that the script works).
# Runs as root on Debian; everything runs in a private network namespace with
# only loopback up.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
runs=60 out="$here/docs/benchmarks.md" quick=0 label="current" bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --label) label=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --bin) bin=$(cd "$2" && pwd); shift 2 ;;
        --quick) quick=1; runs=6; shift ;;
        --inner) inner=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
target_dir=${CARGO_TARGET_DIR:-$here/target}

if [ "${inner:-0}" != 1 ]; then
    bench_install hyperfine curl bc
    if [ -n "$bin" ]; then
        :
    elif [ $quick = 1 ]; then
        (cd "$here" && cargo build -q -p hybridgrid --bins)   # a check that the script runs, not figures
        bin="$target_dir/debug"
    else
        (cd "$here" && cargo build --release -q -p hybridgrid --bins)
        bin="$target_dir/release"
    fi
    args=(--runs "$runs" --out "$out" --label "$label" --bin "$bin")
    [ $quick = 1 ] && args+=(--quick)
    exec unshare --net -- bash -c 'ip link set lo up && exec "$0" --inner "$@"' "$0" "${args[@]}"
fi

bench_workdir hg-tiny

# The grid; the client's cache off too: every compile is sent to a worker.
export HG_CACHE__ENABLED=false
bench_start_grid "$bin" "$work" 19400

cd "$work"
echo 'int f(int x){return x*2;}' > tiny.c
flags="-O2 -c tiny.c -o tiny.o"

# Task count and summed duration from the coordinator's histogram.
task_metrics() {
    curl -sf http://127.0.0.1:19401/metrics | awk '
        /^hybridgrid_task_duration_seconds_sum/ {s = $2}
        /^hybridgrid_task_duration_seconds_count/ {c = $2}
        END {printf "%s %s\n", (s == "" ? 0 : s), (c == "" ? 0 : c)}'
}

rounds=$([ $quick = 1 ] && echo 1 || echo 5)
per_round=$(( runs / rounds ))
hf_round() { # name, command
    hyperfine -N --warmup 2 --runs "$per_round" --export-json "$work/$1.round.json" "$2" >/dev/null 2>&1
    python3 - "$work/$1.round.json" "$work/$1.runs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
with open(sys.argv[2], "a") as f:
    for w in r["times"]:
        f.write(f"{w}\n")
PY
}
read -r sum0 count0 < <(task_metrics)
for _ in $(seq "$rounds"); do
    hf_round gcc "gcc $flags"
    hf_round hgbuild "$bin/hgbuild cc $flags"
done
read -r sum1 count1 < <(task_metrics)
# The last run was hgbuild's: its object must equal gcc's.
mv tiny.o hg.o && gcc $flags && cmp -s tiny.o hg.o || { echo "hgbuild's object differs from gcc's"; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
p90() { sort -n | awk '{a[NR]=$1} END {i = int(NR * 0.9); if (i < 1) i = 1; print a[i]}'; }
gcc_med=$(median < gcc.runs) hg_med=$(median < hgbuild.runs) hg_p90=$(p90 < hgbuild.runs)
hg_runs=$(wc -l < hgbuild.runs)
tasks=$(echo "$count1 - $count0" | bc)
# hyperfine's warm-up runs are tasks too: divide by the tasks counted.
[ "$(echo "$tasks > 0" | bc)" = 1 ] || { echo "no task reached the coordinator: hgbuild compiled locally"; exit 1; }
task_mean=$(echo "($sum1 - $sum0) / $tasks" | bc -l)
expected=$(( hg_runs + 2 * rounds ))
[ "$tasks" -ge "$expected" ] || { echo "only $tasks of $expected hgbuild runs were remote"; exit 1; }

ms() { printf '%.1f' "$(echo "$1 * 1000" | bc -l)"; }
{
    echo "## Tiny remote compile: $label ($(date -u +%Y-%m-%d))"
    echo
    echo "Machine: $(nproc) cores, $(uname -sr); gcc $(gcc -dumpfullversion), hybridgrid $("$bin/hgbuild" --version | awk '{print $2}')."
    echo "Command: \`bench/tiny-compile.sh --runs $runs --label '$label'\`: \`gcc $flags\` of a one-line function"
    echo "against \`hgbuild cc\` of the same on a loopback grid (a coordinator, two workers), caches off, $runs runs"
    echo "each in $rounds rounds, the tools taking turns. $tasks tasks reached the coordinator (every hgbuild run, warm-ups included)."
    echo
    echo "| measure | ms |"
    echo "|---|---:|"
    echo "| gcc, median wall | $(ms "$gcc_med") |"
    echo "| hgbuild, median wall | $(ms "$hg_med") |"
    echo "| hgbuild, 90th percentile wall | $(ms "$hg_p90") |"
    echo "| coordinator's mean task duration | $(ms "$task_mean") |"
    echo "| client-side cost (hgbuild median - task duration) | $(ms "$(echo "$hg_med - $task_mean" | bc -l)") |"
    echo "| hgbuild median above gcc | $(ms "$(echo "$hg_med - $gcc_med" | bc -l)") |"
    echo
} > "$work/section.md"

cat "$work/section.md"
if [ $quick = 0 ]; then
    python3 "$here/bench/write-section.py" "$out" "$work/section.md" "## Tiny remote compile: $label ("
    echo "wrote $out"
fi
