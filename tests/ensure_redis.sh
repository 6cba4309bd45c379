#!/bin/sh
# The state-layer tests (tests/test_state_backends.py) start a real redis-server of their own
# (issue 17). A fresh machine gets it from Debian here; without it the tests fail, never skip.
set -e
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "redis-server is missing: install it (Debian: apt-get install redis-server)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends redis-server >/dev/null
# The package starts a system service on 6379 where it can; the tests start their own servers.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
