"""Reduce raw benchmark results to the figures the report shows: medians, ratios, failures."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

LINE_METRICS = ("rps", "p50_us", "p99_us", "loadgen_cpu_pct", "server_cpu_pct", "cpu0", "cpu1",
                "steal", "cpu0_others_pct", "cpu0_interrupts_pct")


@dataclass
class Figure:
    """One server under one workload, reduced over the repetitions."""

    median: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    runs: int
    fewest_ok: int
    conns: int
    died: bool

    @property
    def failure(self) -> str | None:
        """Why the figure does not stand for the workload (None: it does)."""
        if self.died:
            return "fails: the server died"
        if self.fewest_ok < self.conns:
            return f"fails: served {self.fewest_ok:,} of {self.conns:,} connections"
        if self.median["rps"] == 0:
            return "fails: no reply within the measured time"
        return None


def line_figures(line: dict[str, Any]) -> dict[tuple[str, str], Figure]:
    """(kind, workload) -> Figure, from every repetition of the line section."""
    works = {w["key"]: w for w in line["workloads"]}
    out: dict[tuple[str, str], Figure] = {}
    for kind in line["kinds"]:
        for key, work in works.items():
            runs = [rep[kind["key"]][key] for rep in line["repetitions"]
                    if key in rep.get(kind["key"], {})]
            if not runs:
                continue
            metrics = [m for m in LINE_METRICS if all(m in r for r in runs)]
            out[kind["key"], key] = Figure(
                median={m: statistics.median(r[m] for r in runs) for m in metrics},
                low={m: min(r[m] for r in runs) for m in metrics},
                high={m: max(r[m] for r in runs) for m in metrics},
                runs=len(runs), fewest_ok=min(r["ok"] for r in runs), conns=work["conns"],
                died=any(not r["alive"] for r in runs))
    return out


def startup_median(line: dict[str, Any], kind: str) -> float | None:
    """Median start-up seconds (command to first answered `time`) over the repetitions."""
    values = [rep[kind]["startup_s"] for rep in line["repetitions"] if kind in rep]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def repetition_ratios(line: dict[str, Any], kind: str, base: str, work: str) -> list[float]:
    """kind's req/s over base's in each repetition (both measured minutes apart at most): the
    spread shows how much of a ratio of medians is the machine's noise."""
    out = []
    for rep in line["repetitions"]:
        a, b = rep.get(kind, {}).get(work), rep.get(base, {}).get(work)
        if a is not None and b is not None and b.get("rps"):
            out.append(a["rps"] / b["rps"])
    return out


def rps(figures: dict[tuple[str, str], Figure], kind: str, work: str) -> float | None:
    """The median req/s, or None where the workload was not run or the server failed."""
    figure = figures.get((kind, work))
    if figure is None or figure.failure:
        return None
    return figure.median["rps"]


MEMORY_TARGET_KB = 4.0


def idle_failure(idle: dict[str, Any]) -> str | None:
    """Why a server fails the idle-connection test (None: it passes)."""
    if idle["ok"] < idle["conns"]:
        note = "" if idle["answers_new_client"] else ", then answered no new client"
        return f"fails: held {idle['ok']:,} of {idle['conns']:,}{note}"
    if not idle["answers_new_client"]:
        return "fails: answered no new client while holding them"
    per = per_conn_kb(idle)
    if per is not None and per > MEMORY_TARGET_KB:
        return (f"fails: {per:,.0f} KB per connection, {per / MEMORY_TARGET_KB:,.0f}x the "
                f"{MEMORY_TARGET_KB:.0f} KB target ({idle['processes']:,} processes)")
    return None


def per_conn_kb(idle: dict[str, Any]) -> float | None:
    """PSS growth per held connection, in KiB.  PSS splits shared pages among the processes
    sharing them, so a fork server's children are not charged the parent's pages each (their
    RSS is); for one process the two are about equal."""
    value = idle["pss_per_conn_b"]
    # PSS also moves with other processes sharing the same pages: a change below zero
    # (seen with the select server, which holds almost nothing) means "too small to tell"
    return None if value is None or value <= 0 else value / 1024
