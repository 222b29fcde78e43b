"""``watch``: pushed ``* new mail`` lines for one mailbox, over the user's IMAP session.

Apart from reading because a watch outlives its command: it pushes lines between replies,
ends on its own, and keeps the line session from counting as idle while it runs.
"""

from __future__ import annotations

import functools

from mailsocketd.line.mail.state import BridgeState, MailUser, counts_text, shown
from mailsocketd.line.replies import Reply
from mailsocketd.line.session import Session
from mailsocketd.mail.errors import clean_text
from mailsocketd.mail.imap.client import MailboxCounts

__all__ = ["WatchingCommands"]


class WatchingCommands(BridgeState):
    """The watch handler of MailBridge and the lines its watch pushes."""

    async def watch_mailbox(self, session: Session, switch: str,
                            mailbox: str = "INBOX") -> Reply:
        user = self._user(session)
        if switch == "off":
            if user.watching is not None:
                user.watching = None
                await user.imap.unwatch()
            return Reply("ok not watching")
        counts = await user.imap.watch(mailbox, functools.partial(self._new_mail, session),
                                       functools.partial(self._watch_ended, session, user))
        user.watching = mailbox
        session.awaits_push = self.is_watching  # not idle while it watches (see Session)
        return Reply(f"ok watching {counts_text(mailbox, counts)}")

    @staticmethod
    def is_watching(session: Session) -> bool:
        """Whether the session's user watches a mailbox over a live IMAP session: its
        client waits for ``* new mail`` lines, however long it is quiet."""
        user = session.user
        return isinstance(user, MailUser) and user.watching is not None and user.imap.alive

    def _new_mail(self, session: Session, mailbox: str, counts: MailboxCounts) -> None:
        session.push(f"* new mail: {shown(mailbox)} messages={counts.messages} "
                     f"unseen={counts.unseen}")

    def _watch_ended(self, session: Session, user: MailUser, reason: str) -> None:
        user.watching = None
        session.push(f"* watch ended: {clean_text(reason)}")
