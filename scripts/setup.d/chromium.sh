#!/usr/bin/env bash
# Headless Chromium for the dashboard browser test (bins/tests/dashboard_browser.rs).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
