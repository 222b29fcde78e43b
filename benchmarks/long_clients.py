"""The clients of the long run (long_run.py): each a thread that works until a deadline and
keeps its own counts, so that the run can compare them with the daemon's and the mail server's.

* ``TimeLoad``: many connections asking ``time`` at a steady pace (one thread, a selector),
  and short connections (connect, ``time``, close); latencies by second.
* ``MailUser``: a logged-in user sending itself a message, then ``check``, ``list 20``,
  ``read`` of one of its messages and ``delete`` of an older one; logs in again when the
  mail session is lost.  Every message carries a token in its Subject, so that the run can
  tell afterwards that each accepted send was delivered exactly once and each delete removed
  exactly its message.
* ``Watcher``: ``watch on``, counting ``* new mail`` lines, watching again after a loss.
* ``Misbehaving``: a 1 MB line, binary garbage, a client that never reads, a slowloris.

Loopback only; every loop stops at its deadline, every read has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import testpath  # noqa: F401  (tests/ on sys.path, for lineclient)
from lineclient import LineClient, ReplyError
from procs import HOST

TOKEN_RE = re.compile(r"\blr-[a-z]+[0-9]+-\d+-\d+\b")
LIST_UID_RE = re.compile(r"^(\d+) ")


def _bucket(samples: dict[int, list[float]], t0: float, value: float) -> None:
    samples.setdefault(int(time.monotonic() - t0), []).append(value)


class TimeLoad(threading.Thread):
    """``connections`` connections each asking ``time`` every ``every_s`` seconds, and one
    short connection (connect, ``time``, close) every ``short_every_s``; latencies in ms by
    second of the run."""

    def __init__(self, port: int, t0: float, deadline: float, connections: int,
                 every_s: float, short_every_s: float) -> None:
        super().__init__(daemon=True, name="time-load")
        self.port, self.t0, self.deadline = port, t0, deadline
        self.connections, self.every_s, self.short_every_s = connections, every_s, short_every_s
        self.latency_ms: dict[int, list[float]] = {}
        self.commands = 0
        self.short_connections = 0
        self.errors: Counter[str] = Counter()

    def _open(self, sel: selectors.BaseSelector, due: dict[socket.socket, float]) -> None:
        sock = socket.create_connection((HOST, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, [b"", 0.0])
        due[sock] = time.monotonic()

    def _short(self) -> None:
        t = time.perf_counter()
        try:
            with LineClient.connect(self.port, HOST, timeout=5) as client:
                client.ask("time")  # ConnectionError (an OSError) without a whole reply line
            _bucket(self.latency_ms, self.t0, (time.perf_counter() - t) * 1000)
            self.commands += 1
            self.short_connections += 1
        except OSError as e:
            self.errors[f"short: {type(e).__name__}"] += 1

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        due: dict[socket.socket, float] = {}
        try:
            for _ in range(self.connections):
                self._open(sel, due)
            next_short = time.monotonic()
            while (now := time.monotonic()) < self.deadline:
                for sock, when in list(due.items()):
                    if when <= now:
                        del due[sock]
                        key = sel.get_key(sock)
                        key.data[1] = time.perf_counter()
                        try:
                            sock.send(b"time\r\n")
                        except OSError as e:
                            self._lost(sel, due, sock, e)
                if now >= next_short:
                    next_short = now + self.short_every_s
                    self._short()
                wake = min([*due.values(), next_short]) - time.monotonic()
                for key, _ in sel.select(max(0.0, min(wake, 0.05))):
                    self._readable(sel, due, key)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def _readable(self, sel: selectors.BaseSelector, due: dict[socket.socket, float],
                  key: selectors.SelectorKey) -> None:
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        try:
            chunk = sock.recv(4096)
        except OSError as e:
            self._lost(sel, due, sock, e)
            return
        if not chunk:
            self._lost(sel, due, sock, ConnectionError("closed by the server"))
            return
        key.data[0] += chunk
        while b"\r\n" in key.data[0]:
            _, key.data[0] = key.data[0].split(b"\r\n", 1)
            _bucket(self.latency_ms, self.t0, (time.perf_counter() - key.data[1]) * 1000)
            self.commands += 1
            due[sock] = time.monotonic() + self.every_s

    def _lost(self, sel: selectors.BaseSelector, due: dict[socket.socket, float],
              sock: socket.socket, error: BaseException) -> None:
        self.errors[f"lost: {error}"[:80]] += 1
        due.pop(sock, None)
        sel.unregister(sock)
        sock.close()
        if time.monotonic() < self.deadline:
            self._open(sel, due)


@dataclass
class MailRecord:
    """What one mail user did, for the run's checks."""

    sent_ok: list[str] = field(default_factory=list)  # tokens the daemon said were sent
    send_errors: dict[str, str] = field(default_factory=dict)  # token -> error line
    deleted: list[str] = field(default_factory=list)  # tokens of messages deleted (ok)
    commands: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    logins: int = 0
    # seconds of the run at which a command failed / the next one succeeded again
    failures_at: list[float] = field(default_factory=list)
    ok_at: list[float] = field(default_factory=list)


