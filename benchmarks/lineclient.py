"""A blocking client of mailsocketd's line protocol, for the mail benchmarks.

Single-line replies are ``ok ...`` or ``error: ...``; multi-line replies are an ``ok ...`` head,
body lines (dot-stuffed) and a lone ``.``.  Pushed lines (``* new mail: ...``) can arrive at any
time; ``wait_for`` finds them.  Every read has a timeout and the buffer is bounded.
"""

from __future__ import annotations

import socket
import time

MAX_BUFFER = 64 * 1024 * 1024  # a 2 MB message is shown in well under this


class ReplyError(Exception):
    """The daemon answered with an ``error:`` line (its text is the message)."""


class LineClient:
    """One connection to the line service."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_line(self, timeout: float | None = None) -> str:
        """The next line, without its line ending."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete line from the daemon in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            self.buffer += chunk
            if len(self.buffer) > MAX_BUFFER:
                raise ConnectionError("reply line longer than the client's buffer")
        raw, self.buffer = self.buffer.split(b"\n", 1)
        return raw.rstrip(b"\r").decode("utf-8", errors="replace")

    def command(self, line: str, multiline: bool = False) -> list[str]:
        """Send one request; its reply lines (head first; the body unstuffed, no final dot)."""
        self.sock.sendall(line.encode() + b"\r\n")
        head = self._reply_head()
        if not multiline:
            return [head]
        lines = [head]
        total = 0
        while True:
            body = self.read_line()
            if body == ".":
                return lines
            total += len(body)
            if total > MAX_BUFFER:
                raise ConnectionError("multi-line reply larger than the client's limit")
            lines.append(body[1:] if body.startswith(".") else body)

    def _reply_head(self) -> str:
        while True:
            head = self.read_line()
            if head.startswith("* "):
                continue  # a pushed line between replies: not the answer
            if head.startswith("error:"):
                raise ReplyError(head)
            return head

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The next line starting with prefix (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line
