"""KnownUids: what a user's ``list`` showed, so that ``read`` and ``delete`` act on that mail.

The numbers ``list`` shows are UIDs, which name the same messages only while the mailbox keeps
its UIDVALIDITY.  The session remembers the UIDVALIDITY each mailbox had when it was listed
(or first read); ``read`` and ``delete`` check it.  When it changed, the UIDs may name other
messages, and the command is refused (``UidValidityChanged``: run list again) - unless the
messages under those UIDs are the very ones ``list`` showed: same size, arrival date and
Date/From/Subject/Content-Type header block.  That is what a Courier folder nobody opened
read-write does: its UIDVALIDITY comes from the clock and changes from one command to the next
(``imap/uidvalidity.py``), while the messages and their UIDs stay.  So ``list 5 INBOX.Work``
then ``read 2 INBOX.Work`` works there, at the cost of one UID FETCH of those headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mailsocketd.mail.errors import clean_text
from mailsocketd.mail.imap.commands import ListedMessage, Selected, UserImapClient, mailbox_key
from mailsocketd.mail.users.results import UidValidityChanged

__all__ = ["LISTINGS_KEPT", "MAX_REMEMBERED", "KnownUids"]

MAX_REMEMBERED = 1000  # mailboxes whose UIDVALIDITY is remembered
LISTINGS_KEPT = 20  # mailboxes whose last listing is kept (at most list_max messages each)
Fingerprint = tuple[int, str, bytes]


def fingerprint(message: ListedMessage) -> Fingerprint:
    """What ``list`` showed of a message, in a few bytes."""
    return message.size, message.arrived, hashlib.blake2b(message.header, digest_size=16).digest()


class KnownUids:
    """The UIDVALIDITY of each mailbox listed (or read), and what its last listing showed."""

    def __init__(self) -> None:
        self._validity: dict[str, int] = {}
        self._listed: dict[str, dict[int, Fingerprint]] = {}

    def listed(self, mailbox: str, uidvalidity: int, messages: Sequence[ListedMessage]) -> None:
        """``list`` showed these messages under this UIDVALIDITY."""
        self._remember(mailbox, uidvalidity)
        key = mailbox_key(mailbox)
        self._listed.pop(key, None)
        if len(self._listed) >= LISTINGS_KEPT:
            self._listed.pop(next(iter(self._listed)))
        self._listed[key] = {m.uid: fingerprint(m) for m in messages}

    def _remember(self, mailbox: str, uidvalidity: int) -> None:
        key = mailbox_key(mailbox)
        self._validity.pop(key, None)
        if len(self._validity) >= MAX_REMEMBERED:
            self._validity.pop(next(iter(self._validity)))
        self._validity[key] = uidvalidity

    async def check(self, client: UserImapClient, selected: Selected,
                    uids: Sequence[int]) -> None:
        """Raise UidValidityChanged unless ``uids`` of the selected mailbox name the messages
        the user saw (see the module docstring)."""
        mailbox = selected.mailbox
        key = mailbox_key(mailbox)
        known = self._validity.get(key)
        if known is None:
            self._remember(mailbox, selected.uidvalidity)
            return
        if known == selected.uidvalidity:
            return
        listed = self._listed.get(key, {})
        if uids and all(uid in listed for uid in uids):
            found = {m.uid: fingerprint(m) for m in await client.uid_fetch_headers(uids)}
            if all(found.get(uid) == listed[uid] for uid in uids):
                self._remember(mailbox, selected.uidvalidity)
                return
        raise UidValidityChanged(f"{clean_text(mailbox, 100)} changed on the server "
                                 "(UIDVALIDITY); run list again")
