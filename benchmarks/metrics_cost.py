"""The cost of [metrics] to the line service: inside one process, and end to end in pairs.

Counting requests by command and outcome is the only work [metrics] adds to a request (the
rest is read at scrape time).  The repetitions of the line section start every server afresh,
and a fresh process on this kind of shared machine runs 10-20% faster or slower than the next
for reasons of its own, which is more than the few percent to be told apart.  So:

1. count_cost.py measures the counting code itself: ns per ``time`` request through the
   daemon's protocol without and with counting, alternating (see there);
2. the paired end-to-end runs keep one daemon without and one with ``[metrics] listen`` running
   side by side and alternate short loads between them (which goes first alternates too), so
   each pair is measured within seconds, by the same two processes: what they show beyond the
   in-process figure would be a cost outside the counting code (the endpoint, the imports).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import line_bench as lb
from procs import SERVER_CPU

PAIRED_WORKS = ["rr100", "pipe16"]
PLAIN, METRICS = "mailsocketd", "mailsocketd_metrics"


def in_process(paths: lb.Paths, pairs: int) -> dict[str, Any]:
    """count_cost.py's figures, run with the measured venv's python on the servers' CPU."""
    script = Path(__file__).with_name("count_cost.py")
    out = subprocess.run(
        ["taskset", "-c", SERVER_CPU, str(paths.venv / "bin" / "python"), str(script),
         "--pairs", str(pairs)],
        cwd=paths.scratch, capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def paired(paths: lb.Paths, settings: lb.LineSettings, rounds: int,
           say: Callable[[str], None]) -> dict[str, Any]:
    """``rounds`` pairs of runs per workload against two daemons running side by side."""
    kinds = {k.key: k for k in lb.KINDS}
    works = {w.key: w for w in lb.WORKLOADS}
    servers = {key: lb.make_server(kinds[key], paths) for key in (PLAIN, METRICS)}
    pairs: dict[str, list[dict[str, float]]] = {w: [] for w in PAIRED_WORKS}
    try:
        for server in servers.values():
            server.start()
        for number in range(rounds):
            order = [PLAIN, METRICS] if number % 2 == 0 else [METRICS, PLAIN]
            for key in PAIRED_WORKS:
                figures: dict[str, float] = {}
                for kind in order:
                    run = lb.run_workload(servers[kind], kinds[kind], works[key], paths,
                                          settings)
                    if not run["alive"] or run["ok"] < works[key].conns:
                        raise RuntimeError(f"{kind} failed the paired {key} run: {run['line']}")
                    figures[kind] = run["rps"]
                    time.sleep(0.3)
                pairs[key].append(figures)
                say(f"  [metrics] pair {number + 1} of {rounds}, {works[key].label}: "
                    f"{figures[METRICS] / figures[PLAIN]:.3f}x")
    finally:
        for server in servers.values():
            server.stop()
            lb.discard_log(server)
    return {"rounds": rounds, "pairs": pairs,
            "median_ratio": {key: round(statistics.median(
                p[METRICS] / p[PLAIN] for p in pairs[key]), 4) for key in PAIRED_WORKS}}


def run_metrics_cost(paths: lb.Paths, settings: lb.LineSettings,
                     say: Callable[[str], None]) -> dict[str, Any]:
    say("line service: the cost of [metrics] (in one process, then in pairs)")
    inside = in_process(paths, settings.count_pairs)
    for shape, figures in inside.items():
        say(f"  counting, {shape}: {figures['off_ns_median']:.0f} -> "
            f"{figures['on_ns_median']:.0f} ns per request (+{figures['delta_ns']:.0f} ns)")
    return {"in_process": inside, "paired": paired(paths, settings, settings.pair_rounds, say)}


if __name__ == "__main__":
    sys.exit("run through bench.py (bash benchmarks/run.sh --only line)")
