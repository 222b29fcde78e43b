"""UserImapClient's replies read as RFC 3501 / 9051 write them: the arrival date of a listed
message, and mailbox names holding ``[``, ``]``, ``\\`` or ``"`` (issue 11, items 14 and 21)."""

from __future__ import annotations

from mailrig import STATUS_ITEMS
from userrig import UserRig, result_of, run

from mailsocketd.mail.imap.client import MailboxCounts, mailbox_arg
from mailsocketd.mail.imap.commands import ListedMessage


def greeted() -> UserRig:
    rig = UserRig().connect()
    rig.greet()
    return rig


def _fetch(seq: int, uid: int, header: bytes, date: str) -> bytes:
    return (f'* {seq} FETCH (UID {uid} FLAGS () RFC822.SIZE 99 INTERNALDATE "{date}" '
            f"BODY[HEADER.FIELDS (DATE FROM SUBJECT CONTENT-TYPE)]<0> {{{len(header)}}}\r\n"
            ).encode() + header + b")\r\n"


def test_list_fetches_the_arrival_date_with_the_headers():
    rig = greeted()
    d = run(rig.client.fetch_headers(1, 2))
    args = rig.expect(b"FETCH")
    assert args.startswith(b"1:2 (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[")
    rig.client.dataReceived(_fetch(1, 10, b"Subject: none\r\n\r\n", " 5-Nov-2026 09:07:00 +0100")
                            + _fetch(2, 11, b"Subject: x\r\n\r\n", "25-Nov-2026 14:03:07 -0500")
                            + rig.last_tag + b" OK done\r\n")
    assert result_of(d) == [
        ListedMessage(11, frozenset(), 99, b"Subject: x\r\n\r\n", "25-Nov-2026 14:03:07 -0500"),
        ListedMessage(10, frozenset(), 99, b"Subject: none\r\n\r\n",
                      " 5-Nov-2026 09:07:00 +0100")]


# -- mailbox names with [ ] \ " (item 14) ----------------------------------------------------------

NAMES = ["a[b", "x]y", "[Gmail]", "[Gmail]/Sent Mail", "back\\slash", 'say "hi"', "INBOX"]
# Brackets quoted: an astring may hold them bare, but Courier refuses them so (issue 15)
SENT = [b'"a[b"', b'"x]y"', b'"[Gmail]"', b'"[Gmail]/Sent Mail"', b'"back\\\\slash"',
        b'"say \\"hi\\""', b"INBOX"]


def test_mailbox_names_are_sent_as_atoms_when_they_are_else_quoted_with_escapes():
    assert [mailbox_arg(name) for name in NAMES] == SENT
    assert mailbox_arg("Entwürfe") == b"Entw&APw-rfe" and mailbox_arg("") == b'""'


def test_list_reads_names_with_brackets_backslashes_and_literals():
    rig = greeted()
    d = run(rig.client.list_mailboxes())
    assert rig.expect(b"LIST") == b'"" "*"'
    rig.client.dataReceived(
        b'* LIST (\\HasNoChildren) "/" a[b\r\n'
        b'* LIST (\\HasNoChildren) "/" x]y\r\n'
        b'* LIST (\\HasChildren \\Noselect) "/" [Gmail]\r\n'
        b'* LIST (\\HasNoChildren) "/" "[Gmail]/Sent Mail"\r\n'
        b'* LIST (\\HasNoChildren) "/" "back\\\\slash"\r\n'
        b'* LIST (\\HasNoChildren) "/" {8}\r\nsay "hi"\r\n'  # a literal ends the line
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        + rig.last_tag + b" OK done\r\n")
    entries = result_of(d)
    assert [e.name for e in entries] == NAMES
    assert [e.selectable for e in entries] == [True, True, False, True, True, True, True]
    assert not rig.client.dropping


def test_status_of_names_with_brackets_and_backslashes_reads_the_reply():
    rig = greeted()
    for name, sent, echoed in [("a[b", b'"a[b"', b"a[b"), ("x]y", b'"x]y"', b"x]y"),
                               ("[Gmail]", b'"[Gmail]"', b"[Gmail]"),
                               ("back\\slash", b'"back\\\\slash"', b'"back\\\\slash"')]:
        d = rig.client.status_counts(name)
        assert rig.expect(b"STATUS") == sent + b" " + STATUS_ITEMS
        rig.reply(b"STATUS " + echoed + b" (MESSAGES 4 UNSEEN 1 RECENT 0 UIDNEXT 5 "
                  b"UIDVALIDITY 9)")
        assert result_of(d) == MailboxCounts(4, 1, 0, 5, 9), name
    assert not rig.client.dropping


def test_a_literal_ending_a_response_line_does_not_swallow_the_next_line():
    """Twisted strips the CRLF after a literal that arrives with more data: the next response
    became part of this one (a LIST name sent as a literal hid the next mailbox)."""
    for chunks in ([b'* LIST () "/" {3}\r\nabc\r\n* LIST () "/" INBOX\r\nTAG OK done\r\n'],
                   [b'* LIST () "/" {3}\r\nab', b'c\r\n* LIST () "/" INBOX\r\n', b"TAG OK done\r\n"],
                   [b'* LIST () "/" {3}\r\nabc', b'\r\n* LIST () "/" INBOX\r\nTAG OK done\r\n']):
        rig = greeted()
        d = run(rig.client.list_mailboxes())
        rig.expect(b"LIST")
        for chunk in chunks:
            rig.client.dataReceived(chunk.replace(b"TAG", rig.last_tag))
        assert [e.name for e in result_of(d)] == ["abc", "INBOX"], chunks
