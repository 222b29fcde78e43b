"""The fast response parser reads lines as RFC 3501 / 9051 define them.

Three references: Twisted's ``parseNestedParens`` on the lines where it is right (every
well-formed line without the two things it gets wrong); a slow reference parser, written byte by
byte in the shape of Twisted's own, with exactly those two things corrected, on any line at all;
and lines where Twisted is wrong, with the result the grammar gives written out.

What Twisted gets wrong (and the reference corrects):

* every ``[`` and ``]`` is nesting to it.  In IMAP ``[`` opens a list only as a response code
  (``OK [UIDVALIDITY 7]``) or a FETCH section (``BODY[HEADER]``), ``]`` closes only such a list;
  elsewhere both are characters of an atom (``a[b``, ``x]y``, ``[Gmail]`` are mailbox names).
* it keeps an escaped backslash of a quoted string doubled (``"back\\\\slash"`` reads
  ``back\\\\slash``).
* it strips the line first, so a literal that ends the line loses its trailing whitespace
  (a LIST name ``a `` sent as a literal).

Where the input is not IMAP at all the parser is lenient in its own way (a value glued to
another is a value of its own; Twisted joins them): the reference states that too.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.mail import imap4

from mailsocketd.mail.imap.parse import parse_line

# Well-formed lines that hold no bracket outside a response code or section, and no escape:
# Twisted reads them right.
LINES = [
    b"1 FETCH (UID 6000 FLAGS (\\Seen \\Answered) RFC822.SIZE 321 "
    b"BODY[HEADER.FIELDS (DATE FROM SUBJECT)]<0> {40}\r\n"
    b"Subject: hello (world) \"x\"\r\nFrom: a@b\r\n\r\n)",
    b'1 FETCH (UID 7 INTERNALDATE "25-Nov-2026 14:03:07 +0100" BODY[] {2}\r\nab)',
    b"STATUS INBOX (MESSAGES 3 UNSEEN 1 RECENT 0 UIDNEXT 4 UIDVALIDITY 7)",
    b'LIST (\\HasNoChildren \\Trash) "." "Deleted Items"',
    b'LIST (\\HasNoChildren) "/" "[Gmail]/Sent Mail"',
    b'LIST () NIL INBOX',
    b"OK [UIDVALIDITY 1700000000] UIDs valid",
    b"OK [PERMANENTFLAGS (\\Seen \\*)] Flags permitted.",
    b"NO [TRYCREATE] no such mailbox",
    b"SEARCH 1 2 3",
    b"(unbalanced",
    b"unbalanced)",
    b"",
    b"  ()  ",
    b'("" NIL "NIL" nil)',
    b'LIST () "." "say \\"hi\\""',
    b"OK [",
    b'LIST () "/" "open',
]

# Where Twisted is wrong: what the grammar says.
CORRECTED = [
    (b'LIST (\\HasNoChildren) "." a[b', [b"LIST", [b"\\HasNoChildren"], b".", b"a[b"]),
    (b'LIST (\\HasNoChildren) "." x]y', [b"LIST", [b"\\HasNoChildren"], b".", b"x]y"]),
    (b'LIST (\\HasChildren \\Noselect) "/" [Gmail]',
     [b"LIST", [b"\\HasChildren", b"\\Noselect"], b"/", b"[Gmail]"]),
    (b'LIST () "/" [Gmail]/Sent', [b"LIST", [], b"/", b"[Gmail]/Sent"]),
    (b'LIST () "." "back\\\\slash"', [b"LIST", [], b".", b"back\\slash"]),
    (b'LIST () "/" {2}\r\na ', [b"LIST", [], b"/", b"a "]),  # a literal ends the line
    (b"STATUS a[b (MESSAGES 1)", [b"STATUS", b"a[b", [b"MESSAGES", b"1"]]),
    (b"STATUS x]y (MESSAGES 1)", [b"STATUS", b"x]y", [b"MESSAGES", b"1"]]),
    (b"FLAGS (\\Seen $a[b] c])", [b"FLAGS", [b"\\Seen", b"$a[b]", b"c]"]]),
    (b"1 FETCH (FLAGS (x[y) BODY[1.MIME] NIL)",
     [b"1", b"FETCH", [b"FLAGS", [b"x[y"], b"BODY", [b"1.MIME"], None]]),
    (b"OK [ALERT] look ] here [", [b"OK", [b"ALERT"], b"look", b"]", b"here", b"["]),
]


def twisted(line: bytes) -> object:
    try:
        return imap4.parseNestedParens(line)
    except Exception as e:  # the same failure is the same result
        return type(e)


def ours(line: bytes) -> object:
    try:
        return parse_line(line)
    except Exception as e:
        return type(e)


_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n")
_STATUS = (b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH")
_SECTIONED = (b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE")


def reference(line: bytes) -> object:
    """parseNestedParens' byte-by-byte walk with the two corrections (module doc)."""
    s = line  # (Twisted strips it, and loses a literal's CRLF at the end)
    stack: list[list[object]] = [[]]
    brackets = [False]
    atom: bytes | None = None

    def flush() -> None:
        nonlocal atom
        if atom is not None:
            stack[-1].append(None if atom == b"NIL" else atom)
        atom = None

    def opens() -> bool:
        top = stack[0]
        if atom is None:  # a response code: "OK [" at the start of the line
            return len(stack) == 1 and top in ([b"OK"], [b"NO"], [b"BAD"], [b"BYE"],
                                               [b"PREAUTH"])
        return (len(stack) == 2 and len(top) >= 2 and top[1] == b"FETCH"
                and atom.upper() in _SECTIONED)  # a FETCH item's section

    i = 0
    while i < len(s):
        c = s[i:i + 1]
        literal = _LITERAL.match(s, i)
        if literal:
            flush()
            end = literal.end() + int(literal[1])
            if end > len(s):
                return imap4.MismatchedNesting
            stack[-1].append(s[literal.end():end])
            i = end
        elif c.isspace():
            flush()
            i += 1
        elif c == b'"':
            flush()
            i += 1
            value = b""
            while s[i:i + 1] != b'"':
                if s[i:i + 1] in (b"", b"\r", b"\n") or s[i:i + 2] in (b"\\", b"\\\r", b"\\\n"):
                    return imap4.MismatchedQuoting
                if s[i:i + 1] == b"\\":
                    i += 1
                value += s[i:i + 1]
                i += 1
            stack[-1].append(value)
            i += 1
        elif c == b"(":
            flush()
            stack[-1].append([])
            stack.append(stack[-1][-1])  # type: ignore[arg-type]
            brackets.append(False)
            i += 1
        elif c == b")":
            flush()
            if len(stack) == 1 or brackets[-1]:
                return imap4.MismatchedNesting
            stack.pop()
            brackets.pop()
            i += 1
        elif c == b"[" and opens():
            flush()
            stack[-1].append([])
            stack.append(stack[-1][-1])  # type: ignore[arg-type]
            brackets.append(True)
            i += 1
        elif c == b"]" and brackets[-1]:
            flush()
            stack.pop()
            brackets.pop()
            i += 1
        else:
            atom = (atom or b"") + c
            i += 1
    flush()
    if len(stack) != 1:
        return imap4.MismatchedNesting
    return stack[0]


