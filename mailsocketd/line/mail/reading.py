"""The reading commands: ``check``, ``mailboxes``, ``list``, ``read`` and ``delete``.

Together because they share the current mailbox (``list`` and ``read`` set it, ``delete`` acts
on it) and the thread pool that turns headers and messages into text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool

from mailsocketd.line.mail.state import BridgeState, counts_text, shown
from mailsocketd.line.replies import CommandError, Reply, multiline
from mailsocketd.line.session import Session
from mailsocketd.mail.text.render import human_size, render_message
from mailsocketd.mail.text.summary import summarize, summary_line
from mailsocketd.mail.users.session import ListedMessage

__all__ = ["DEFAULT_COUNT", "ReadingCommands", "summary_lines"]

DEFAULT_COUNT = 20


def summary_lines(messages: Sequence[ListedMessage]) -> list[str]:
    """``list``'s line for each message (pure: run in the thread pool)."""
    return [summary_line(summarize(m.uid, m.header, m.flags, m.size, m.arrived))
            for m in messages]


class ReadingCommands(BridgeState):
    """The reading handlers of MailBridge."""

    async def check_mailbox(self, session: Session, mailbox: str = "INBOX") -> Reply:
        counts = await self._user(session).imap.check(mailbox)
        return Reply("ok " + counts_text(mailbox, counts))

    async def list_mailboxes(self, session: Session) -> Reply:
        found = await self._user(session).imap.mailboxes()
        lines = [f"messages={c.messages} unseen={c.unseen} {shown(name)}" if c is not None
                 else f"messages=- unseen=- {shown(name)}" for name, c in found]
        return multiline(f"{len(lines)} mailboxes", lines)

    async def list_messages(self, session: Session, count: int | None = None,
                            mailbox: str | None = None) -> Reply:
        user = self._user(session)
        list_max = self._imap().list_max
        if count is None:
            count = DEFAULT_COUNT
        elif not 0 < count <= list_max:
            raise CommandError(f"COUNT must be 1 to {list_max}")
        mailbox = mailbox or user.mailbox
        found = await user.imap.list_messages(mailbox, count)
        user.mailbox = mailbox
        # Summarizing 500 heavy headers takes a few tenths of a second: in the thread pool,
        # as read renders, other clients are served meanwhile.
        lines = await self._in_thread(summary_lines, found.messages)
        return multiline(f"{len(lines)} of {found.exists} messages in {shown(mailbox)}, "
                         f"newest first (uidvalidity {found.uidvalidity})", lines)

    def _in_thread(self, work: Callable[..., list[str]], *args: Any, **kwargs: Any
                   ) -> Deferred[list[str]]:
        """``work`` (pure text work: rendering, summarizing) in the reactor's thread pool."""
        return deferToThreadPool(IReactorFromThreads(self.reactor),
                                 self.reactor.getThreadPool(), work, *args, **kwargs)

    async def read_message(self, session: Session, uid: int,
                           mailbox: str | None = None) -> Reply:
        user, imap = self._user(session), self._imap()
        mailbox = mailbox or user.mailbox
        message = await user.imap.fetch_message(mailbox, uid, imap.read_limit)
        user.mailbox = mailbox
        # Rendering a big or hostile message takes up to about half a second: in the
        # reactor's thread pool other clients are served meanwhile.
        lines = await self._in_thread(render_message, message.data,
                                      text_limit=imap.text_limit, total_size=message.size)
        return multiline(f"message {uid} in {shown(mailbox)} ({human_size(message.size)})",
                         lines)

    async def delete_messages(self, session: Session, uids: tuple[int, ...]) -> Reply:
        user = self._user(session)
        mailbox = user.mailbox
        outcome = await user.imap.delete(mailbox, sorted(set(uids)))
        n = len(outcome.deleted)
        text = (f"ok deleted {n} message{'s' if n != 1 else ''} from {shown(mailbox)} "
                f"({shown(outcome.method)})")  # the Trash's name comes from the server
        if outcome.missing:
            text += "; no such UID: " + " ".join(map(str, outcome.missing))
        return Reply(text)
