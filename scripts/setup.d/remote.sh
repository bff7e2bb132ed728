#!/usr/bin/env bash
# Servers for the remote cache tier tests (hybridgrid-cache/tests/remote.rs,
# bins/tests/remote_cache.rs): redis-server, nginx with the WebDAV module,
# and moto's S3-compatible server. Each test starts its own instance on a
# free loopback port; nothing is started here. Idempotent.
set -euo pipefail
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    need_apt+=(nginx)
fi
# PROPFIND for the `webdav` backend (nginx's own dav module lacks it).
[ -e /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] || need_apt+=(libnginx-mod-http-dav-ext)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# Debian's packaged services must not keep the ports or run in the
# background of a CI machine: the tests start their own instances.
for svc in redis-server nginx; do
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    service "$svc" stop >/dev/null 2>&1 || true
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if ! "$nginx_bin" -V 2>&1 | grep -q -- --with-http_dav_module; then
    echo "remote.sh: $nginx_bin has no http_dav_module" >&2
    exit 1
fi
if ! command -v moto_server >/dev/null 2>&1 && ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip
    fi
    # Debian's own python refuses pip installs into it (PEP 668) unless told.
    python3 -m pip install --quiet 'moto[server]' 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
