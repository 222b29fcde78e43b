"""The message a user types after ``send``: collected line by line, bounded, then submitted.

Lines are kept only up to ``smtp.max_message_size`` bytes; past it the rest is read and
dropped (the input must still be consumed up to the lone ``.``, or the user's message text
would run as commands) and ``finish`` refuses the message.  Nothing is reported sent unless
the SMTP server (or sendmail) accepted it for every recipient.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mailsocketd.line.replies import CommandError, Reply, printable
from mailsocketd.mail.errors import MailError
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.smtp.submit import RecipientsRefused, submit
from mailsocketd.mail.text.compose import DraftError, build_message, parse_typed, sender_address
from mailsocketd.mail.text.render import human_size


class SendInput:
    """An InputReader for ``send``: collects the typed message, then submits it."""

    log = Logger()

    def __init__(self, reactor: MailReactor, clock: IReactorTime, smtp: SmtpConfig, *, user: str,
                 password: Secret, to: tuple[str, ...], peer: str) -> None:
        self.reactor = reactor
        self.clock = clock
        self.smtp = smtp
        self.user = user
        self.password = password
        self.to = to
        self.peer = peer
        self.lines: list[bytes] = []
        self.size = 0  # bytes typed so far, line ends included

    def line(self, data: bytes) -> None:
        self.size += len(data) + 2
        if self.too_large:
            self.lines.clear()  # it will not be sent: keep nothing of it
        else:
            self.lines.append(data)

    @property
    def too_large(self) -> bool:
        return self.size > self.smtp.max_message_size

    def abandon(self) -> None:
        self.lines.clear()

    def finish(self) -> Deferred[Reply]:
        if self.too_large:
            raise CommandError(f"message larger than {human_size(self.smtp.max_message_size)}"
                               " (the server's limit); not sent")
        try:
            text = [line.decode("utf-8") for line in self.lines]
        except UnicodeDecodeError:
            raise CommandError("the message is not valid UTF-8; not sent") from None
        self.lines.clear()
        try:
            draft = parse_typed(self.to, text)
            sender = sender_address(self.user, self.smtp.from_domain)
            message_id, message = build_message(draft, sender=sender, now=self.clock.seconds(),
                                                domain=self.smtp.from_domain)
        except DraftError as e:
            raise CommandError(f"{e}; not sent") from None
        return Deferred.fromCoroutine(self._submit(sender, draft.recipients, message_id,
                                                   message))

    async def _submit(self, sender: str, recipients: tuple[str, ...], message_id: str,
                      message: bytes) -> Reply:
        try:
            await submit(self.reactor, self.smtp, user=self.user, password=self.password,
                         sender=sender, recipients=recipients, message=message)
        except RecipientsRefused as e:  # says to whom it went, if to anyone
            raise CommandError(str(e)) from None
        except MailError as e:
            raise CommandError(f"not sent: {e}") from None
        self.log.info("{peer}: {user} sent {message_id} to {count} recipients",
                      peer=self.peer, user=printable(self.user), message_id=message_id,
                      count=len(recipients), event="mail_sent")
        return Reply(f"ok sent {message_id}")
