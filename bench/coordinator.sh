#!/usr/bin/env bash
# Coordinator benchmarks (issue 8, parts 2-5):
#   - throughput of the full coordinator stack, in-process and through a
#     real hg-coord over loopback gRPC, with no-op workers, 1 and 64 clients;
#   - hg-coord's memory with 10,000 simulated workers and 1,000 compiles in
#     flight;
#   - the payload path: a 20 MB preprocessed source through hg-coord to a
#     worker and back;
#   - criterion micro-benchmarks (argument classification, cache key,
#     scheduling decision).
# Writes its sections of docs/benchmarks.md (not with --quick).
#
#   bench/coordinator.sh [--quick] [--debug|--release] [--only inproc,loopback,memory,payload,micro] [--out FILE]
#
# --quick runs every part on a small input with debug binaries and criterion
# benches in test mode (a check that everything still runs; figures are
# printed, not written). Only 127.0.0.1 is used; mDNS is off.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
invocation="bench/coordinator.sh${*:+ $*}"
out="$here/docs/benchmarks.md" quick=0 profile=release only=inproc,loopback,memory,payload,micro
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; profile=debug; shift ;;
        --debug) profile=debug; shift ;;
        --release) profile=release; shift ;;
        --only) only=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
want() { [[ ",$only," == *",$1,"* ]]; }
export HG_DISCOVERY__MDNS__ENABLED=false
target=${CARGO_TARGET_DIR:-$here/target}
cd "$here"

