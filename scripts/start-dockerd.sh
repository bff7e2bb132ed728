#!/bin/sh
# Starts a Docker daemon for tests on a machine without systemd.
#
# Installs docker.io if dockerd is missing, starts dockerd in the background
# if `docker info` does not answer, and waits (at most 60 s) until it does.
# Idempotent: a running daemon is left alone. Needs root.
#
#   scripts/start-dockerd.sh            # log in /var/log/hg-dockerd.log
set -eu

LOG=${HG_DOCKERD_LOG:-/var/log/hg-dockerd.log}

if docker info >/dev/null 2>&1; then
    echo "dockerd already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

echo "starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
echo $! > /run/hg-dockerd.pid

i=0
while ! docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        echo "dockerd did not answer within 60 s; last log lines:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "dockerd is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
