#!/usr/bin/env bash
# Install everything the tests need (Debian packages for the real Dovecot/Postfix, netcat,
# telnet; the project with its test extra in ./.venv) and run all checks: ruff, mypy, pytest.
# Extra arguments go to pytest, e.g. -k idle or tests/unit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
[ -x .venv/bin/pip ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check '.[test]'
.venv/bin/ruff check mailsocketd twisted tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
