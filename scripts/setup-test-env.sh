#!/usr/bin/env bash
# Installs and starts what the test suite needs on a fresh Debian machine
# (run as root). Idempotent: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(gcc g++ clang make cmake ninja-build meson ccache file iproute2 curl procps bubblewrap util-linux bc)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Optional parts, each in its own script, run when present.
for extra in scripts/setup.d/*.sh; do
    [ -e "$extra" ] || continue
    echo "setup: $extra"
    bash "$extra"
done
echo "setup: done"
