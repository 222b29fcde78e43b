"""Parsing untagged IMAP response lines: Twisted's result, in a fraction of its time.

``twisted.mail.imap4.parseNestedParens`` walks a line byte by byte in Python; a ``list 20``
spends most of its time there (the FETCH lines with their header literals).  ``parse_line``
gives the same nested lists of bytes (``NIL`` as None, literals as bytes, ``[`` nesting like
``(``) with one ``findall`` per stretch between literals.  Anything off the plain path (a
backslash in a quoted string, a quote or a literal glued to another token, unbalanced nesting,
a literal not followed by CRLF) is left to Twisted's parser, so odd input reads exactly as
before.

:class:`FastCommand` is an ``imap4.Command`` whose ``finish`` uses it.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.mail import imap4

__all__ = ["FastCommand", "parse_line"]

# One token after optional whitespace: an opening or closing bracket, a quoted string (quotes
# kept), an atom, or any other character (which leaves the plain path).  Whitespace at the end
# of a stretch matches nothing, and findall passes over it.
_TOKEN = re.compile(rb'(\s*)(?:([(\[])|([)\]])|("[^"\\]*")|([^\s()\[\]"{]+)|(\S))')
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")


class _OffPath(Exception):
    """The line is not on the plain path: let Twisted parse it."""


def parse_line(line: bytes) -> list[Any]:
    """``imap4.parseNestedParens(line)``, faster on the lines servers send."""
    try:
        return _parse(line.strip())
    except _OffPath:
        return imap4.parseNestedParens(line)  # type: ignore[no-any-return]


def _parse(s: bytes) -> list[Any]:
    """Each stretch between literals is tokenized by one ``findall``; a value (atom, string,
    literal) right after another one, with nothing between, leaves the plain path."""
    stack: list[list[Any]] = [[]]
    at, end = 0, len(s)
    after_value = False
    while True:
        found = _LITERAL.search(s, at)
        stop = end if found is None else found.start()
        after_value = _stretch(_TOKEN.findall(s, at, stop), stack, after_value)
        if found is None:
            break
        if after_value and not (stop > at and s[stop - 1:stop].isspace()):
            raise _OffPath  # (findall passes over the spaces at the end of a stretch)
        at = found.end() + int(found[1])
        if at > end:
            raise _OffPath
        stack[-1].append(s[found.end():at])
        after_value = True
    if len(stack) != 1:
        raise _OffPath
    return stack[0]


def _stretch(tokens: list[tuple[bytes, ...]], stack: list[list[Any]], after_value: bool) -> bool:
    """Add the tokens of one stretch to the open lists; whether the last token was a value."""
    top = stack[-1]
    for space, opening, closing, quoted, atom, other in tokens:
        if space:
            after_value = False
        if opening:
            top = []
            stack[-1].append(top)
            stack.append(top)
            after_value = False
        elif closing:
            if len(stack) == 1:
                raise _OffPath
            stack.pop()
            top = stack[-1]
            after_value = False
        elif other or after_value:
            raise _OffPath
        else:
            top.append(quoted[1:-1] if quoted else None if atom == b"NIL" else atom)
            after_value = True
    return after_value


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
