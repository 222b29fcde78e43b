"""The one client of mailsocketd's line protocol, shared by the tests and the benchmarks.

It knows the protocol's shapes (docs/protocol.md): a request is one line; a reply is one line
ending with CRLF (``ok ...``, ``error: ...`` or a bare answer such as the time), or a multi-line
reply (an ``ok ...`` head, body lines dot-stuffed, a lone ``.``); lines starting ``* `` are
pushed by the server and may arrive between replies.  Pushed lines met while waiting for a
reply are kept aside in ``pushed`` for ``wait_push``.

Every read has a deadline (``timeout`` seconds for a line unless told otherwise), and
everything held is bounded: a line or a multi-line reply larger than ``MAX_BUFFER`` bytes, or
bytes that are not UTF-8, raise ``ProtocolError``.

The tests read ``error:`` lines as text (``ask``, ``ask_multi``); the benchmarks, which only
want answers, pass ``check=True`` and get a ``ReplyError`` instead.

It lives in tests/ (on pytest's ``pythonpath``); the benchmarks find it through
benchmarks/testpath.py.  Standard library only.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from dataclasses import dataclass

MAX_BUFFER = 64 * 1024 * 1024  # a 2 MB message is shown in well under this
MAX_PUSHED = 1000  # pushed lines kept aside; the oldest go first
DEFAULT_TIMEOUT = 30.0
CRLF = b"\r\n"


class ReplyError(Exception):
    """The daemon answered with an ``error:`` line (its text is the message, and ``line``)."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class ProtocolError(ConnectionError):
    """The daemon broke the protocol: a line or reply over the client's limit, or not UTF-8."""


@dataclass
class Multi:
    """A multi-line reply: the head line and the body (dot-stuffing undone, no final dot)."""

    head: str
    body: list[str]

    @property
    def lines(self) -> list[str]:
        """Head and body in one list."""
        return [self.head, *self.body]


class LineClient:
    """One connection to the line service (a plain or a TLS socket, already connected)."""

    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = sock
        self.timeout = timeout
        self.pushed: deque[str] = deque(maxlen=MAX_PUSHED)
        self._unread: deque[str] = deque()  # reply lines read ahead by wait_push
        self._buffer = bytearray()  # received; lines before _start already taken
        self._start = 0

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1",
                timeout: float = DEFAULT_TIMEOUT) -> LineClient:
        """A new TCP connection (Nagle off: requests are small and answered one by one)."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        return cls(sock, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending

    def send(self, line: str) -> None:
        """One line, CRLF added."""
        self.sock.sendall(line.encode("utf-8") + CRLF)

    # -- reading

    def raw_line(self, timeout: float | None = None) -> str:
        """The next line as sent, pushed lines included, without its CRLF.

        TimeoutError when no complete line arrives within ``timeout`` seconds (default: the
        client's), ConnectionError when the server closes, ProtocolError past the limits."""
        if self._unread:
            return self._unread.popleft()
        return self._receive_line(timeout)

    def _receive_line(self, timeout: float | None) -> str:
        """The next line from the socket (not one of those read ahead)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (end := self._buffer.find(CRLF, self._start)) < 0:
            if len(self._buffer) - self._start > MAX_BUFFER:
                raise ProtocolError(f"a line longer than the client's {MAX_BUFFER:,} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete line from the server in time; unread: "
                                   f"{bytes(self._buffer[self._start:self._start + 200])!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(262144)
            except TimeoutError:
                continue  # the deadline has passed: said above, with what was read
            if not chunk:
                raise ConnectionError("server closed; unread: "
                                      f"{bytes(self._buffer[self._start:self._start + 200])!r}")
            del self._buffer[:self._start]  # lines already taken go only when more arrives
            self._start = 0
            self._buffer += chunk
        raw = bytes(self._buffer[self._start:end])
        self._start = end + len(CRLF)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"a line that is not UTF-8: {raw[:200]!r}") from e

    def line(self, timeout: float | None = None) -> str:
        """The next reply line; pushed ``* ...`` lines met on the way go to ``pushed``."""
        while True:
            text = self.raw_line(timeout)
            if not text.startswith("* "):
                return text
            self.pushed.append(text)

    def multi(self, timeout: float | None = None) -> Multi:
        """A multi-line reply; a head that is not ``ok ...`` comes with an empty body."""
        head = self.line(timeout)
        body: list[str] = []
        if not head.startswith("ok"):
            return Multi(head, body)
        size = 0
        while True:
            text = self.raw_line(timeout)  # body lines are text, even those starting "* "
            if text == ".":
                return Multi(head, body)
            size += len(text) + len(CRLF)
            if size > MAX_BUFFER:
                raise ProtocolError(f"a reply larger than the client's {MAX_BUFFER:,} bytes")
            body.append(text[1:] if text.startswith(".") else text)

    # -- request and reply

    def ask(self, line: str, check: bool = False) -> str:
        """Send one request, return its one-line reply (``check``: ReplyError on ``error:``)."""
        self.send(line)
        reply = self.line()
        if check and reply.startswith("error:"):
            raise ReplyError(reply)
        return reply

    def ask_multi(self, line: str, check: bool = False) -> Multi:
        """Send one request, return its multi-line reply (``check``: ReplyError on
        ``error:``)."""
        self.send(line)
        reply = self.multi()
        if check and reply.head.startswith("error:"):
            raise ReplyError(reply.head)
        return reply

    # -- pushed lines

    def wait_push(self, prefix: str, timeout: float) -> tuple[str, float]:
        """The first pushed line starting with ``prefix``, already kept or still to come, and
        the seconds waited for it.  Other pushed lines are kept in ``pushed``; reply lines
        read on the way stay unread for ``line``.  TimeoutError after ``timeout`` seconds."""
        started = time.monotonic()
        for text in self.pushed:
            if text.startswith(prefix):
                self.pushed.remove(text)
                return text, 0.0
        deadline = started + timeout
        ahead: list[str] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no pushed {prefix!r} line within {timeout:g} s")
                try:
                    text = self._receive_line(left)
                except TimeoutError as e:
                    raise TimeoutError(f"no pushed {prefix!r} line within {timeout:g} s") from e
                if text.startswith(prefix):
                    return text, time.monotonic() - started
                if text.startswith("* "):
                    self.pushed.append(text)
                else:
                    ahead.append(text)
        finally:
            self._unread.extend(ahead)
