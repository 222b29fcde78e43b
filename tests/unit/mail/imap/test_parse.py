"""The fast response parser reads every line exactly as Twisted's parseNestedParens does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.mail import imap4

from mailsocketd.mail.imap.parse import parse_line

LINES = [
    b"1 FETCH (UID 6000 FLAGS (\\Seen \\Answered) RFC822.SIZE 321 "
    b"BODY[HEADER.FIELDS (DATE FROM SUBJECT)]<0> {40}\r\n"
    b"Subject: hello (world) \"x\"\r\nFrom: a@b\r\n\r\n)",
    b"STATUS INBOX (MESSAGES 3 UNSEEN 1 RECENT 0 UIDNEXT 4 UIDVALIDITY 7)",
    b'LIST (\\HasNoChildren \\Trash) "." "Deleted Items"',
    b'LIST () NIL INBOX',
    b"OK [UIDVALIDITY 1700000000] UIDs valid",
    b"OK [PERMANENTFLAGS (\\Seen \\*)] Flags permitted.",
    b"SEARCH 1 2 3",
    b'1 FETCH (BODY[] "quoted \\" escape")',
    b'a"b" c',
    b'"a"b',
    b"x{3}\r\nabc",
    b"{3}\r\nabc{3}\r\ndef",
    b"(unbalanced",
    b"",
    b"  ()  ",
    b'("" NIL "NIL" nil)',
    b"[a (b [c] d)] e",
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


@pytest.mark.parametrize("line", LINES)
def test_known_lines(line: bytes) -> None:
    assert ours(line) == twisted(line)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


_piece = st.one_of(
    st.sampled_from([b"(", b")", b"[", b"]", b" ", b"  ", b"\t", b"NIL", b"\\Seen", b"UID",
                     b"BODY", b"<0>", b'"', b"\\", b"{", b"}", b"\r\n", b"{2}\r\n", b"{0}\r\n",
                     b" {1}\r\n", b'""', b"\x0b", b"\r", b"\n"]),
    st.binary(max_size=6).map(lambda b: b'"' + b.replace(b'"', b"") + b'"'),
    st.binary(max_size=8).map(_literal),
    st.from_regex(rb"\A[A-Za-z0-9.<>*%\\-]{1,8}\Z"),
    st.binary(max_size=3),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_piece, max_size=14).map(b"".join))
def test_any_line_reads_as_twisted_reads_it(line: bytes) -> None:
    assert ours(line) == twisted(line)
