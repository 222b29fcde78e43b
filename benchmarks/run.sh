#!/usr/bin/env bash
# run.sh - run the benchmark suite and regenerate docs/benchmarks.md and docs/benchmarks/*.png.
#
# Usage: bash benchmarks/run.sh [--quick] [--only line|mail|long|calm [--long-minutes N]]
#                               [--venv DIR] [--no-install] [--report-only [--from RESULTS]]
#   --quick        short runs, 1,000 instead of 10,000 idle connections (for development)
#   --only S       one section: line (the line service), mail (Dovecot, the anchors, the mail
#                  commands), long (the long run with faults, issue 16: about 12 minutes, 4
#                  with --quick; never part of the default run, which keeps its published
#                  results; --long-minutes N sets its minutes of load), or calm (the long
#                  run's load without faults: issue 16's 10-minute mail load for memory);
#                  the report keeps the published results of the other sections
#   --venv DIR     the virtualenv to install mailsocketd into and measure [default: .venv]
#   --no-install   skip apt-get, pip and the loadgen build (all must be there already)
#   --report-only  measure nothing, install nothing: rebuild the report from the raw results
#                  (docs/benchmarks/results.json, or --from RESULTS); needs matplotlib
#
# Raw results: each section's in benchmarks/results/ (not committed), and the published run's
# in docs/benchmarks/results.json (committed, beside the report generated from it).  A run from
# a tree with uncommitted changes to what is measured is marked at the top of the report.
#
# On a fresh Debian 12 with Python 3.11, as root: installs php-cli, php-imap and gcc with the Debian
# packages of the tests (scripts/system-packages.sh: Dovecot, Postfix), creates or
# reuses the venv and installs the daemon into it (pip install '.[bench]', not editable: the
# daemon is measured as installed), builds benchmarks/build/loadgen, raises the open-file limit
# and runs benchmarks/bench.py.  A full run takes about 15 minutes and loads both CPUs: run it
# on an otherwise quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
install=1
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --venv) venv=${2:?--venv needs a directory}; shift 2 ;;
        --no-install) install=; shift ;;
        --only) args+=("$1" "${2:?--only needs line, mail, long or calm}"); shift 2 ;;
        --report-only) install=; args+=("$1"); shift ;;
        --from) install=; args+=("--report-only" "$1" "${2:?--from needs a results file}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) args+=("$1"); shift ;;
    esac
done

if [ -n "$install" ]; then
    # the tests' packages (Dovecot, Postfix for the mail section) and the benchmarks' own
    bash scripts/system-packages.sh php-cli php-imap gcc libc6-dev util-linux
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    venv=$(cd "$venv" && pwd)
    "$venv/bin/pip" install --quiet --disable-pip-version-check '.[bench]'
    # write Twisted's plugin cache now (from outside the tree, so the installed plugin is seen)
    (cd / && "$venv/bin/python" -c \
        'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))' 2>/dev/null ||
        true)
    mkdir -p benchmarks/build
    if [ ! -x benchmarks/build/loadgen ] || [ benchmarks/anchors/loadgen.c -nt benchmarks/build/loadgen ]; then
        gcc -O2 -Wall -o benchmarks/build/loadgen benchmarks/anchors/loadgen.c
    fi
fi

# 10,000 connections need 10,000 descriptors on each side
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 32768 ] && [ "$(id -u)" = 0 ]; then
    ulimit -Hn 32768 2>/dev/null || true
fi
ulimit -Sn "$(ulimit -Hn)"

exec "$venv/bin/python" benchmarks/bench.py "${args[@]}"
