"""Replies of the line service and their wire format.

A reply is one line (``2026/11/25 14:03:07``, ``quit``, ``error: ...``), or a multi-line reply:
an ``ok ...`` head line, body lines, and a line holding only ``.``.  Body lines that begin with
``.`` are dot-stuffed (POP3/SMTP style) so a script can always find the end.  Every line ends
with CRLF on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mailsocketd.clean import clean
from mailsocketd.errors import UserError

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

CRLF = "\r\n"
_ECHO_LIMIT = 40


class CommandError(UserError):
    """A request that cannot be served; its message becomes the ``error:`` line."""

    def __init__(self, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.close = close

    def __str__(self) -> str:
        return self.message


class InputReader(Protocol):
    """Takes the lines a client types after a reply that asks for input (``send``'s body).

    That reply may be an ``error:`` too: a command refused after the client may already be
    typing its input takes that input all the same, to drop it, so that none of it runs as
    commands.  The protocol hands it every line (dot-stuffing undone, line end removed) up to a line
    holding only ``.``, then calls ``finish`` for the reply; ``abandon`` if the client goes away
    first.  The reader enforces its own size limit and reports it from ``finish``.
    """

    def line(self, data: bytes) -> None: ...
    def finish(self) -> Reply | Deferred[Reply]: ...
    def abandon(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server answers to one request.

    With ``reader`` set, the lines that follow (up to a lone ``.``) are input for it, not
    requests.
    """

    head: str
    body: tuple[str, ...] | None = None
    close: bool = False
    reader: InputReader | None = None
    # The wire form of a one-line reply, made on first use: the busiest replies (the time of
    # the current second, ``quit``, fixed errors) are shared objects sent many times.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)
    # 1 if the reply is an ``error:`` line, else 0: settled once, so that counting requests by
    # outcome ([metrics]) indexes a list with it (an int, not a bool: CPython's fast path).
    failed: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "failed", int(self.head.startswith("error:")))

    def encode(self) -> bytes:
        """The reply as bytes on the wire (UTF-8, CRLF line ends, dot-stuffed body)."""
        wire = self._wire
        if wire is not None:
            return wire
        if self.body is None:
            wire = (self.head + CRLF).encode("utf-8")
            object.__setattr__(self, "_wire", wire)  # frozen: set once, never changed
            return wire
        parts = [self.head]
        parts.extend("." + line if line.startswith(".") else line for line in self.body)
        parts.append(".")
        parts.append("")
        return CRLF.join(parts).encode("utf-8")


def error(message: str, close: bool = False) -> Reply:
    """A one-line ``error: ...`` reply."""
    return Reply(f"error: {message}", close=close)


def multiline(head: str, body: Iterable[str]) -> Reply:
    """An ``ok HEAD`` reply followed by body lines and the closing ``.``."""
    lines: list[str] = []
    for item in body:
        # A body line must never smuggle in a line break of its own.
        lines.extend(item.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return Reply(f"ok {head}", tuple(lines))


def printable(text: str, limit: int = _ECHO_LIMIT) -> str:
    """``text`` made safe to echo back: control and format characters (such as a right-to-left
    override) replaced by ``?``, length capped."""
    return clean(text, replacement="?", limit=limit)


class DiscardInput:
    """The InputReader of a command refused after the client may already be typing its input
    (``send``): reads the lines up to the lone ``.``, so that none runs as a command, and drops
    them.  ``finish`` says again why nothing was done."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def line(self, data: bytes) -> None:
        pass

    def finish(self) -> Reply:
        return error(f"not sent: {self.reason}")

    def abandon(self) -> None:
        pass


def refused_input(reason: str) -> Reply:
    """The ``error:`` reply to a command that reads input, refused: its input is consumed."""
    return Reply(f"error: {reason}; the message up to the lone '.' is discarded",
                 reader=DiscardInput(reason))
