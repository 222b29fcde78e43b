"""``send``: the command that starts a message; the lines that follow it are read by
``SendInput`` (sendinput.py), which composes and submits the message.

Apart from reading because ``send`` needs [smtp] and the user's password, not the IMAP session,
and answers with an input reader rather than a result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool

from mailsocketd.line.mail.sendinput import SendInput
from mailsocketd.line.mail.state import BridgeState
from mailsocketd.line.replies import CommandError, Reply
from mailsocketd.line.session import Session
from mailsocketd.mail.text.compose import DraftError, parse_recipients

__all__ = ["SendingCommands"]


class SendingCommands(BridgeState):
    """The send handler of MailBridge."""

    def send_message(self, session: Session, to: str = "") -> Reply:
        """``send [TO...]``: the lines up to the lone ``.`` are the message, never commands,
        whatever the outcome: the table marks it ``reads_input``, so a send refused at once
        (not logged in, the session lost, no [smtp], a bad recipient) still reads them, and
        drops them (LineServer, refused_input)."""
        user = self._user(session)
        if self.smtp is None:
            raise CommandError("sending is not configured on this server (no [smtp])")
        try:
            recipients = parse_recipients(to) if to.strip() else ()  # or in To:/Cc:/Bcc:
        except DraftError as e:
            raise CommandError(str(e)) from None
        reader = SendInput(self.reactor, self.clock, self.smtp, user=user.name,
                           password=user.password, to=recipients, peer=session.peer,
                           unsent=self.unsent, offload=self._offload)
        reader.on_outcome = self._count_send
        return Reply("ok ready: optional Subject:/Cc:/Bcc: lines, a blank line, the text; "
                     "end with a line holding only '.'", reader=reader)

    def _count_send(self, outcome: str) -> None:
        self.sends[outcome] += 1

    def _offload(self, work: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """``work`` (composing a message) in the reactor's thread pool."""
        return deferToThreadPool(IReactorFromThreads(self.reactor),
                                 self.reactor.getThreadPool(), work, *args)
