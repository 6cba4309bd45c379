#!/usr/bin/env bash
# Install the peer gateways bench/run compares against, each in its own venv (git-ignored):
#   bench/.peers-venv   LiteLLM proxy (`litellm[proxy]` from PyPI)
# bench/run adds LiteLLM to its plain and stream suites whenever bench/.peers-venv/bin/litellm exists.
# Idempotent: an existing venv is upgraded in place. Remove the folder to uninstall.
#
#   bench/peers.sh                       # latest litellm
#   LITELLM_SPEC='litellm[proxy]==1.106.2' bench/peers.sh   # the version measured in docs/performance.md
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.peers-venv"
spec="${LITELLM_SPEC:-litellm[proxy]}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "bench/peers.sh: $python is older than 3.9, which LiteLLM needs" >&2
    exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "bench/peers.sh: creating $venv"
    "$python" -m venv "$venv" || {
        echo "bench/peers.sh: $python -m venv failed (Debian's python3 needs: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "bench/peers.sh: installing $spec (a few minutes: LiteLLM pulls in about 100 packages)"
"$venv/bin/python" -m pip install --quiet --upgrade "$spec"

# A smoke test: the proxy's CLI loads (imports the whole proxy app).
LITELLM_LOCAL_MODEL_COST_MAP=True "$venv/bin/litellm" --version
echo "bench/peers.sh: done; bench/run now runs LiteLLM proxy in its plain and stream suites too"
