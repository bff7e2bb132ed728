#!/usr/bin/env bash
# Remote cache benchmark: a fully cached rebuild of a real project (zlib by
# default) served from each `cache.remote` backend on loopback - Redis
# (redis-server), WebDAV (nginx with dav-ext) and S3 (moto) - against a
# plain build and against sccache with the same Redis, all measured in the
# same run. hgbuild runs without a coordinator (a CI machine sharing a
# cache with its fleet): every compile misses its emptied local tier and is
# answered by the remote one. Medians of several runs, the variants
# alternating; every build's objects are checked against the plain build's.
# Writes a markdown section into docs/benchmarks.md.
#
#   bench/remote-cache.sh [--project zlib|lua] [--runs N] [--jobs N] [--out FILE]
#                         [--sccache PATH] [--quick]
#
# --quick: one run with debug binaries, nothing written (CI checks that the
# script works). --sccache: an sccache built with Redis support (Debian's is
# built without; the script says so and measures it on its local disk).
# Runs as root on Debian; everything runs in a private network namespace
# with only loopback up.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
project=zlib runs=5 jobs=$(( $(nproc) * 2 )) out="$here/docs/benchmarks.md" quick=0
sccache_bin=${SCCACHE_BIN:-$(command -v sccache || true)}
while [ $# -gt 0 ]; do
    case "$1" in
        --project) project=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --sccache) sccache_bin=$2; shift 2 ;;
        --quick) quick=1; runs=1; shift ;;
        --inner) inner=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
target_dir=${CARGO_TARGET_DIR:-$here/target}

if [ "${inner:-0}" != 1 ]; then
    # Outside the namespace: install, build, fetch sources, then re-enter.
    missing=()
    for p in sccache make bc curl; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    [ -n "$sccache_bin" ] || sccache_bin=$(command -v sccache)
    bash "$here/scripts/setup.d/remote.sh" >/dev/null
    bash "$here/scripts/setup.d/real-projects.sh" >/dev/null
    if [ $quick = 1 ]; then
        (cd "$here" && cargo build -q -p hybridgrid --bins)   # a check that the script runs, not figures
    else
        (cd "$here" && cargo build --release -q -p hybridgrid --bins)
    fi
    args=(--project "$project" --runs "$runs" --jobs "$jobs" --out "$out" --sccache "$sccache_bin")
    [ $quick = 1 ] && args+=(--quick)
    exec unshare --net -- bash -c 'ip link set lo up && exec "$0" --inner "$@"' "$0" "${args[@]}"
fi

bin="$target_dir/release"
[ $quick = 1 ] && bin="$target_dir/debug"
work=$(mktemp -d /tmp/hg-remote-bench-XXXXXX)
pids=()
cleanup() {
    SCCACHE_DIR="$work/sccache" "$sccache_bin" --stop-server >/dev/null 2>&1 || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

sources=${HG_SOURCES_DIR:-/var/cache/hybridgrid-test-sources}
case "$project" in
    lua)
        tarball=$(ls "$sources"/lua5.4_*.orig.tar.* | tail -1)
        cc_plain="gcc -std=gnu99"; target=linux; configure=":" ;;
    zlib)
        tarball=$(ls "$sources"/zlib_*.orig.tar.* | tail -1)
        cc_plain="gcc"; target=""; configure="./configure >/dev/null" ;;
    *) echo "unknown project $project" >&2; exit 2 ;;
esac
tar -C "$work" -xf "$tarball"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
(cd "$src" && eval "$configure")

# The servers, on fixed loopback ports (the namespace is ours alone).
redis_port=19400 dav_port=19401 s3_port=19402 bucket=hg-cache
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
mkdir -p "$work/dav/data" "$work/dav/body"
cat >"$work/dav/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $work/dav/nginx.pid;
error_log $work/dav/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/dav/body;
    server {
        listen 127.0.0.1:$dav_port;
        root $work/dav/data;
        client_max_body_size 0;
        location / {
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path off;
            dav_access user:rw group:r all:r;
        }
    }
}
EOF
nginx -p "$work/dav" -c "$work/dav/nginx.conf" -e "$work/dav/error.log" >/dev/null 2>&1 & pids+=($!)
if command -v moto_server >/dev/null 2>&1; then moto=(moto_server); else moto=(python3 -m moto.server); fi
(cd "$work" && exec "${moto[@]}" -H 127.0.0.1 -p $s3_port >"$work/moto.log" 2>&1) & pids+=($!)
for port in $redis_port $dav_port $s3_port; do
    for _ in $(seq 150); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.2
    done
