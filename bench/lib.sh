# Shared pieces of the bench scripts; sourced, not run.

# Installs the Debian packages among "$@" that are missing (no service is
# started by the install).
bench_install() {
    local missing=() p created_policy=0
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ $created_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# Makes the run's work directory ($work, named after PREFIX) with a HOME of
# its own inside ($work/home), and on exit runs the caller's `bench_on_exit`
# if it defines one (servers that are not children: sccache), stops the
# processes in `pids` and removes the directory.
bench_workdir() { # PREFIX
    work=$(mktemp -d "/tmp/$1-XXXXXX")
    pids=() grid_dirs=()
    trap bench_cleanup EXIT
    export HOME="$work/home"
    mkdir -p "$HOME"
}

bench_cleanup() {
    if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work" "${grid_dirs[@]}"
}

# Starts a loopback grid from the binaries in BIN, logging into WORK: a
# coordinator (gRPC on PORT, HTTP on PORT+1) whose shared cache tier is off,
# so that every compile the client does not answer reaches a worker, and
# two workers. Appends their process ids to the caller's `pids`, exports
# HG_COORDINATOR, and returns once both workers are registered (fails after
# 20 s). mDNS is off; HOME should be a directory of the run's own.
bench_start_grid() { # BIN WORK PORT
    local bin=$1 work=$2 port=$3 i tasks
    export HG_DISCOVERY__MDNS__ENABLED=false HG_LOG_LEVEL=warn
    # The workers' task directories and input stores: on the tmpfs a worker
    # would choose itself, in a directory of this run's, removed at exit.
    tasks=$(mktemp -d /dev/shm/hg-bench-XXXXXX 2>/dev/null || mktemp -d "$work/tasks-XXXXXX")
    grid_dirs+=("$tasks")
    HG_CACHE__ENABLED=false "$bin/hg-coord" serve --bind 127.0.0.1 --grpc-port "$port" \
        --http-port $((port + 1)) >"$work/coord.log" 2>&1 & pids+=($!)
    for i in 1 2; do
        HG_WORKER__WORK_DIR="$tasks" "$bin/hg-worker" serve --bind 127.0.0.1 --coordinator "127.0.0.1:$port" \
            --grpc-port $((port + 10 + i)) --http-port $((port + 20 + i)) --id "w$i" \
            --max-tasks "$(nproc)" >"$work/w$i.log" 2>&1 & pids+=($!)
    done
    export HG_COORDINATOR="127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$((port + 1))/api/stats" 2>/dev/null | grep -q '"total":2' && return 0
        sleep 0.2
    done
    echo "the grid did not start:"; tail -5 "$work"/coord.log "$work"/w?.log
    return 1
}
