#!/usr/bin/env bash
# Downloads the upstream sources of the real projects the tests build
# (Debian source packages lua5.4, zlib, double-conversion, fribidi (Meson) and
# gzip (autotools)) into $HG_SOURCES_DIR
# (default /var/cache/hybridgrid-test-sources). Idempotent.
set -euo pipefail
dest=${HG_SOURCES_DIR:-/var/cache/hybridgrid-test-sources}
mkdir -p "$dest"
have() { ls "$dest"/$1 >/dev/null 2>&1; }
if have 'lua5.4_*.orig.tar.*' && have 'zlib_*.orig.tar.*' && have 'double-conversion_*.orig.tar.*' \
    && have 'fribidi_*.orig.tar.*' && have 'gzip_*.orig.tar.*'; then
    exit 0
fi
# Source entries for the same mirror and suites as the configured binary
# entries (the security suite serves no sources).
src=/etc/apt/sources.list.d/hybridgrid-deb-src.sources
if [ ! -e "$src" ]; then
    uris=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uris" ]; then
        uris=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
    cat > "$src" <<SRC
Types: deb-src
URIs: $uris
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
cd "$dest"
apt-get source --download-only -qq lua5.4 zlib double-conversion fribidi gzip >/dev/null
ls "$dest"
