"""What goes on the wire, both ways, without a connection: commands, mailbox names as
arguments, STATUS answers as MailboxCounts (``client.py`` exports them too)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.mail import imap4

from mailsocketd.mail.imap.parse import FastCommand

__all__ = ["MAX_UID", "STATUS_ARGS", "STATUS_ITEMS", "MailboxCounts", "command", "mailbox_arg",
           "status_items"]

MAX_UID = 2**32 - 1  # UIDs, UIDVALIDITY, counts: 32-bit unsigned (RFC 3501 9, nz-number)
STATUS_ITEMS = ("MESSAGES", "UNSEEN", "RECENT", "UIDNEXT", "UIDVALIDITY")
STATUS_ARGS = " ".join(STATUS_ITEMS).encode()


def command(name: bytes, args: bytes | None = None,
            continuation: Callable[[bytes], None] | None = None) -> imap4.Command:
    """An ``imap4.Command`` (its constructor is untyped) that parses its reply fast."""
    if continuation is None:
        return FastCommand(name, args)  # type: ignore[no-untyped-call]
    return FastCommand(name, args, (), continuation)  # type: ignore[no-untyped-call]


# What an atom may not hold (RFC 3501 / 9051 atom-specials), and "[" and "]": a mailbox is an
# astring, whose characters include both, but Courier-IMAP refuses either unquoted ("NO Mailbox
# does not exist"); a mailbox name holding one is sent quoted, which every server reads.
_NOT_ATOM = re.compile(rb'[\x00-\x20\x7f-\xff(){%*"\\\[\]]')


def mailbox_arg(mailbox: str) -> bytes:
    """A mailbox name as a command argument: modified UTF-7 (RFC 3501 5.1.3), as an atom when
    it is one (and holds no bracket), else a quoted string with ``\\`` and ``"`` escaped
    (``back\\slash`` is sent ``"back\\\\slash"``, ``[Gmail]`` as ``"[Gmail]"``; Twisted's
    ``_prepareMailboxName`` sends them bare, which servers refuse).
    """
    name = mailbox.encode("imap4-utf-7")
    if name and not _NOT_ATOM.search(name):
        return name
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def status_items(reply: tuple[list[list[Any]], bytes]) -> dict[str, Any]:
    """The items of a STATUS reply's untagged ``STATUS name (ITEM value ...)`` line."""
    status: dict[str, Any] = {}
    for parts in reply[0]:
        if len(parts) >= 3 and parts[0] == b"STATUS" and isinstance(parts[2], list):
            items = parts[2]
            for key, value in zip(items[::2], items[1::2], strict=False):
                if isinstance(key, bytes):
                    status[key.decode("ascii", "replace").upper()] = value
    return status


@dataclass(frozen=True)
class MailboxCounts:
    """One STATUS answer."""

    messages: int
    unseen: int
    recent: int
    uidnext: int
    uidvalidity: int