done
# moto checks no signature but wants a named user.
curl -sf -X PUT "http://127.0.0.1:$s3_port/$bucket" \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00' \
    >/dev/null
echo bench-secret >"$work/s3.secret"

export HG_DISCOVERY__MDNS__ENABLED=false HG_LOG_LEVEL=warn
export HOME="$work/home"; mkdir -p "$HOME"
unset HG_COORDINATOR

objects() { (cd "$src" && find . -name '*.o' -newer "$work/stamp" -print0 | sort -z | xargs -0 sha256sum); }
clean() { (cd "$src" && make -s clean >/dev/null 2>&1 || true); }
reference=""
declare -A times

timed_make() { # name, CC value, env...
    local name=$1 cc=$2; shift 2
    clean; touch "$work/stamp"; sleep 0.01
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$src" && env "$@" make -s -j"$jobs" $target CC="$cc" >"$work/$name.out" 2>&1) || {
        echo "build $name failed:"; tail -20 "$work/$name.out"; exit 1; }
    t1=$(date +%s.%N)
    local objs; objs=$(objects)
    if [ -z "$reference" ]; then reference=$objs
    elif [ "$objs" != "$reference" ]; then
        echo "$name: objects differ from the plain build"; diff <(echo "$reference") <(echo "$objs") | head; exit 1
    fi
    times[$name]+="$(echo "$t1 - $t0" | bc) "
}

remote_env() { # backend -> the HG_CACHE__REMOTE__* variables
    case "$1" in
        redis) echo "HG_CACHE__REMOTE__BACKEND=redis HG_CACHE__REMOTE__URL=redis://127.0.0.1:$redis_port/0" ;;
        webdav) echo "HG_CACHE__REMOTE__BACKEND=webdav HG_CACHE__REMOTE__URL=http://127.0.0.1:$dav_port" ;;
        s3) echo "HG_CACHE__REMOTE__BACKEND=s3 HG_CACHE__REMOTE__URL=http://127.0.0.1:$s3_port" \
                 "HG_CACHE__REMOTE__BUCKET=$bucket HG_CACHE__REMOTE__ACCESS_KEY_ID=bench" \
                 "HG_CACHE__REMOTE__SECRET_ACCESS_KEY_FILE=$work/s3.secret" ;;
    esac
}

# The remote stores are filled once by a cold build each (not timed); the
# timed builds start from an empty local tier every time.
hg_local_clear() { "$bin/hgbuild" cache clear >/dev/null; rm -f "$HOME/.hybridgrid/cache/remote-down"; }

timed_make plain "$cc_plain"
for b in redis webdav s3; do
    hg_local_clear
    # shellcheck disable=SC2046
    timed_make "fill-$b" "$bin/hgbuild $cc_plain" $(remote_env "$b")
    if grep -q 'remote cache unavailable' "$work/fill-$b.out"; then
        echo "the $b server was unavailable while filling:"; cat "$work/fill-$b.out"; exit 1
    fi
done

# sccache: with the same Redis if this sccache has Redis support.
SCCACHE_DIR="$work/sccache" "$sccache_bin" --stop-server >/dev/null 2>&1 || true
sccache_mode=redis
if ! SCCACHE_DIR="$work/sccache" SCCACHE_REDIS="redis://127.0.0.1:$redis_port/1" \
        SCCACHE_IDLE_TIMEOUT=0 "$sccache_bin" --start-server >"$work/sccache-start.log" 2>&1; then
    sccache_mode=disk
    echo "note: $sccache_bin has no Redis support ($(tail -1 "$work/sccache-start.log")); measuring its local disk cache instead"
    SCCACHE_DIR="$work/sccache" SCCACHE_IDLE_TIMEOUT=0 "$sccache_bin" --start-server >/dev/null 2>&1
fi
timed_make sccache-fill "$sccache_bin $cc_plain"

