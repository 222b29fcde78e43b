#!/usr/bin/env bash
# Install mailsocketd into ./.venv and run it in the foreground on its defaults
# (127.0.0.1:65000). Extra arguments go to `twistd mailsocketd`, e.g. --config FILE.
# It reinstalls only when the checkout has changed since the last run.
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
# Install only when the checkout changed since the last install (a hash of the files that make
# the package), not on every start: pip install . takes seconds even when nothing changed.
stamp=.venv/.mailsocketd-installed
checkout=$(find pyproject.toml README.md LICENSE mailsocketd twisted -type f \
               ! -path '*/__pycache__/*' ! -name dropin.cache -print0 2>/dev/null \
           | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1 || true)
if [ "$(cat "$stamp" 2>/dev/null)" != "$checkout" ]; then
    echo "run.sh: installing mailsocketd into .venv (the checkout changed)" >&2
    rm -f "$stamp"
    .venv/bin/pip install --quiet --disable-pip-version-check .
    echo "$checkout" > "$stamp"
fi
exec .venv/bin/twistd -n --pidfile= mailsocketd "$@"