work=$(mktemp -d /tmp/hg-coordbench-XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { echo "== $* ($(date +%T))" >&2; }

cargo_flags=(-q)
[ $profile = release ] && cargo_flags+=(--release)
step "build ($profile)"
cargo build "${cargo_flags[@]}" -p hybridgrid --bin hg-coord -p hybridgrid-bench --bin coordbench
bin="$target/$profile"
bench="$bin/coordbench"
coord="$bin/hg-coord"

# Sizes: full run / quick check.
if [ $quick = 1 ]; then
    inproc_tasks=2000 loop_tasks=500 sim=500 inflight=100 hold=3 payload_mb=2 payload_runs=1 rounds=1
else
    inproc_tasks=20000 loop_tasks=10000 sim=10000 inflight=1000 hold=40 payload_mb=20 payload_runs=3 rounds=3
fi
# The throughput cases run `rounds` times, alternating, and the report
# gives the median and the range: this machine's speed varies by 2x from
# minute to minute (other tenants).

# A realistic preprocessed corpus: system headers run through gcc -E / g++ -E
# one by one, concatenated until it is big enough.
corpus="$work/corpus.i"
make_corpus() {
    local want_bytes=$(( $1 * 1000 * 1000 ))
    : > "$corpus"
    local c_headers=(stdio.h stdlib.h string.h math.h pthread.h signal.h time.h unistd.h fcntl.h
                     sys/socket.h netinet/in.h arpa/inet.h sys/stat.h sys/mman.h errno.h ctype.h
                     locale.h wchar.h stdint.h inttypes.h limits.h float.h setjmp.h dirent.h
                     sys/wait.h termios.h poll.h sys/epoll.h dlfcn.h regex.h glob.h)
    local cxx_headers=(iostream string vector map unordered_map algorithm memory functional
                       thread mutex chrono regex sstream fstream iomanip set list deque
                       numeric random tuple optional variant atomic future)
    while [ "$(stat -c %s "$corpus")" -lt "$want_bytes" ]; do
        for h in "${c_headers[@]}"; do
            printf '#include <%s>\n' "$h" | gcc -E -O2 -D_GNU_SOURCE -x c - 2>/dev/null >> "$corpus" || true
        done
        for h in "${cxx_headers[@]}"; do
            printf '#include <%s>\n' "$h" | g++ -E -O2 -std=c++17 -x c++ - 2>/dev/null >> "$corpus" || true
        done
        if [ "$(stat -c %s "$corpus")" -eq 0 ]; then echo "gcc -E produced nothing" >&2; return 1; fi
    done
    head -c "$want_bytes" "$corpus" > "$corpus.tmp" && mv "$corpus.tmp" "$corpus"
}

results="$work/results"
mkdir -p "$results"
# The coordinator's cache tier writes a file per result: besides the usual
# temp dir, run the cache-miss cases with the cache on tmpfs, to separate the
# file system's cost from the coordinator's.
tmpfs=()
[ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ] && tmpfs=(--tmp /dev/shm)
# A part that fails is reported and the others still run; the script then
# fails.
failed=()
part() {
    local name=$1; shift
    "$@" || { echo "== FAILED: $name" >&2; failed+=("$name"); }
}

run_inproc() {
    for spec in "1 miss" "64 miss" "1 miss tmpfs" "64 miss tmpfs" "64 hit" "64 off"; do
        set -- $spec
        tasks=$inproc_tasks
        [ "$1" = 1 ] && tasks=$(( inproc_tasks / 4 ))
        extra=()
        if [ "${3:-}" = tmpfs ]; then
            [ ${#tmpfs[@]} -eq 0 ] && continue
            extra=("${tmpfs[@]}")
        fi
        step "in-process: $1 clients, cache $2 ${3:-}, $tasks tasks"
        "$bench" inproc --clients "$1" --cache "$2" --tasks "$tasks" "${extra[@]}" >> "$results/inproc.jsonl" || return 1
    done
    # Realistic input size: the coordinator decompresses and hashes every
    # input for the cache key.
    step "in-process: 64 clients, 128 KiB inputs"
    "$bench" inproc --clients 64 --cache miss --tasks $(( inproc_tasks / 20 )) --input-bytes 131072 >> "$results/inproc.jsonl"
}
run_inproc_rounds() {
    for r in $(seq "$rounds"); do step "in-process, round $r of $rounds"; run_inproc || return 1; done
}
want inproc && part inproc run_inproc_rounds

run_loopback() {
    step "loopback gRPC: 1 and 64 clients, $loop_tasks tasks each"
    "$bench" loopback --hg-coord "$coord" --clients 1,64 --tasks "$loop_tasks" >> "$results/loopback.jsonl" || return 1
    if [ ${#tmpfs[@]} -gt 0 ]; then
        step "loopback gRPC, cache on tmpfs"
        "$bench" loopback --hg-coord "$coord" --clients 1,64 --tasks "$loop_tasks" "${tmpfs[@]}" >> "$results/loopback.jsonl"
    fi
    step "loopback gRPC, no cache tier"
    "$bench" loopback --hg-coord "$coord" --clients 1,64 --tasks "$loop_tasks" --cache off >> "$results/loopback.jsonl"
}
run_loopback_rounds() {
    for r in $(seq "$rounds"); do step "loopback, round $r of $rounds"; run_loopback || return 1; done
}
want loopback && part loopback run_loopback_rounds

if want memory || want payload; then
    step "corpus: ${payload_mb} MB of preprocessed system headers"
    make_corpus "$payload_mb"
fi

run_memory() {
    step "memory: $sim simulated workers, $inflight compiles in flight"
    "$bench" memory --hg-coord "$coord" --sim-workers "$sim" --in-flight "$inflight" --hold-s "$hold" \
        --corpus "$corpus" > "$results/memory.json.tmp" && mv "$results/memory.json.tmp" "$results/memory.json"
}
want memory && part memory run_memory

run_payload() {
    step "payload: ${payload_mb} MB through hg-coord and back"
    "$bench" payload --hg-coord "$coord" --file "$corpus" --runs "$payload_runs" > "$results/payload.json.tmp" \
        && mv "$results/payload.json.tmp" "$results/payload.json"
}
want payload && part payload run_payload

run_micro() {
    # One invocation for the three benches: one feature resolution, one build.
    local benches=(-p hybridgrid-exec --bench classify -p hybridgrid-cache --bench key
                   -p hybridgrid-core --bench schedule)
    step "criterion: classify, key, schedule"
    if [ $quick = 1 ]; then
        # Test mode: every benchmark runs once (checks they still work).
        cargo test -q "${benches[@]}" >/dev/null || return 1
    else
        cargo bench -q "${benches[@]}" -- --warm-up-time 1 --measurement-time 2 >/dev/null || return 1
        echo "$target/criterion" > "$results/criterion_dir"
    fi
}
want micro && part micro run_micro

step "report"
args=("$results" --machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo), $(uname -sr), $(rustc --version | cut -d' ' -f1-2), load average $(cut -d' ' -f1-3 /proc/loadavg | sed 's/ /, /g') at the end")
args+=(--command "$invocation" --profile "$profile")
if [ $quick = 0 ]; then
    python3 "$here/bench/coordinator_report.py" "${args[@]}" --out "$out"
    echo "wrote $out" >&2
else
    python3 "$here/bench/coordinator_report.py" "${args[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed parts: ${failed[*]}" >&2
    exit 1
fi
