#!/bin/sh
# Builds the Docker images the executor tests use, without a registry:
#
#   hybridgrid-test/cross-arm64:1  Debian minbase + gcc, libc6-dev,
#                                  gcc-aarch64-linux-gnu, libc6-dev-arm64-cross
#   hybridgrid-test/gcc:1          Debian minbase + gcc, libc6-dev; when the
#                                  cross image exists it is tagged as this one
#                                  too (it has the same native gcc), which saves
#                                  a second debootstrap
#
# Each is a debootstrap root file system turned into an image with
# `docker import`. An image that already exists is reused (idempotent).
# The Debian mirror is the one configured in /etc/apt/sources.list*.
# Needs root, a running dockerd (scripts/start-dockerd.sh) and debootstrap
# (installed here if missing).
#
#   scripts/build-test-images.sh [gcc|cross-arm64 ...]   # default: both
set -eu

SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

# The first configured mirror serving $SUITE (not -security / -updates),
# from either one-line (`deb URL SUITE ...`) or deb822 (`URIs:`/`Suites:`) files.
mirror() {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v s="$SUITE" '$1 == "deb" { u = $2; if (u ~ /^\[/) u = $3; for (i = 2; i <= NF; i++) if ($i == s) { print u; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v s="$SUITE" '
            /^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
            END { if (uri != "" && ok) print uri }' "$f"
    done
}

MIRROR=$(mirror | head -n 1)
if [ -z "$MIRROR" ]; then
    echo "no Debian mirror for $SUITE found in /etc/apt/sources.list*" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq debootstrap >/dev/null
fi

build() { # build TAG EXTRA_PACKAGES
    tag=$1
    extra=$2
    if docker image inspect "$tag" >/dev/null 2>&1; then
        echo "$tag: exists, reused"
        return 0
    fi
    rootfs=$(mktemp -d /tmp/hg-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT INT TERM
    echo "$tag: debootstrap $SUITE from $MIRROR"
    debootstrap --variant=minbase --include="gcc,libc6-dev$extra" \
        "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
        tail -n 30 "$rootfs.log" >&2
        rm -f "$rootfs.log"
        exit 1
    }
    rm -f "$rootfs.log"
    tar -C "$rootfs" --exclude='./var/cache/apt/archives/*.deb' \
        --exclude='./var/lib/apt/lists/*' --exclude=./usr/share/doc \
        --exclude=./usr/share/man --exclude=./usr/share/locale -c . |
        docker import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'WORKDIR /src' - "$tag" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT INT TERM
    echo "$tag: built"
}

[ $# -gt 0 ] || set -- cross-arm64 gcc
for which in "$@"; do
    case $which in
    gcc)
        if ! docker image inspect hybridgrid-test/gcc:1 >/dev/null 2>&1 &&
            docker image inspect hybridgrid-test/cross-arm64:1 >/dev/null 2>&1; then
            docker tag hybridgrid-test/cross-arm64:1 hybridgrid-test/gcc:1
            echo "hybridgrid-test/gcc:1: tagged hybridgrid-test/cross-arm64:1"
        else
            build hybridgrid-test/gcc:1 ""
        fi
        ;;
    cross-arm64) build hybridgrid-test/cross-arm64:1 ",gcc-aarch64-linux-gnu,libc6-dev-arm64-cross" ;;
    *) echo "unknown image $which (gcc | cross-arm64)" >&2; exit 2 ;;
    esac
done
