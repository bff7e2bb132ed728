#!/usr/bin/env bash
# Docker for the Docker executor tests (hybridgrid-exec/tests/docker.rs,
# bins/tests/docker_e2e.rs): installs docker.io and debootstrap, and the
# aarch64 cross compiler for the client side of the end-to-end test (hgbuild
# preprocesses with it; the worker compiles in the image), starts dockerd
# (scripts/start-dockerd.sh, no systemd needed) and builds the local test
# images (scripts/build-test-images.sh; images that exist are reused).
# Idempotent; run as root on Debian. On a fresh machine it took 6.5 minutes
# with the machine busy (load 12 on 2 cores: apt about 1 minute, one
# debootstrap of the cross image about 5); when everything is there it takes
# a few seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # Keep the packages' scripts from starting daemons: dockerd is started
    # below, in the background, the same way on every machine.
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f "$policy"
fi

scripts/start-dockerd.sh
scripts/build-test-images.sh cross-arm64 gcc
