#!/usr/bin/env bash
# Install mailsocketd into ./.venv and run it in the foreground on its defaults
# (127.0.0.1:65000). Extra arguments go to `twistd mailsocketd`, e.g. --config FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "python3-venv is missing: run 'sudo apt-get install python3-venv' first" >&2
        exit 1
    fi
fi
[ -x .venv/bin/pip ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check .
exec .venv/bin/twistd -n --pidfile= mailsocketd "$@"
