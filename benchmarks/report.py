"""Build docs/benchmarks.md and docs/benchmarks/*.png from the newest results of each section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import report_line
import report_mail
from report_util import table

HEADER = """\
# Benchmarks

mailsocketd measured against its anchors, in the same run on the same machine. This file and
the plots in [benchmarks/](benchmarks/) are written by `bash benchmarks/run.sh` (see
[benchmarks/README.md](../benchmarks/README.md)); do not edit them by hand, run it again.
"""

METHOD = """\
## How it is measured

- The machine has 2 CPUs. Every server under test runs pinned to CPU 0 (`taskset -c 0`), the
  load generator to CPU 1 (`taskset -c 1`); everything talks over 127.0.0.1.
- Each figure is the **median of {runs} repetitions**. The repetitions are interleaved: each one
  starts every server afresh (in a rotated order) and runs every workload on it, so the ratios
  compare figures taken under the same conditions. Every run is bounded in time; each
  measured phase follows an unrecorded warm-up of the same load.
- The line load generator is `benchmarks/anchors/loadgen.c` (epoll, C, closed loop: each
  connection sends a request and waits for its reply). **loadgen CPU** is the generator's own
  CPU time (user + system, from `wait4` on its pid) over its wall time, in % of one CPU: near
  100% means the generator, not the server, was the limit. CPU 0 / CPU 1 are the busy shares
  of the two CPUs during the measured phase (from /proc/stat), steal is the hypervisor's.
- mailsocketd speaks `time\\n`; the seeds read raw 4096-byte chunks and answer the bare `time`
  with no line ending, so they are driven with `--newline none --inflight 1` and cannot be
  pipelined.
- Ratios are mailsocketd / anchor, both from the same repetitions.
- Benchmarks are not tests: nothing here is asserted by the test suite.
"""


def newest(results: Path, section: str) -> dict[str, Any] | None:
    """The newest saved result of a section, or None."""
    files = sorted(results.glob(f"{section}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def machine_table(runs: list[dict[str, Any]]) -> list[str]:
    """Where and when each section ran."""
    keys = ["cpu", "memory", "os", "python", "twisted", "mailsocketd", "php", "gcc",
            "dovecot", "postfix", "open_files", "busy_before_start", "commit"]
    header = ["", *[f"{r['section']} section" for r in runs]]
    rows = [["run", *[f"{r['started']}, {r['mode']} run, {r['elapsed_s']:.0f} s" for r in runs]],
            ["command", *[f"`{r['command']}`" for r in runs]]]
    for key in keys:
        values = [str(r["machine"].get(key, "")) for r in runs]
        if key == "mailsocketd":
            values = [v.split(" ", 1)[0] + " (installed in the venv, not the source tree)"
                      if v else v for v in values]
        rows.append([key.replace("_", " "), *values])
    return ["## Machine", "", *table(header, rows), ""]


def write_report(results: Path, docs: Path) -> list[Path]:
    """Write docs/benchmarks.md and its plots; return the files written."""
    line = newest(results, "line")
    mail = newest(results, "mail")
    runs = [r for r in (line, mail) if r is not None]
    if not runs:
        raise SystemExit("no results in benchmarks/results/: run bash benchmarks/run.sh first")
    images = docs / "benchmarks"
    written: list[Path] = []
    parts = [HEADER]
    targets: list[list[str]] = []
    body: list[str] = []
    if line is not None:
        part, rows, pngs = report_line.section(line, images)
        body += part
        targets += rows
        written += pngs
    if mail is not None:
        part, rows, pngs = report_mail.section(mail, images)
        body += part
        targets += rows
        written += pngs
    parts += ["## Targets", "",
              *table(["target (issue 5)", "figure", "met?"], targets), ""]
    parts += machine_table(runs)
    line_runs = line["results"]["settings"]["runs"] if line else 3
    parts += [METHOD.format(runs=line_runs), *body]
    out = docs / "benchmarks.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    return [out, *written]
