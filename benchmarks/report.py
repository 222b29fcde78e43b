"""Build docs/benchmarks.md and docs/benchmarks/*.png from raw results.

    python benchmarks/report.py [--from RESULTS] [--docs DIR]

RESULTS is the combined results file (default: docs/benchmarks/results.json, the committed raw
results of the published run), one section's file from benchmarks/results/, or that directory
(its newest file of each section).  The report is always written next to the raw results it
was built from: when RESULTS is not DIR/benchmarks/results.json, its sections replace those
published there (a section it lacks is kept), and the report is built from the result.
Needs matplotlib (the ``bench`` extra) for the plots; nothing is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import report_line
import report_long
import report_mail
from provenance import commit_text, dirty_banner, section_tree
from report_util import table
from verdict import ON_THE_LINE_NOTE

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
RESULTS_NAME = "results.json"  # in DOCS / "benchmarks", beside the plots
FORMAT = "mailsocketd-benchmarks/1"
SECTIONS = ("line", "mail", "long", "calm")  # calm: the long run without faults
# each section's part of the report: (its text, its target rows, the plots written)
SECTION_REPORTS = {"line": report_line.section, "mail": report_mail.section,
                   "long": report_long.section, "calm": report_long.section}

HEADER = """\
# Benchmarks

mailsocketd measured against its anchors, in the same run on the same machine. This file and
the plots in [benchmarks/](benchmarks/) are written by `bash benchmarks/run.sh` (see
[benchmarks/README.md](../benchmarks/README.md)); do not edit them by hand, run it again.
They are generated from the run's raw results, committed beside them in
[benchmarks/results.json](benchmarks/results.json): `python benchmarks/report.py` rebuilds
them from that file alone.
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
    """The newest saved result of a section in a directory of section files, or None."""
    files = sorted(results.glob(f"{section}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    """Section name -> saved run, from a combined results file, one section's file, or a
    directory of section files (the newest of each section)."""
    if path.is_dir():
        found = {s: newest(path, s) for s in SECTIONS}
        return {s: run for s, run in found.items() if run is not None}
    data = json.loads(path.read_text())
    if "sections" in data:
        runs: dict[str, dict[str, Any]] = data["sections"]
        return {s: runs[s] for s in SECTIONS if s in runs}
    if data.get("section") in SECTIONS:
        return {data["section"]: data}
    raise ValueError(f"{path}: neither a results file nor a section's results")


def save_runs(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """The combined results file the report is generated from (sections in a fixed order)."""
    data = {"format": FORMAT,
            "about": "Raw results of the benchmark run that docs/benchmarks.md shows; "
                     "python benchmarks/report.py rebuilds the report from this file.",
            "sections": {s: runs[s] for s in SECTIONS if s in runs}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def machine_table(runs: list[dict[str, Any]]) -> list[str]:
    """Where and when each section ran."""
    keys = ["cpu", "memory", "os", "python", "twisted", "mailsocketd", "php", "gcc",
            "dovecot", "postfix", "open_files", "busy_before_start"]
    header = ["", *[f"{r['section']} section" for r in runs]]
    rows = [["run", *[f"{r['started']}, {r['mode']} run, {r['elapsed_s']:.0f} s" for r in runs]],
            ["command", *[f"`{r['command']}`" for r in runs]]]
    for key in keys:
        values = [str(r["machine"].get(key, "")) for r in runs]
        if key == "mailsocketd":
            values = [v.split(" ", 1)[0] + " (installed in the venv, not the source tree)"
                      if v else v for v in values]
        rows.append([key.replace("_", " "), *values])
    rows.append(["commit", *[commit_text(section_tree(r)) for r in runs]])
    return ["## Machine", "", *table(header, rows), ""]


def write_report(runs: dict[str, dict[str, Any]], docs: Path) -> list[Path]:
    """Write docs/benchmarks.md and its plots from the runs; return the files written."""
    if not any(section in runs for section in SECTIONS):
        raise SystemExit("no results: run bash benchmarks/run.sh first")
    line = runs.get("line")
    images = docs / "benchmarks"
    written: list[Path] = []
    parts = [HEADER, *dirty_banner({s: runs[s] for s in SECTIONS if s in runs})]
    targets: list[list[str]] = []
    body: list[str] = []
    for section in SECTIONS:  # each section's report: its text, target rows and plots
        if section in runs:
            part, rows, pngs = SECTION_REPORTS[section](runs[section], images)
            body += part
            targets += rows
            written += pngs
    parts += ["## Targets", "",
              *table(["target (issue 5; long run: issue 16)", "figure", "met?"], targets), "",
              ON_THE_LINE_NOTE, ""]
    parts += machine_table([runs[s] for s in SECTIONS if s in runs])
    line_runs = line["results"]["settings"]["runs"] if line else 3
    parts += [METHOD.format(runs=line_runs), *body]
    out = docs / "benchmarks.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    return [out, *written]


def publish(runs: dict[str, dict[str, Any]], docs: Path, source: Path | None = None
            ) -> list[Path]:
    """The report and, unless it was read from there, the raw results beside it: ``runs``
    replace the published sections they have; a section they lack is kept as published."""
    results = docs / "benchmarks" / RESULTS_NAME
    written = []
    if source is None or source.resolve() != results.resolve():
        if results.exists():
            runs = load_runs(results) | runs
        written.append(save_runs(runs, results))
    return [*written, *write_report(runs, docs)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path,
                        default=DOCS / "benchmarks" / RESULTS_NAME,
                        help="raw results to build the report from "
                             "[default: docs/benchmarks/results.json]")
    parser.add_argument("--docs", type=Path, default=DOCS,
                        help="where to write benchmarks.md and benchmarks/ [default: docs]")
    args = parser.parse_args(argv)
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    for path in publish(load_runs(args.source), args.docs, args.source):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
