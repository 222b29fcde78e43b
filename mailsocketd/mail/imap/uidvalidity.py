"""New mail between two answers about one mailbox, and a UIDVALIDITY that will not hold still.

RFC 3501 (2.3.1.1): a changed UIDVALIDITY means the UIDs now name other messages, so UIDNEXT
cannot be compared across it.  But Courier-IMAP derives the UIDVALIDITY of a folder that no
client has opened read-write from the clock (it writes its UID database only then; STATUS and
EXAMINE never do): every query gives a new value while nothing in the folder changed.  Taken
literally, no new mail is ever seen in such a folder.

``compare`` tells the two apart by the counts: when UIDNEXT moved exactly as far as MESSAGES
did (often not at all), the same messages are there, perhaps with new ones after them; the
UIDVALIDITY is "unsettled", and the growth is new mail.  Anything else is a mailbox that was
recreated: counting starts afresh.  A mailbox recreated with exactly as many messages as it
had, and as many UIDs used, looks unsettled: its first check then reports no new mail, the
next ones count as usual.

A read-write SELECT makes Courier settle the folder (``ImapClient.select_read_write``); the
account checks and a user's ``watch`` do it once when they see an unsettled UIDVALIDITY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailsocketd.mail.imap.client import MailboxCounts

__all__ = ["Change", "Continuity", "compare"]

# "same": one UIDVALIDITY; "unsettled": it changed, the messages did not (see above);
# "recreated": it changed and so did the messages: the UIDs mean other mail.
Continuity = Literal["same", "unsettled", "recreated"]


@dataclass(frozen=True)
class Change:
    """What happened between two answers: ``new`` messages arrived (UIDNEXT grew)."""

    continuity: Continuity
    new: int


def compare(before: MailboxCounts, after: MailboxCounts) -> Change:
    """How ``after`` follows ``before`` (two STATUS answers about one mailbox)."""
    grown = after.uidnext - before.uidnext
    if after.uidvalidity == before.uidvalidity:
        return Change("same", max(grown, 0))
    if grown >= 0 and grown == after.messages - before.messages:
        return Change("unsettled", grown)
    return Change("recreated", 0)