def _error_kind(text: str) -> str:
    """An error line without its numbers and names, to count errors by kind."""
    return re.sub(r"\d+", "N", text)[:90]


class MailUser(threading.Thread):
    """One line client doing send/check/list/read/delete in a paced loop (see module doc)."""

    def __init__(self, name: str, port: int, user: str, password: str, address: str,
                 t0: float, deadline: float, loop_s: float) -> None:
        super().__init__(daemon=True, name=f"mail-{name}")
        self.label, self.port, self.user, self.password = name, port, user, password
        self.address, self.t0, self.deadline, self.loop_s = address, t0, deadline, loop_s
        self.record = MailRecord()
        self._serial = 0
        self._client: LineClient | None = None

    def _now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def _connect(self) -> LineClient:
        if self._client is None:
            client = LineClient.connect(self.port, timeout=60)
            try:
                client.ask(f"login {self.user} {self.password}", check=True)
            except BaseException:
                client.close()
                raise
            self.record.logins += 1
            self._client = client
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _send(self, client: LineClient) -> None:
        self._serial += 1
        token = f"lr-{self.label}-{os.getpid()}-{self._serial}"
        try:
            head = client.ask(f"send {self.address}")
            if not head.startswith("ok"):
                raise ReplyError(head)
            client.send(f"Subject: long run {token}")
            client.send("")
            client.send(f"message {token} of the long run")
            client.send(".")
            reply = client.line()
        except ReplyError as e:
            self.record.send_errors[token] = e.line
            raise
        except OSError as e:
            self.record.send_errors[token] = f"connection: {e}"
            raise
        if reply.startswith("ok sent"):
            self.record.sent_ok.append(token)
        else:
            self.record.send_errors[token] = reply
            raise ReplyError(reply)

    def _loop(self, client: LineClient) -> None:
        counts = self.record.commands
        self._send(client)
        counts["send"] += 1
        client.ask("check", check=True)
        counts["check"] += 1
        listed = client.ask_multi("list 20", check=True)
        counts["list"] += 1
        mine: list[tuple[int, str]] = []  # (uid, token) of this user's messages, newest first
        for line in listed.body:
            uid, token = LIST_UID_RE.match(line), TOKEN_RE.search(line)
            if uid and token and token.group(0).startswith(f"lr-{self.label}-"):
                mine.append((int(uid.group(1)), token.group(0)))
        if mine:
            client.ask_multi(f"read {mine[0][0]}", check=True)
            counts["read"] += 1
        if len(mine) > 2:  # keep the newest two: delete the oldest listed
            oldest, oldest_token = mine[-1]
            reply = client.ask(f"delete {oldest}", check=True)
            counts["delete"] += 1
            if reply.startswith("ok deleted 1 message"):
                self.record.deleted.append(oldest_token)
            else:
                self.record.errors[f"delete: {_error_kind(reply)}"] += 1

    def run(self) -> None:
        failing = False
        while time.monotonic() < self.deadline:
            started = time.monotonic()
            try:
                self._loop(self._connect())
                if failing:
                    self.record.ok_at.append(self._now())
                    failing = False
            except (ReplyError, OSError) as e:
                text = e.line if isinstance(e, ReplyError) else f"{type(e).__name__}: {e}"
                self.record.errors[_error_kind(text)] += 1
                if not failing:
                    self.record.failures_at.append(self._now())
                    failing = True
                if not isinstance(e, ReplyError) or "login" in text or "lost" in text:
                    self._drop()
                time.sleep(0.5)
            time.sleep(max(0.0, self.loop_s - (time.monotonic() - started)))
        if self._client is not None:
            with contextlib.suppress(ReplyError, OSError):
                self._client.ask("logout")
        self._drop()


