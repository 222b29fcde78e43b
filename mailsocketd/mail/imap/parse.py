"""Parsing untagged IMAP response lines, as RFC 3501 and RFC 9051 define them, fast.

``parse_line`` gives the nested lists of a response line: atoms, quoted strings and literals
as bytes (quoted strings unescaped: ``"a\\"b"`` is ``a"b``), ``NIL`` as None, ``( )`` and the
two kinds of ``[ ]`` as nested lists.  One ``findall`` tokenizes each stretch between literals.

Brackets are context-sensitive in IMAP, and read here as the grammar says:

* ``[`` opens a list only where the grammar has one: a response code right after the status
  word (``OK [UIDVALIDITY 7] ...``), or a section glued to a FETCH item (``BODY[HEADER]<0>``
  in ``n FETCH (...)``).  Everywhere else it is an ordinary character of an atom: ``a[b`` and
  ``[Gmail]`` are mailbox names (``ATOM-CHAR``).
* ``]`` closes the innermost list when that is a bracket; anywhere else it is a character of
  an atom: ``x]y`` is a mailbox name (``ASTRING-CHAR`` includes ``resp-specials``).

Twisted's ``parseNestedParens`` takes every ``[`` and ``]`` as nesting (so ``a[b`` fails with
MismatchedNesting and ``[Gmail]`` becomes a list), keeps an escaped backslash doubled
(``"back\\\\slash"`` stays ``back\\\\slash``) and strips the line (a literal that ends it loses
its trailing spaces); on the lines where the grammar agrees with it the results are the same
(tests/unit/mail/imap/test_parse.py checks both, and against a slow reference parser).

:class:`FastCommand` is an ``imap4.Command`` whose ``finish`` uses it.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.mail import imap4

__all__ = ["FastCommand", "parse_line"]

# One token after optional whitespace: an atom without brackets, an opening or closing
# parenthesis, a quoted string (its content), an atom with brackets (_atom splits it by
# context), or any other character (a lone quote: malformed).  Whitespace at the end of a
# stretch matches nothing.
_TOKEN = re.compile(
    rb'\s*(?:([^\s()"\[\]]++)(?![\[\]])|(\()|(\))|"([^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*)"'
    rb'|([^\s()"]+)|(\S))')
_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n")
_ESCAPE = re.compile(rb"\\(.)")
_BRACKET = re.compile(rb"[\[\]]")
_STATUS = frozenset({b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"})
_SECTIONED = frozenset({b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE"})


class _Lists:
    """The lists open while a line is read, and for each whether it is a bracket."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = [[]]
        self.brackets: list[bool] = [False]

    def open(self, bracket: bool) -> None:
        child: list[Any] = []
        self.stack[-1].append(child)
        self.stack.append(child)
        self.brackets.append(bracket)



def parse_line(line: bytes) -> list[Any]:
    """One untagged response line (after ``* ``) as nested lists; MismatchedNesting or
    MismatchedQuoting when it is not well formed."""
    s = line  # not stripped: a line may end in a literal's CRLF (or in its data)
    lists = _Lists()
    at, end = 0, len(s)
    while True:
        found = _LITERAL.search(s, at)
        stop = end if found is None else found.start()
        _stretch(_TOKEN.findall(s, at, stop), lists, s)
        if found is None:
            break
        at = found.end() + int(found[1])
        if at > end:
            raise imap4.MismatchedNesting(s)
        lists.stack[-1].append(s[found.end():at])
    if len(lists.stack) != 1:
        raise imap4.MismatchedNesting(s)
    return lists.stack[0]


def _stretch(tokens: list[tuple[bytes, ...]], lists: _Lists, line: bytes) -> None:
    """Add the tokens of one stretch to the open lists (the common tokens inline: this is the
    loop a ``list 500`` spends its time in)."""
    stack, brackets = lists.stack, lists.brackets
    top = stack[-1]
    for atom, opening, closing, quoted, bracketed, other in tokens:
        if atom:
            top.append(None if atom == b"NIL" else atom)
        elif opening:
            child: list[Any] = []
            top.append(child)
            stack.append(child)
            brackets.append(False)
            top = child
        elif closing:
            if len(stack) == 1 or brackets[-1]:
                raise imap4.MismatchedNesting(line)
            stack.pop()
            brackets.pop()
            top = stack[-1]
        elif bracketed:
            _atom(bracketed, lists)
            top = stack[-1]
        elif other:
            raise imap4.MismatchedQuoting(line)
        else:  # a quoted string, perhaps empty
            top.append(_ESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted)


def _atom(atom: bytes, lists: _Lists) -> None:
    """An atom holding ``[`` or ``]``: split where a bracket opens or closes a list (see the
    module doc), keep the other brackets as characters."""
    start = 0
    for found in _BRACKET.finditer(atom):
        i = found.start()
        if found[0] == b"[" and _opens(atom[start:i], lists):
            if i > start:
                lists.stack[-1].append(_value(atom[start:i]))
            lists.open(True)
            start = i + 1
        elif found[0] == b"]" and lists.brackets[-1]:
            if i > start:
                lists.stack[-1].append(_value(atom[start:i]))
            lists.stack.pop()
            lists.brackets.pop()
            start = i + 1
    if start < len(atom):
        lists.stack[-1].append(_value(atom[start:]))


def _value(atom: bytes) -> bytes | None:
    return None if atom == b"NIL" else atom


def _opens(before: bytes, lists: _Lists) -> bool:
    """Whether a ``[`` after ``before`` (the atom so far) opens a list: a response code, or a
    FETCH item's section."""
    top = lists.stack[0]
    if not before:
        return (len(lists.stack) == 1 and len(top) == 1 and isinstance(top[0], bytes)
                and top[0].upper() in _STATUS)
    return (len(lists.stack) == 2 and len(top) >= 2 and isinstance(top[1], bytes)
            and top[1].upper() == b"FETCH" and before.upper() in _SECTIONED)


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
