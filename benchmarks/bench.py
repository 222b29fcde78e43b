"""Run the benchmark suite and regenerate docs/benchmarks.md with its plots.

    VENV/bin/python benchmarks/bench.py [--quick] [--only line|mail] [--report-only]

Normally started by ``bash benchmarks/run.sh``, which installs what this needs first; the
daemon measured is the one installed in the virtualenv whose python runs this script.  Results
of each section go to ``benchmarks/results/SECTION-STAMP.json``; the report is built from the
newest result of each section, so ``--only mail`` keeps the line figures of the last run.
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
from pathlib import Path
from typing import Any

import line_bench
import mail_bench
import report
from procs import cpu_times, pin_self_to_load_cpu

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


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
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
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
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs and 1,000 idle connections (for development)")
    parser.add_argument("--only", choices=["line", "mail"], help="run one section only")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild docs/benchmarks.md from the newest results")
    return parser.parse_args(argv)


def run_section(section: str, args: argparse.Namespace, paths: line_bench.Paths,
                stamp: str, command: str) -> Path:
    """Run one section and save its results; return the JSON file."""
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
    else:
        mail_settings = mail_bench.QUICK if args.quick else mail_bench.FULL
        results = mail_bench.run_mail(REPO, paths, mail_settings, say)
    data = {"section": section, "mode": "quick" if args.quick else "full",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "elapsed_s": round(time.time() - started, 1), "command": command,
            "machine": info, "results": results}
    out = BENCH / "results" / f"{section}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    say(f"{section}: results in {out.relative_to(REPO)} ({data['elapsed_s']:.0f} s)")
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["bash", "benchmarks/run.sh", *argv])
    if not args.report_only:
        # a SIGTERM unwinds like Ctrl-C, so every server started so far is stopped by its pid
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        pin_self_to_load_cpu()
        scratch = Path(tempfile.mkdtemp(prefix="msd-bench."))
        # the venv whose python runs this script is the one mailsocketd is installed in
        paths = line_bench.Paths(venv=Path(sys.prefix), anchors=BENCH / "anchors",
                                 loadgen=BENCH / "build" / "loadgen", scratch=scratch)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        try:
            for section in ("line", "mail"):
                if args.only in (None, section):
                    run_section(section, args, paths, stamp, command)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    written = report.write_report(BENCH / "results", REPO / "docs")
    for path in written:
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
