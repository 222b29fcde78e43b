"""Run the benchmark suite and regenerate docs/benchmarks.md with its plots.

    VENV/bin/python benchmarks/bench.py [--quick] [--only line|mail|long|calm]
                                        [--report-only [--from RESULTS]]

Normally started by ``bash benchmarks/run.sh``, which installs what this needs first; the
daemon measured is the one installed in the virtualenv whose python runs this script.  Each
section's results go to ``benchmarks/results/SECTION-STAMP.json`` (not committed) and into
``docs/benchmarks/results.json`` (committed: the raw results the report is generated from), so
``--only mail`` keeps the line figures of the published run.  Each section records the commit
and the measured files that differ from it (provenance.py); a run from a dirty tree is marked
at the top of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import line_bench
import long_run
import mail_bench
import metrics_cost
import report
from procs import cpu_times, pin_self_to_load_cpu
from provenance import tree_state

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
DOCS = REPO / "docs"
PUBLISHED = DOCS / "benchmarks" / report.RESULTS_NAME  # the raw results the report shows


def _output(argv: list[str], cwd: Path | None = None) -> str:
    """First line a helper program prints ('' if it is missing or fails)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd,
                             check=False)
    except OSError:
        return ""
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else ""


def _cpuinfo() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def _busy_before(seconds: float = 2.0) -> str:
    """How busy each CPU was just before the run (other people's work shows up here)."""
    before = [cpu_times(c) for c in (0, 1)]
    time.sleep(seconds)
    after = [cpu_times(c) for c in (0, 1)]
    shares = [100 * (a.process_s + a.interrupt_s - b.process_s - b.interrupt_s)
              / max(1e-9, a.total_s - b.total_s) for b, a in zip(before, after, strict=True)]
    return f"CPU 0 {shares[0]:.0f}%, CPU 1 {shares[1]:.0f}% (over {seconds:g} s)"


def machine_info(venv: Path, scratch: Path) -> dict[str, str]:
    """What the figures were measured on, for the report's machine table."""
    python = str(venv / "bin" / "python")
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": f"{_cpuinfo()}, {os.cpu_count()} CPUs",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{_os_name()}, Linux {platform.release()}",
        "python": _output([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "twisted": _output([python, "-c", "import twisted; print(twisted.__version__)"],
                           cwd=scratch),
        "mailsocketd": _output([python, "-c", "import mailsocketd, sys; "
                                "print(mailsocketd.__version__, mailsocketd.__file__)"],
                               cwd=scratch),
        "php": _output(["php", "-r", "echo PHP_VERSION;"]),
        "gcc": _output(["gcc", "-dumpfullversion"]),
        "dovecot": _output(["dovecot", "--version"]),
        "postfix": _output(["/usr/sbin/postconf", "-d", "-h", "mail_version"]),
        "busy_before_start": _busy_before(),
        "open_files": "soft {} / hard {}".format(*resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs and 1,000 idle connections (for development)")
    parser.add_argument("--only", choices=["line", "mail", "long", "calm"],
                        help="run one section only; 'long' is the long run with faults (issue "
                             "16), run only when asked for: about 12 minutes, 4 with --quick; "
                             "'calm' is the same load without faults (the memory goal's mail "
                             "load)")
    parser.add_argument("--long-minutes", type=float,
                        help="with --only long or calm: minutes of load [default: 10, "
                             "--quick 2.5]")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rebuild docs/benchmarks.md from raw results")
    parser.add_argument("--from", dest="source", type=Path,
                        help="with --report-only: the raw results "
                             "[default: docs/benchmarks/results.json]")
    args = parser.parse_args(argv)
    if args.source is not None and not args.report_only:
        parser.error("--from needs --report-only: a run measures, it reads no results")
    if args.long_minutes is not None and args.only not in ("long", "calm"):
        parser.error("--long-minutes needs --only long or --only calm")
    if args.long_minutes is not None and not 0.5 <= args.long_minutes <= 120:
        parser.error("--long-minutes: from 0.5 to 120")
    return args


def run_section(section: str, args: argparse.Namespace, paths: line_bench.Paths,
                stamp: str, command: str, tree: dict[str, Any]) -> dict[str, Any]:
    """Run one section, save its results in benchmarks/results/ and return them."""
    def say(text: str) -> None:
        print(text, flush=True)

    started = time.time()
    info = machine_info(paths.venv, paths.scratch)
    if section == "line":
        settings = line_bench.QUICK if args.quick else line_bench.FULL
        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < settings.idle_conns + 1000:
            say(f"warning: open-file hard limit below {settings.idle_conns + 1000}; "
                "the idle test will be cut short (raise it with ulimit -Hn as root)")
        results: dict[str, Any] = line_bench.run_line(paths, settings, say)
        results["metrics_cost"] = metrics_cost.run_metrics_cost(paths, settings, say)
    elif section == "mail":
        mail_settings = mail_bench.QUICK if args.quick else mail_bench.FULL
        results = mail_bench.run_mail(REPO, paths, mail_settings, say)
    else:
        long_settings = long_run.QUICK if args.quick else long_run.FULL
        if args.long_minutes is not None:
            long_settings = replace(long_settings, minutes=args.long_minutes)
        if section == "calm":
            long_settings = replace(long_settings, faults=False)
        results = long_run.run_long(REPO, paths, long_settings, say)
    data = {"section": section, "mode": "quick" if args.quick else "full",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "elapsed_s": round(time.time() - started, 1), "command": command,
            "machine": info, "tree": tree, "results": results}
    out = BENCH / "results" / f"{section}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    say(f"{section}: results in {out.relative_to(REPO)} ({data['elapsed_s']:.0f} s)")
    return data


def previous_runs() -> dict[str, dict[str, Any]]:
    """The published runs (or, before any was published, the newest in benchmarks/results/):
    what a one-section run keeps of the other section."""
    for source in (PUBLISHED, BENCH / "results"):
        if source.exists():
            return report.load_runs(source)
    return {}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["bash", "benchmarks/run.sh", *argv])
    if args.report_only:
        source = args.source or PUBLISHED
        if not source.exists():
            raise SystemExit(f"{source} does not exist: nothing to build the report from")
        written = report.publish(report.load_runs(source), DOCS, source)
    else:
        # a SIGTERM unwinds like Ctrl-C, so every server started so far is stopped by its pid
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        pin_self_to_load_cpu()
        scratch = Path(tempfile.mkdtemp(prefix="msd-bench."))
        # the venv whose python runs this script is the one mailsocketd is installed in
        paths = line_bench.Paths(venv=Path(sys.prefix), anchors=BENCH / "anchors",
                                 loadgen=BENCH / "build" / "loadgen", scratch=scratch)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        # the source measured: the tree as run.sh has just installed it
        tree = tree_state(REPO)
        if tree["dirty"]:
            print(f"note: {len(tree['dirty'])} measured files differ from {tree['short']}; "
                  "the report will say the run was made on a dirty tree", flush=True)
        runs = previous_runs() if args.only else {}
        try:
            for section in ("line", "mail", "long", "calm"):
                if args.only == section or (args.only is None
                                            and section not in ("long", "calm")):
                    runs[section] = run_section(section, args, paths, stamp, command, tree)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        written = report.publish(runs, DOCS)
    for path in written:
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
