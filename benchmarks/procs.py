"""Processes for the benchmarks: start a server pinned to a CPU, time its start-up, read its
memory, run a load generator and read its own CPU use, stop everything by pid.

Only the processes started here are ever signalled, each by its pid (a fork server's children
are found through /proc/PID/task/*/children and checked by start time before a signal).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SERVER_CPU = "0"
LOAD_CPU = 1
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def pin_self_to_load_cpu() -> None:
    """Run the orchestrator (and what it starts unpinned) on the load generator's CPU."""
    if os.cpu_count() and (os.cpu_count() or 0) > LOAD_CPU:
        os.sched_setaffinity(0, {LOAD_CPU})


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in ticks): tells a pid from a reused one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]


def descendants(pid: int, limit: int = 50_000) -> list[int]:
    """Every live descendant of pid (children, grandchildren ...), at most ``limit``."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < limit:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            kids = [int(k) for k in text.split()]
            found.extend(kids)
            todo.extend(kids)
    return found[:limit]


@dataclass
class Memory:
    """Resident (RSS) and proportional (PSS) memory of a process tree, in KiB."""

    rss_kb: int
    pss_kb: int
    processes: int


def tree_memory(pid: int) -> Memory:
    """RSS and PSS of pid and all its descendants, from /proc/PID/smaps_rollup."""
    rss = pss = count = 0
    for p in [pid, *descendants(pid)]:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        count += 1
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key == "Rss":
                rss += int(rest.split()[0])
            elif key == "Pss":
                pss += int(rest.split()[0])
    return Memory(rss, pss, count)


def status_field_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status, e.g. VmHWM (peak RSS) or VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds pid has used so far (/proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuTimes:
    """One CPU's counters from /proc/stat, in seconds: time spent in processes (user, nice,
    system), in interrupts (irq, softirq), and in all."""

    process_s: float
    interrupt_s: float
    total_s: float


def cpu_times(cpu: int) -> CpuTimes:
    """The counters of one CPU (e.g. 0, the server's) from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == f"cpu{cpu}":
            v = [int(x) for x in values[:8]]
            return CpuTimes((v[0] + v[1] + v[2]) / tick, (v[5] + v[6]) / tick, sum(v) / tick)
    raise KeyError(f"cpu{cpu}")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by pid and its live descendants (the fork server's children)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


@dataclass
class Server:
    """A server under test, started pinned to CPU 0 with its output in a log file."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    probe: bytes  # one request that gets a reply: b"time\n", or b"time" for the seeds
    cwd: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    startup_s: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> float:
        """Start the server and return seconds from the command to its first answered probe."""
        with self.log_path.open("ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                ["taskset", "-c", SERVER_CPU, *self.argv], cwd=self.cwd, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start (status {self.proc.returncode})"
                                   f": {self.log_tail()}")
            if ask(self.port, self.probe, timeout=1.0) is not None:
                self.startup_s = time.perf_counter() - t0
                return self.startup_s
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s")
            time.sleep(0.002)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the server printed, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(text[-lines:]) or "(no output)"

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until the server has no child processes left, so that children
        exiting after one workload do not steal CPU 0 from the next."""
        deadline = time.monotonic() + timeout
        while self.proc is not None and descendants(self.proc.pid, limit=1):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGKILL the server's children (checked by start time), then SIGTERM the server.

        Children go first and by SIGKILL: 10,000 forked PHP children that each ran their own
        shutdown would keep the server's CPU busy for many seconds."""
        if self.proc is None:
            return
        kill_checked([(k, _start_time(k)) for k in descendants(self.proc.pid)])
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def kill_checked(pids: Sequence[tuple[int, str | None]], timeout: float = 30.0) -> None:
    """SIGKILL each (pid, start time) still alive with the same start time; wait till gone."""
    live = [(p, s) for p, s in pids if s is not None and _start_time(p) == s]
    for p, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        live = [(p, s) for p, s in live if _start_time(p) == s and not _zombie(p)]
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def ask(port: int, request: bytes, timeout: float = 2.0) -> bytes | None:
    """Send one request on a new connection; the first bytes of the reply, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(request)
            data = s.recv(4096)
            return data or None
    except OSError:
        return None


@dataclass
class LoadResult:
    """One load generator run: its result fields and its own CPU use."""

    fields: dict[str, str]
    wall_s: float
    cpu_s: float
    output: str

    @property
    def cpu_pct(self) -> float:
        """The generator's own CPU use, in % of one CPU (100 = saturated)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s else 0.0

    def number(self, key: str) -> float:
        return float(self.fields.get(key, "0").rstrip("%"))


def parse_fields(line: str) -> dict[str, str]:
    """``key=value key=value`` -> dict."""
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


class Load:
    """A load generator process pinned to CPU 1; its own CPU use comes from wait4 on its pid."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(["taskset", "-c", str(LOAD_CPU), *argv],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.buffer = b""
        self.cpu_s = 0.0

    def read_line(self, prefix: str, timeout: float) -> str | None:
        """The first whole output line starting with prefix; None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(prefix):
                    return line
            chunk = self._read_chunk(deadline, timeout)
            if not chunk:
                return None
            self.buffer += chunk

    def _read_chunk(self, deadline: float, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise RuntimeError(f"load generator still running after {timeout:.0f} s; killed")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                return os.read(fd, 65536)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the generator (by pid) if it has not been reaped yet."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    def finish(self, timeout: float) -> LoadResult:
        """Wait for the result line and the exit; reap with wait4 for the CPU figure."""
        try:
            line = self.read_line("conns=", timeout)
            rest = self.buffer.decode(errors="replace")
        finally:
            self.reap()
        if self.proc.returncode != 0 or line is None:
            raise RuntimeError(f"load generator failed (status {self.proc.returncode}): {rest}")
        return LoadResult(parse_fields(line), time.perf_counter() - self.t0, self.cpu_s, line)

    def reap(self) -> None:
        """Collect the exit status and rusage of the generator (kills it if need be)."""
        if self.proc.returncode is not None:
            return
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
        except ChildProcessError:
            return
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_load(argv: Sequence[str], timeout: float) -> LoadResult:
    """Run a load generator to its end and return its result line and CPU use."""
    return Load(argv).finish(timeout)
