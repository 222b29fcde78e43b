"""compare: new mail across a UIDVALIDITY that changes while the messages do not."""

from __future__ import annotations

import pytest

from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.uidvalidity import Change, compare


def counts(messages, uidnext, uidvalidity):
    return MailboxCounts(messages, 0, 0, uidnext, uidvalidity)


@pytest.mark.parametrize(("before", "after", "change"), [
    ((3, 4, 7), (3, 4, 7), Change("same", 0)),
    ((3, 4, 7), (5, 6, 7), Change("same", 2)),
    ((3, 4, 7), (1, 4, 7), Change("same", 0)),  # expunged: no new mail
    ((3, 4, 7), (3, 4, 8), Change("unsettled", 0)),  # Courier's clock-derived value
    ((3, 4, 7), (5, 6, 9), Change("unsettled", 2)),  # ... and two new messages
    ((3, 4, 7), (0, 1, 8), Change("recreated", 0)),  # deleted and created again
    ((3, 4, 7), (4, 4, 8), Change("recreated", 0)),
    ((3, 4, 7), (3, 9, 8), Change("recreated", 0)),
])
def test_compare(before, after, change):
    assert compare(counts(*before), counts(*after)) == change