for r in $(seq "$runs"); do
    echo "run $r/$runs"
    timed_make plain "$cc_plain"
    for b in redis webdav s3; do
        hg_local_clear
        # shellcheck disable=SC2046
        timed_make "hybridgrid-$b" "$bin/hgbuild $cc_plain" $(remote_env "$b")
        if grep -q 'remote cache unavailable' "$work/hybridgrid-$b.out"; then
            echo "the $b server was unavailable:"; cat "$work/hybridgrid-$b.out"; exit 1
        fi
    done
    timed_make sccache-warm "$sccache_bin $cc_plain"
done
# Every compile of the timed builds was a remote hit, not a compile.
hg_local_clear
# shellcheck disable=SC2046
(cd "$src" && clean && env $(remote_env redis) HG_VERBOSE=1 make -s -j"$jobs" $target \
    CC="$bin/hgbuild $cc_plain" >"$work/check.out" 2>&1)
# `[remote local]`: compiled here after a miss. `[local <why>]`: a call no
# cache takes (compile-and-link in one command); plain gcc runs it too.
misses=$(grep -c '\[remote ' "$work/check.out" || true)
hits=$(grep -c '\[cache\]' "$work/check.out" || true)
uncached=$(grep -c '\[local' "$work/check.out" || true)
grep '\[local' "$work/check.out" | sed 's/^/not cacheable: /' || true
[ "$misses" = 0 ] && [ "$hits" -gt 0 ] || {
    echo "expected only cache hits: $hits hits, $misses misses"; grep -v '\[cache\]' "$work/check.out" | head -20; exit 1; }
sc_stats=$(SCCACHE_DIR="$work/sccache" "$sccache_bin" --show-stats 2>&1)
sc_hits=$(echo "$sc_stats" | awk '/^Cache hits/ && NF==3 {print $3; exit}')

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
base=$(echo "${times[plain]}" | median)

{
    echo "## Remote cache benchmark: $project ($(date -u +%Y-%m-%d))"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo), $(uname -sr);" \
         "gcc $(gcc -dumpfullversion), hybridgrid $("$bin/hgbuild" --version | awk '{print $2}')$([ $quick = 1 ] && echo ' (debug build)')," \
         "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), nginx $(nginx -v 2>&1 | sed 's|.*/||'), moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo '?')," \
         "sccache $("$sccache_bin" --version | awk '{print $2}')."
    echo "All servers on 127.0.0.1 in a private network namespace. hgbuild without a coordinator (\`cache.remote\` on the client),"
    echo "its local cache emptied before every timed build, so every compile is answered by the remote tier (checked in a"
    echo "verifying build: $hits cache hits, $misses misses; $uncached compile-and-link calls no cache takes run gcc in every variant)."
    echo "Stores filled once by an untimed cold build."
    if [ $sccache_mode = redis ]; then
        echo "sccache with \`SCCACHE_REDIS\` on the same redis-server (database 1); $sc_hits hits."
    else
        echo "This sccache was built without Redis support (\`Server startup failed: cache type is not enabled\`), so it is"
        echo "measured on its local disk cache ($sc_hits hits over its timed builds): no network at all, so it favours sccache."
    fi
    echo "Command: \`bench/remote-cache.sh --project $project --runs $runs --jobs $jobs\`. Median of $runs runs, variants alternating;"
    echo "every build's objects equal the plain build's."
    echo
    echo "| build | median wall time (s) | ratio to plain make |"
    echo "|---|---:|---:|"
    for name in plain hybridgrid-redis hybridgrid-webdav hybridgrid-s3 sccache-warm; do
        m=$(echo "${times[$name]}" | median)
        label=$name
        case $name in
            plain) label="plain make (gcc, no cache)" ;;
            hybridgrid-*) label="hgbuild, all hits from ${name#hybridgrid-}" ;;
            sccache-warm) label="sccache, all hits from $sccache_mode" ;;
        esac
        printf '| %s | %.2f | %.2fx |\n' "$label" "$m" "$(echo "$m / $base" | bc -l)"
    done
    echo
} > "$work/section.md"

cat "$work/section.md"
if [ $quick = 0 ]; then
    python3 "$here/bench/write-section.py" "$out" "$work/section.md" "## Remote cache benchmark: $project ("
    echo "wrote $out"
fi
