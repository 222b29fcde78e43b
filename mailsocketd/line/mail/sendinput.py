"""The message a user types after ``send``: collected into one buffer, bounded, then submitted.

Every line up to the lone ``.`` is message text, never a command, whatever becomes of the
message: a ``send`` that is refused at once still reads its message and
drops it (the table marks ``send`` as reading input: ``line.replies.refused_input``), and so
does one whose message grows too large while it is typed.

Typing: the lines go into one ``bytearray`` (LF after each), not an object per line, and the
size the message will have on the wire (after its transfer encoding, CRLF line ends) is counted
as they come.  Past ``smtp.max_message_size``, or past what ``UnsentMail`` lets one user (or all
users) hold in messages not yet sent, the buffer is freed, the rest is read and dropped, and
``finish`` refuses the message.  At the ``.`` the message is decoded, parsed and composed in
the reactor's thread pool (``Offload``), so other clients are served meanwhile.  Nothing is
reported sent unless the SMTP server (or sendmail) accepted it for every recipient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mailsocketd.line.replies import CommandError, Reply, printable
from mailsocketd.mail.errors import MailError
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.smtp.submit import RecipientsRefused, submit
from mailsocketd.mail.text.compose import (
    Draft,
    DraftError,
    build_message,
    parse_typed_text,
    sender_address,
)
from mailsocketd.mail.text.render import human_size

__all__ = ["Offload", "SendInput", "UnsentMail", "encoded_size"]

# Runs ``work(*args)`` away from the reactor's thread (the reactor's thread pool); fires with
# its result.  Tests pass one that runs it at once.
Offload = Callable[..., Deferred[Any]]
# Bytes a quoted-printable or base64 body escapes: all but printable ASCII, tab and the LF.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\t"
_ESCAPED = bytes(b for b in range(256) if b not in _PLAIN)
SEVEN_BIT_LINE = 78  # as compose.encode_body: longer lines are not sent as 7bit


def encoded_size(raw: int, lines: int, escaped: int, seven_bit: bool) -> int:
    """The size a body of ``raw`` bytes in ``lines`` lines (``escaped`` of its bytes outside
    printable ASCII) has on the wire, as ``compose.encode_body`` would encode it, with CRLF
    line ends; a lower bound, so that no message that fits is refused.  7bit: as typed;
    quoted-printable: each escaped byte three; base64: four for three, CRLF every 76."""
    seven = raw + 2 * lines
    if seven_bit:
        return seven
    quoted = raw + 2 * escaped + 2 * lines
    data = raw + lines
    base64 = 4 * -(-data // 3)
    return min(quoted, base64 + 2 * -(-base64 // 76))


class UnsentMail:
    """The bytes held in messages that are being typed (or composed and sent), per user and in
    all: a user may hold ``per_user`` bytes, all users together ``total``."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self.held = 0
        self.by_user: dict[str, int] = {}

    def take(self, user: str, size: int) -> str | None:
        """Hold ``size`` more bytes for ``user``; or why not (nothing is held then)."""
        mine = self.by_user.get(user, 0)
        if mine + size > self.per_user:
            return (f"your messages being sent hold more than {human_size(self.per_user)} "
                    "(the server's limit per user)")
        if self.held + size > self.total:
            return (f"the server holds more than {human_size(self.total)} of messages being "
                    "sent; try again later")
        self.by_user[user] = mine + size
        self.held += size
        return None

    def give_back(self, user: str, size: int) -> None:
        if not size:
            return
        left = self.by_user.get(user, 0) - size
        if left > 0:
            self.by_user[user] = left
        else:
            self.by_user.pop(user, None)
        self.held -= size


def compose(buffer: bytearray, to: tuple[str, ...], sender: str, now: float,
            domain: str) -> tuple[tuple[str, ...], str, bytes]:
    """(recipients, Message-ID, message) from the typed buffer (CRLF after each line); run in
    the thread pool.  Only the header lines are decoded and parsed; a body that can go 7bit
    is copied once, into the message (so the peak is the buffer and the message), any other
    is decoded and encoded.  Raises CommandError for what the user must fix."""
    try:
        draft, body_at = typed_head(to, buffer)
        with memoryview(buffer) as view:
            message_id, message = build_message(draft, sender=sender, now=now, domain=domain,
                                                typed_body=view[body_at:])
    except UnicodeDecodeError:
        raise CommandError("the message is not valid UTF-8; not sent") from None
    except DraftError as e:
        raise CommandError(f"{e}; not sent") from None
    return draft.recipients, message_id, message


