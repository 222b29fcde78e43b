"""Parsing untagged IMAP response lines: Twisted's result, in a fraction of its time.

``twisted.mail.imap4.parseNestedParens`` walks a line byte by byte in Python; a ``list 20``
spends most of its time there (the FETCH lines with their header literals).  ``parse_line``
gives the same nested lists of bytes (``NIL`` as None, literals as bytes, ``[`` nesting like
``(``) by tokenizing with one regular expression.  Anything off the plain path (a backslash in
a quoted string, a quote or a literal glued to another token, unbalanced nesting, a literal not
followed by CRLF) is left to Twisted's parser, so odd input reads exactly as before.

:class:`FastCommand` is an ``imap4.Command`` whose ``finish`` uses it.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.mail import imap4

__all__ = ["FastCommand", "parse_line"]

_TOKEN = re.compile(
    rb'(?P<open>[(\[])|(?P<close>[)\]])|"(?P<quoted>[^"\\]*)"'
    rb"|\{(?P<literal>\d+)\}\r\n|(?P<atom>[^\s()\[\]\"{]+)|(?P<space>\s+)")
_DELIMITERS = frozenset(b" \t\n\r\x0b\x0c()[]")


class _OffPath(Exception):
    """The line is not on the plain path: let Twisted parse it."""


def parse_line(line: bytes) -> list[Any]:
    """``imap4.parseNestedParens(line)``, faster on the lines servers send."""
    try:
        return _parse(line.strip())
    except _OffPath:
        return imap4.parseNestedParens(line)  # type: ignore[no-any-return]


def _parse(s: bytes) -> list[Any]:
    stack: list[list[Any]] = [[]]
    top = stack[0]
    at, end = 0, len(s)
    glued = False  # the previous token was an atom, a string or a literal (no space after)
    match = _TOKEN.match
    while at < end:
        m = match(s, at)
        if m is None:
            raise _OffPath
        kind = m.lastgroup
        at = m.end()
        if kind == "space":
            glued = False
            continue
        if kind == "open":
            top = []
            stack[-1].append(top)
            stack.append(top)
            glued = False
            continue
        if kind == "close":
            if len(stack) == 1:
                raise _OffPath
            stack.pop()
            top = stack[-1]
            glued = False
            continue
        if glued:
            raise _OffPath
        value, at = _value(m, s, at)
        top.append(value)
        glued = at < end and s[at] not in _DELIMITERS
        if glued and kind != "atom":
            raise _OffPath
    if len(stack) != 1:
        raise _OffPath
    return stack[0]


def _value(m: re.Match[bytes], s: bytes, at: int) -> tuple[bytes | None, int]:
    """An atom (NIL is None), a quoted string's content or a literal; where parsing goes on."""
    kind = m.lastgroup
    if kind == "atom":
        atom = m.group("atom")
        return (None if atom == b"NIL" else atom), at
    if kind == "quoted":
        return m.group("quoted"), at
    size = int(m.group("literal"))
    if at + size > len(s):
        raise _OffPath
    return s[at:at + size], at + size


class FastCommand(imap4.Command):
    """``imap4.Command`` with ``finish`` parsing its untagged lines by ``parse_line``."""

    def finish(self, lastLine: bytes, unusedCallback: Any) -> None:
        send, unuse = [], []
        for line in self.lines:
            names = parse_line(line)
            n = len(names)
            if ((n >= 1 and names[0] in self._1_RESPONSES)
                    or (n >= 2 and names[1] in self._2_RESPONSES)
                    or (n >= 2 and names[0] == b"OK" and isinstance(names[1], list)
                    and names[1][0] in self._OK_RESPONSES)):
                send.append(names)
            else:
                unuse.append(names)
        d, self.defer = self.defer, None
        d.callback((send, lastLine))  # type: ignore[attr-defined]
        if unuse:
            unusedCallback(unuse)
