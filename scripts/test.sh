#!/usr/bin/env bash
# Install everything the tests need (Debian packages for the real Dovecot/Postfix, netcat,
# telnet; the project with its test extra in ./.venv) and run all checks: ruff, mypy, the
# architecture contracts (import-linter) and pytest on all of tests/ (unit and integration).
# Extra arguments go to pytest, e.g. -k idle or tests/unit; without a path, all of tests/ runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
[ -x .venv/bin/pip ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check '.[test]'
.venv/bin/ruff check mailsocketd twisted tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
for arg in "$@"; do
    case $arg in tests*) exec .venv/bin/pytest "$@" ;; esac
done
exec .venv/bin/pytest "$@" tests