def typed_head(to: tuple[str, ...], buffer: bytearray) -> tuple[Draft, int]:
    """The Draft of the typed message's header lines (its body left empty), and where its body
    starts in ``buffer``.  Only a prefix is decoded, doubled until the headers end in it."""
    size = 4096
    while True:
        cut = len(buffer) if size >= len(buffer) else buffer.rfind(b"\n", 0, size) + 1
        if cut or not buffer:
            text = buffer[:cut].decode("utf-8").replace("\r\n", "\n")
            draft = parse_typed_text(to, text)
            if draft.body or cut == len(buffer):
                break
        size *= 2
    if not draft.body:
        return draft, len(buffer)
    head = text[:len(text) - 1 - len(draft.body)]  # (text ends with the LF of a line)
    return replace(draft, body=""), len(head.encode("utf-8")) + head.count("\n")


class SendInput:
    """An InputReader for ``send``: collects the typed message, then submits it."""

    log = Logger()

    def __init__(self, reactor: MailReactor, clock: IReactorTime, smtp: SmtpConfig, *, user: str,
                 password: Secret, to: tuple[str, ...], peer: str, unsent: UnsentMail,
                 offload: Offload) -> None:
        self.reactor = reactor
        self.clock = clock
        self.smtp = smtp
        self.user = user
        self.password = password
        self.to = to
        self.peer = peer
        self.unsent = unsent
        self.offload = offload
        self.buffer = bytearray()  # the lines typed so far, CRLF after each: as sent, if 7bit
        self.held = 0  # bytes taken from ``unsent`` (released once sent, refused or dropped)
        self.refused: str | None = None  # why it will not be sent, once known
        # Told the outcome once it is known (one of state.SEND_OUTCOMES; the metrics count it).
        self.on_outcome: Callable[[str], None] | None = None
        # What the wire size depends on (see encoded_size)
        self.raw = self.lines = self.escaped = 0
        self.seven_bit = True

    def line(self, data: bytes) -> None:
        if self.refused is not None:
            return  # read to the '.', and dropped
        length = len(data)
        escaped = length - len(data.translate(None, _ESCAPED)) if data else 0
        self.raw += length
        self.lines += 1
        self.escaped += escaped
        if self.seven_bit and (escaped or length > SEVEN_BIT_LINE or data.startswith(b"From ")):
            self.seven_bit = False
        if encoded_size(self.raw, self.lines, self.escaped, self.seven_bit) \
                > self.smtp.max_message_size:
            self._refuse(f"message larger than {human_size(self.smtp.max_message_size)}"
                         " (the server's limit)")
            return
        reason = self.unsent.take(self.user, length + 2)
        if reason is not None:
            self._refuse(reason)
            return
        self.held += length + 2
        self.buffer += data
        self.buffer += b"\r\n"

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        self._release()

    def _release(self) -> None:
        """Free the buffer and give its bytes back (it will not be sent, or has been)."""
        self.buffer = bytearray()
        self.unsent.give_back(self.user, self.held)
        self.held = 0

    def _outcome(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def abandon(self) -> None:
        self._release()

    def finish(self) -> Deferred[Reply]:
        if self.refused is not None:
            self._outcome("refused")
            raise CommandError(f"{self.refused}; not sent")
        sender = sender_address(self.user, self.smtp.from_domain, dict(self.smtp.senders))
        buffer, self.buffer = self.buffer, bytearray()
        composed = self.offload(compose, buffer, self.to, sender, self.clock.seconds(),
                                self.smtp.from_domain)
        return Deferred.fromCoroutine(self._send(composed, sender))

    async def _send(self, composed: Deferred[tuple[tuple[str, ...], str, bytes]],
                    sender: str) -> Reply:
        outcome = "error"
        try:
            try:
                recipients, message_id, message = await composed
            except CommandError:  # the message cannot be composed as typed
                outcome = "refused"
                raise
            await submit(self.reactor, self.smtp, user=self.user, password=self.password,
                         sender=sender, recipients=recipients, message=message)
            outcome = "sent"
        except RecipientsRefused as e:  # says to whom it went, if to anyone
            outcome = "failed"
            raise CommandError(str(e)) from None
        except MailError as e:
            outcome = "failed"
            raise CommandError(f"not sent: {e}") from None
        finally:
            self._release()
            self._outcome(outcome)
        self.log.info("{peer}: {user} sent {message_id} to {count} recipients",
                      peer=self.peer, user=printable(self.user), message_id=message_id,
                      count=len(recipients), event="mail_sent")
        return Reply(f"ok sent {message_id}")