class Watcher(threading.Thread):
    """A logged-in client with ``watch on``, counting ``* new mail`` lines; after a lost
    session it logs in and watches again."""

    def __init__(self, name: str, port: int, user: str, password: str, t0: float,
                 deadline: float) -> None:
        super().__init__(daemon=True, name=f"watch-{name}")
        self.port, self.user, self.password = port, user, password
        self.t0, self.deadline = t0, deadline
        self.new_mail = 0
        self.lost_at: list[float] = []
        self.watching_at: list[float] = []
        self.errors: Counter[str] = Counter()

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                with LineClient.connect(self.port, timeout=30) as client:
                    client.ask(f"login {self.user} {self.password}", check=True)
                    client.ask("watch on", check=True)
                    self.watching_at.append(round(time.monotonic() - self.t0, 3))
                    while time.monotonic() < self.deadline:
                        try:
                            line = client.raw_line(timeout=1.0)
                        except TimeoutError:
                            continue
                        if line.startswith("* new mail"):
                            self.new_mail += 1
                        elif line.startswith("* "):
                            self.lost_at.append(round(time.monotonic() - self.t0, 3))
                            break
            except (ReplyError, OSError) as e:
                self.errors[_error_kind(str(e))] += 1
                time.sleep(1.0)


class Misbehaving(threading.Thread):
    """One kind of bad client, again and again until the deadline; what the daemon did."""

    KINDS = ("long_line", "garbage", "never_reading", "slowloris")

    def __init__(self, kind: str, port: int, t0: float, deadline: float) -> None:
        super().__init__(daemon=True, name=f"bad-{kind}")
        self.kind, self.port, self.t0, self.deadline = kind, port, t0, deadline
        self.rounds = 0
        self.outcomes: Counter[str] = Counter()
        self.held_s: list[float] = []  # slowloris: how long the daemon kept it

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self) -> None:
        act = getattr(self, f"_{self.kind}")
        while self._left() > 5:
            try:
                with socket.create_connection((HOST, self.port), timeout=10) as sock:
                    self.outcomes[act(sock)] += 1
            except OSError as e:
                self.outcomes[f"{type(e).__name__}"] += 1
            self.rounds += 1
            time.sleep(min(2.0, max(0.0, self._left())))

    @staticmethod
    def _reply(sock: socket.socket, timeout: float = 10.0) -> bytes:
        sock.settimeout(timeout)
        data = b""
        try:
            while len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data

    def _long_line(self, sock: socket.socket) -> str:
        """A 1 MB line, sent as far as the daemon takes it."""
        try:
            for _ in range(16):
                sock.sendall(b"x" * 65536)
        except OSError:
            pass
        reply = self._reply(sock)
        return "error: line too long" if b"error: line too long" in reply else f"{reply[:40]!r}"

    def _garbage(self, sock: socket.socket) -> str:
        """Random bytes with line ends, then quit."""
        sock.sendall(os.urandom(4000).replace(b"\r", b"\n") + b"\r\nquit\r\n")
        reply = self._reply(sock)
        return "answered and closed" if reply.endswith(b"quit\r\n") else f"{reply[-40:]!r}"

    def _never_reading(self, sock: socket.socket) -> str:
        """2 MB of pipelined ``time`` requests, no reply read, for 20 s."""
        sock.setblocking(False)
        sent, until = 0, time.monotonic() + 20
        while time.monotonic() < until and sent < 2 << 20:
            try:
                sent += sock.send(b"time\r\n" * 1000)
            except BlockingIOError:
                time.sleep(0.1)
            except OSError:
                return "closed by the daemon"
        time.sleep(max(0.0, until - time.monotonic()))
        return f"daemon stopped reading after {sent // 1024} KB" if sent < 2 << 20 else "all sent"

    def _slowloris(self, sock: socket.socket) -> str:
        """One byte a second, never a line end, until the daemon closes (or 90 s)."""
        started = time.monotonic()
        sock.settimeout(1.0)
        while time.monotonic() - started < 90 and self._left() > 0:
            try:
                sock.send(b"x")
                data = sock.recv(256)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            self.held_s.append(round(time.monotonic() - started, 1))
            return "closed: " + data.decode("ascii", "replace").strip()[:50]
        return "still open"


def summary(values: list[float]) -> dict[str, Any]:
    """Count, median, p99 and max of latencies."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {"count": len(ordered), "median_ms": round(ordered[len(ordered) // 2], 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "max_ms": round(ordered[-1], 3)}
