"""Mail benchmarks that need more than one round trip: push latency and many users at once."""

from __future__ import annotations

import re
import resource
import smtplib
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from functools import partial
from typing import Any

import testpath  # noqa: F401  (tests/ on sys.path, for lineclient)
from lineclient import LineClient, ReplyError
from procs import HOST, LOAD_CPU, Server, cpu_seconds, cpu_times, status_field_kb

PUSH_TIMEOUT_S = 10.0


def _messages(line: str) -> int:
    found = re.search(r"messages=(\d+)", line)
    if not found:
        raise ReplyError(f"no messages=N in {line!r}")
    return int(found.group(1))


def _submit(server: Any, user: str, subject: str) -> None:
    """One message over SMTP to the benchmark's Postfix, which hands it to Dovecot."""
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = server.address(user)
    msg["Subject"] = subject
    msg.set_content("new mail for the push benchmark\n")
    with smtplib.SMTP(HOST, server.smtp_port, timeout=30) as smtp:
        smtp.send_message(msg)


def push_latency(port: int, server: Any, user: str, rounds: int,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """From handing a message to SMTP until the watching client reads ``* new mail``."""
    client = LineClient.connect(port)
    try:
        client.ask(f"login {user} {server.users[user]}", check=True)
        expected = _messages(client.ask("check", check=True))
        client.ask("watch on", check=True)
        samples: list[float] = []
        line = ""
        for i in range(rounds):
            time.sleep(0.5)  # let the daemon settle into its watch
            expected += 1
            t0 = time.perf_counter()
            _submit(server, user, f"push {i}")
            deadline = time.monotonic() + PUSH_TIMEOUT_S
            while True:  # skip news of earlier messages, if the daemon sends it late
                line, _ = client.wait_push("* new mail",
                                           max(0.0, deadline - time.monotonic()))
                if _messages(line) >= expected:
                    break
            samples.append((time.perf_counter() - t0) * 1000)
    finally:
        client.close()
    result = {"median_ms": statistics.median(samples), "max_ms": max(samples),
              "samples_ms": [round(s, 1) for s in samples], "last_line": line}
    say(f"  mailsocketd push: median {result['median_ms']:.1f} ms, max {result['max_ms']:.1f} ms")
    return result


class Worker(threading.Thread):
    """One logged-in line client doing check / list 20 / read UID until the deadline."""

    def __init__(self, client: LineClient, uid: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.uid = uid
        self.deadline = deadline
        self.samples: dict[str, list[float]] = {"check": [], "list 20": [], "read": []}
        self.error: str | None = None

    def run(self) -> None:
        c = self.client
        requests: list[tuple[str, Callable[[], object]]] = [
            ("check", partial(c.ask, "check", check=True)),
            ("list 20", partial(c.ask_multi, "list 20", check=True)),
            ("read", partial(c.ask_multi, f"read {self.uid}", check=True))]
        try:
            while time.monotonic() < self.deadline:
                for key, request in requests:
                    t0 = time.perf_counter()
                    request()
                    self.samples[key].append((time.perf_counter() - t0) * 1000)
        except (ReplyError, OSError) as e:
            self.error = str(e)


def many_users(daemon: Server, server: Any, users: Sequence[str], uids: dict[str, int],
               count: int, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    """``count`` clients logged in at once (users alternating), each in a loop; throughput,
    latencies and the daemon's memory."""
    rss_idle = status_field_kb(daemon.pid, "VmRSS")
    clients: list[tuple[LineClient, str]] = []
    try:
        for i in range(count):
            user = users[i % len(users)]
            client = LineClient.connect(daemon.port)
            clients.append((client, user))
            client.ask(f"login {user} {server.users[user]}", check=True)
        rss_logged_in = status_field_kb(daemon.pid, "VmRSS")
        deadline = time.monotonic() + seconds
        workers = [Worker(c, uids[u], deadline) for c, u in clients]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        daemon0, load0 = cpu_seconds(daemon.pid), cpu_times(LOAD_CPU)
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join(seconds + 60)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        daemon_cpu, load1 = cpu_seconds(daemon.pid) - daemon0, cpu_times(LOAD_CPU)
        rss_end = status_field_kb(daemon.pid, "VmRSS")
    finally:
        for client, _ in clients:
            client.close()
    merged: dict[str, list[float]] = {"check": [], "list 20": [], "read": []}
    for w in workers:
        for key, values in w.samples.items():
            merged[key].extend(values)
    commands = sum(len(v) for v in merged.values())
    client_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    result = {
        "clients": count, "seconds": round(wall, 2), "commands": commands,
        "commands_per_s": commands / wall, "loops_per_s": len(merged["read"]) / wall,
        "median_ms": {k: statistics.median(v) if v else None for k, v in merged.items()},
        "errors": [w.error for w in workers if w.error][:3],
        "failed_clients": sum(1 for w in workers if w.error),
        "rss_idle_kb": rss_idle, "rss_logged_in_kb": rss_logged_in, "rss_end_kb": rss_end,
        "hwm_kb": status_field_kb(daemon.pid, "VmHWM"),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "daemon_cpu_pct": round(100 * daemon_cpu / wall, 1),
        "cpu1_busy_pct": round(100 * (load1.process_s + load1.interrupt_s - load0.process_s
                                      - load0.interrupt_s) / max(1e-9, load1.total_s
                                                                  - load0.total_s), 1),
    }
    say(f"  mailsocketd {count} users: {result['commands_per_s']:,.0f} commands/s, daemon RSS "
        f"{rss_end / 1024:.1f} MB, daemon CPU {result['daemon_cpu_pct']:.0f}%, CPU 1 busy "
        f"{result['cpu1_busy_pct']:.0f}%, client CPU {result['client_cpu_pct']:.0f}%, "
        f"failed clients {result['failed_clients']}")
    return result
