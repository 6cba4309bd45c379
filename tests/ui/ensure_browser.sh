#!/bin/sh
# Installs what the dashboard's browser tests (tests/ui/) drive: Debian's headless Chromium
# and its ChromeDriver. Runs apt-get only when one of them is missing, so a machine that has
# them (or a developer's laptop without root) pays nothing. Called by the README test command.
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "tests/ui/ensure_browser.sh: chromium/chromium-driver are missing and this is not root;" >&2
    echo "  install them: sudo apt-get install -y chromium chromium-driver" >&2
    echo "  (the browser tests will fail, loudly, until they are installed)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version
