"""A telnet-like client of the line service for integration tests: send lines, read replies.

It knows the protocol's shapes: one-line replies, multi-line replies (``ok ...`` head, body,
lone ``.``, dot-stuffing undone) and pushed lines (``* ...``) that may arrive between replies.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Multi:
    head: str
    body: list[str]


@dataclass
class LineClient:
    sock: socket.socket
    pushed: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> LineClient:
        return cls(socket.create_connection((host, port), timeout=timeout))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def raw_line(self, timeout: float | None = None) -> str:
        """The next line as sent (pushed lines included)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed; unread: {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode("utf-8")

    def line(self) -> str:
        """The next reply line, keeping pushed ``* ...`` lines aside in ``pushed``."""
        while True:
            text = self.raw_line()
            if text.startswith("* "):
                self.pushed.append(text)
            else:
                return text

    def multi(self) -> Multi:
        """A multi-line reply; an ``error:`` head is returned with an empty body."""
        head = self.line()
        body: list[str] = []
        if not head.startswith("ok"):
            return Multi(head, body)
        while True:
            text = self.raw_line()
            if text == ".":
                return Multi(head, body)
            body.append(text[1:] if text.startswith(".") else text)

    def ask(self, line: str) -> str:
        self.send(line)
        return self.line()

    def ask_multi(self, line: str) -> Multi:
        self.send(line)
        return self.multi()

    def wait_push(self, prefix: str, timeout: float) -> tuple[str, float]:
        """Wait for a pushed line starting with ``prefix``; (line, seconds waited)."""
        started = time.monotonic()
        deadline = started + timeout
        for text in self.pushed:
            if text.startswith(prefix):
                self.pushed.remove(text)
                return text, 0.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no pushed {prefix!r} line within {timeout} s")
            try:
                text = self.raw_line(timeout=left)
            except TimeoutError:
                continue
            finally:
                self.sock.settimeout(30.0)
            if text.startswith(prefix):
                return text, time.monotonic() - started
            self.pushed.append(text)