@pytest.mark.parametrize("line", LINES)
def test_well_formed_lines_read_as_twisted_reads_them(line: bytes) -> None:
    assert ours(line) == twisted(line) == reference(line)


@pytest.mark.parametrize(("line", "expected"), CORRECTED)
def test_where_twisted_is_wrong_the_grammar_decides(line: bytes, expected: object) -> None:
    assert ours(line) == reference(line) == expected
    assert twisted(line) != expected  # (else the line belongs in LINES)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


_piece = st.one_of(
    st.sampled_from([b"(", b")", b"[", b"]", b" ", b"  ", b"\t", b"NIL", b"\\Seen", b"UID",
                     b"BODY", b"<0>", b'"', b"\\", b"{", b"}", b"\r\n", b"{2}\r\n", b"{0}\r\n",
                     b" {1}\r\n", b'""', b"\x0b", b"\r", b"\n", b"OK ", b"NO [", b"1 FETCH (",
                     b"BODY[", b"BODY.PEEK[", b"BINARY.SIZE[", b"~{1}\r\n", b"[Gmail]",
                     b"a[b", b"x]y", b'"a\\\\b"', b'"a\\"b"', b"* "]),
    st.binary(max_size=6).map(lambda b: b'"' + b.replace(b'"', b"") + b'"'),
    st.binary(max_size=8).map(_literal),
    st.from_regex(rb"\A[A-Za-z0-9.<>*%\\\[\]-]{1,8}\Z"),
    st.binary(max_size=3),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_piece, max_size=14).map(b"".join))
def test_any_line_reads_as_the_reference_reads_it(line: bytes) -> None:
    assert ours(line) == reference(line)


# Twisted is right on well-formed lines without brackets or escapes: values apart, strings
# without backslashes, literals not ending in whitespace.
_plain = st.one_of(
    st.sampled_from([b"(", b")", b"NIL", b"\\Seen", b"UID", b"<0>", b'""', b"OK", b"FETCH"]),
    st.binary(max_size=6).map(lambda b: b'"' + re.sub(rb'["\\\r\n]', b"", b) + b'"'),
    st.binary(max_size=8).map(lambda b: _literal(b.rstrip())),
    st.from_regex(rb"\A[A-Za-z0-9.<>*%\\-]{1,8}\Z"),
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_plain, max_size=14).map(b" ".join))
def test_well_formed_lines_without_brackets_read_as_twisted_reads_them(line: bytes) -> None:
    assert ours(line) == twisted(line)
