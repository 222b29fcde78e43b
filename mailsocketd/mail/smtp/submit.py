"""Handing a composed message to an SMTP submission server or to the local sendmail program.

SMTP goes through ``twisted.mail.smtp.ESMTPSenderFactory`` over a ``HostnameEndpoint``, with
the gaps of that path filled in here:

* ``tcp:`` servers must do STARTTLS, verified against ``ca_file`` (else the system CAs; the
  options of ``mail.tls``, as for IMAP, and its SASL preference order); only a
  loopback server, or ``allow_cleartext = true``, may go without TLS when it offers none.
  ``tls:`` is implicit TLS.  AUTH uses the user's own login and password and is required,
  except by a loopback server that offers no AUTH at all.
* Through an endpoint a dropped connection never fires the sender's Deferred, and its timeout
  sends QUIT and waits: here a lost connection, a silent server (``timeout`` seconds without a
  reply line), an overlong reply and a cancellation all end the attempt at once.
* The session log is off, so the AUTH exchange (the password, base64) is never kept; errors
  are rebuilt from the server's cleaned reply text, never from Twisted's exception text.
* A refused recipient is never silent: RecipientsRefused names each, and who did get it.

sendmail gets ``-i -f SENDER -- RECIPIENTS``, the message on stdin and the scrubbed
environment hooks get (``mail.process.scrubbed_environment``: never a ``password_env``
secret); a non-zero exit is a SendError with the first line it wrote to stderr, and one that
outlives ``timeout`` is killed
(``mail.process.run_process``, the daemon's one way of running a program).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from io import BytesIO
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.mail import smtp as tsmtp
from twisted.python.failure import Failure

from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.errors import MailError, clean_text, describe_failure
from mailsocketd.mail.process import (
    ProcessReactor,
    ProcessStartError,
    run_process,
    scrubbed_environment,
)
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.text.compose import address_problem
from mailsocketd.mail.tls import ConnectReactor, TlsPolicy, mechanism_order, server_endpoint
from mailsocketd.net import is_loopback

__all__ = ["RecipientsRefused", "SendError", "smtp_data", "smtp_endpoint",
           "submit", "submit_sendmail", "submit_smtp"]

log = Logger()
MAX_REPLY_LINES = 100  # lines of one multi-line reply (an EHLO answer has about a dozen)
MAX_REPLY_LINE = 4096  # RFC 5321 allows 512
MAX_STDERR = 4096  # bytes of sendmail's stderr kept for the error message
SUCCESS = range(200, 300)


class SendError(MailError):
    """The message was not (fully) sent; ``str()`` is one line for the user."""


class RecipientsRefused(SendError):
    """The server refused some or all recipients; the message did not reach those."""

    def __init__(self, refused: Sequence[tuple[str, int, str]], accepted: Sequence[str]) -> None:
        self.refused = tuple(refused)
        self.accepted = tuple(accepted)
        reasons = "; ".join(f"{addr} ({f'{code} {text}'.strip()})"
                            for addr, code, text in self.refused)
        prefix = f"sent to {', '.join(self.accepted)} only; " if self.accepted else ""
        super().__init__(f"{prefix}refused: {reasons}")




def smtp_tls(smtp: SmtpConfig) -> TlsPolicy:
    """The ``[smtp]`` TLS policy (``allow_cleartext`` is decided below, with loopback)."""
    return TlsPolicy(smtp.ca_file, smtp.allow_cleartext)


def tls_options(smtp: SmtpConfig, host: str) -> IOpenSSLClientConnectionCreator:
    """Verifying client TLS options for ``host`` (mail.tls); SendError if ``ca_file`` is
    unusable."""
    try:
        return smtp_tls(smtp).options(host)
    except MailError as e:
        raise SendError(str(e)) from None


def smtp_endpoint(reactor: ConnectReactor, smtp: SmtpConfig) -> IStreamClientEndpoint:
    """The endpoint of ``smtp.address``: plain TCP for ``tcp:``, verified TLS for ``tls:``."""
    try:
        return server_endpoint(reactor, _address(smtp), smtp_tls(smtp), smtp.timeout)
    except MailError as e:
        raise SendError(str(e)) from None


def _address(smtp: SmtpConfig) -> ServerAddress:
    if smtp.address is None:
        raise SendError("no SMTP server is configured")
    return smtp.address


def _reply(code: int, text: bytes | str) -> str:
    """A server reply for the user: ``550 5.1.1 user unknown``."""
    return f"{code} {clean_text(text, 160)}".strip() if code > 0 else clean_text(text, 160)


def _refused_and_accepted(addresses: Sequence[tuple[bytes, int, bytes]]
                          ) -> tuple[list[tuple[str, int, str]], list[str]]:
    refused = [(addr.decode("ascii", "replace"), code, clean_text(text, 160))
               for addr, code, text in addresses if code not in SUCCESS]
    accepted = [addr.decode("ascii", "replace") for addr, code, _ in addresses if code in SUCCESS]
    return refused, accepted


def _delivery_error(e: tsmtp.SMTPDeliveryError, where: str, sender: str) -> SendError:
    """MAIL FROM refused (no RCPT tried), every RCPT refused, or DATA refused."""
    refused, accepted = _refused_and_accepted(cast(Sequence[Any], e.addresses or ()))
    if not refused and not accepted:
        return SendError(f"{where} refused the sender {sender}: {_reply(e.code, e.resp)}")
    if not accepted:
        return RecipientsRefused(refused, ())
    return SendError(f"{where} refused the message: {_reply(e.code, e.resp)}")


_CLIENT_ERRORS: tuple[tuple[type[tsmtp.SMTPClientError], str], ...] = (
    (tsmtp.TLSRequiredError, "{where} offers no STARTTLS: refusing to send the password in "
                             "clear (use a tls: server, or set allow_cleartext = true in [smtp])"),
    (tsmtp.TLSError, "{where} refused STARTTLS: {reply}"),
    (tsmtp.AUTHRequiredError, "{where} offers no login method this client supports "
                              "(AUTH PLAIN, LOGIN or CRAM-MD5)"),
    (tsmtp.EHLORequiredError, "{where} does not speak ESMTP, which logging in needs"),
    (tsmtp.AUTHDeclinedError, "{where}: login refused for user {user}: {reply}"),
    (tsmtp.AuthenticationError, "{where}: login refused for user {user}: {reply}"),
    (tsmtp.SMTPConnectError, "{where} refused the session: {reply}"),
    (tsmtp.SMTPProtocolError, "{where} sent something that is not an SMTP reply"),
)


def _smtp_error(e: tsmtp.SMTPClientError, where: str, user: str, sender: str) -> SendError:
    """Twisted's SMTP client error -> one line built from the reply, never from str(e)."""
    if isinstance(e, tsmtp.SMTPDeliveryError):
        return _delivery_error(e, where, sender)
    template = next((text for kind, text in _CLIENT_ERRORS if isinstance(e, kind)),
                    "{where} failed: {reply}")
    return SendError(template.format(where=where, user=user, reply=_reply(e.code, e.resp)))


class _Submission(tsmtp.ESMTPSender):
    """One message over one connection; ends the attempt on loss, silence or nonsense."""

    debug = False  # the session log would hold the AUTH exchange: the password, base64
    MAX_LENGTH = MAX_REPLY_LINE
    factory: _SubmissionFactory

    def hang_up(self) -> None:
        transport: Any = self.transport  # a TCP or TLS transport: it can abort
        if transport is not None:
            transport.abortConnection()

    def give_up(self, error: SendError) -> None:
        self.factory.fail(error)
        self.hang_up()

    def lineReceived(self, line: bytes) -> Any:
        if len(self.resp) >= MAX_REPLY_LINES:
            self.give_up(SendError(f"{self.factory.where} sent a reply of over "
                                   f"{MAX_REPLY_LINES} lines"))
            return None
        return super().lineReceived(line)  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        self.give_up(SendError(f"{self.factory.where} sent a reply line over "
                               f"{MAX_REPLY_LINE} bytes"))

    def timeoutConnection(self) -> None:
        """Silence: fail at once and drop the connection (Twisted would QUIT and wait)."""
        self.give_up(SendError(f"{self.factory.where}: timed out after "
                               f"{self.factory.timeout:g} s waiting for the server"))

    def esmtpTLSFailed(self, code: int = -1, resp: bytes | None = None) -> None:
        """STARTTLS refused: keep the server's reason (Twisted puts its own text there)."""
        self.sendError(tsmtp.TLSError(code, resp or b"STARTTLS failed", self.log.str()))

    def sendError(self, exc: Exception) -> None:
        if self.factory.sendFinished:  # a late error after the outcome: just hang up
            self.hang_up()
            return
        super().sendError(exc)  # type: ignore[no-untyped-call]

    def smtpState_msgSent(self, code: int, resp: bytes) -> None:
        """Report the outcome and QUIT: one message per connection, no RSET round."""
        if self._from is not None:
            self.sentMail(code, resp, len(self.successAddresses),  # type: ignore[no-untyped-call]
                          self.toAddressesResult, self.log)
            self._from = None
        self._disconnectFromServer()  # type: ignore[no-untyped-call]

    def transformChunk(self, chunk: bytes) -> bytes:
        """The data is already CRLF and dot-stuffed (Twisted's own stuffing misses a dot at
        the start of a 16 KiB chunk)."""
        self.resetTimeout()  # type: ignore[no-untyped-call]
        return chunk

    def authenticate(self, code: int, resp: bytes, items: dict[bytes, Any]) -> None:
        """Prefer the mechanisms in mail.tls's order (as IMAP does); say so when the password goes
        in clear."""
        order = mechanism_order(self._tlsMode)
        self.authenticators.sort(key=lambda a: order.index(a.getName().upper()))
        if not self._tlsMode and self.secret and items.get(b"AUTH"):
            log.warn("{where}: logging in without TLS (loopback or allow_cleartext)",
                     where=self.factory.where, event="cleartext_submission")
        super().authenticate(code, resp, items)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        where = self.factory.where  # fail() does nothing once there is an outcome
        self.factory.fail(SendError(f"{where} closed the connection" if reason.check(
            ConnectionDone) else f"{where}: {describe_failure(reason)}"))


class _SubmissionFactory(tsmtp.ESMTPSenderFactory):
    """ESMTPSenderFactory with the policy of ``[smtp]``, an injected clock, and one outcome."""

    protocol = _Submission
    noisy = False  # no "Starting factory"/"Stopping factory" lines at every message

    def __init__(self, clock: IReactorTime, smtp: SmtpConfig, *, user: str, password: Secret,
                 sender: str, recipients: Sequence[str], data: bytes,
                 result: Deferred[Any]) -> None:
        address = _address(smtp)
        loopback = is_loopback(address.host)
        starttls = address.scheme == "tcp"
        super().__init__(  # type: ignore[no-untyped-call]
            user.encode("utf-8"), password.reveal(), sender, list(recipients), BytesIO(data),
            result, retries=0, timeout=smtp.timeout,
            contextFactory=tls_options(smtp, address.host) if starttls else None,
            requireAuthentication=not loopback,
            requireTransportSecurity=starttls and not (loopback or smtp.allow_cleartext))
        domain = smtp.from_domain
        self.domain = domain.encode("ascii" if domain.isascii() else "idna")
        self.where = f"SMTP server {address}"
        self._clock = clock
        self._protocol: _Submission | None = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol: _Submission = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        # the idle timeout runs on our clock, not the global reactor
        protocol.callLater = self._clock.callLater  # type: ignore[method-assign,assignment]
        self._protocol = protocol
        return protocol

    def fail(self, error: SendError) -> None:
        """End the attempt with ``error`` unless it already has an outcome."""
        if not self.sendFinished:
            self.sendFinished = True
            self.result.errback(error)

    def abort(self) -> None:
        """Cancelled: hang up without an outcome of our own."""
        self.sendFinished = True
        if self._protocol is not None:
            self._protocol.hang_up()


def _line_ends(message: bytes, eol: bytes) -> bytes:
    """The message with every line end (CRLF, LF or a bare CR) made ``eol``, and one at its
    end.  Never a list of lines (an object per line: many times the message, built in the
    reactor's thread): whole-buffer C operations, none at all for a message already so."""
    crlf = message.count(b"\r\n")
    if eol == b"\r\n" and message.count(b"\r") == crlf == message.count(b"\n"):
        data = message  # as build_message makes it: shared, not copied
    else:
        data = message.replace(b"\r\n", b"\n") if crlf else message
        data = data.replace(b"\r", b"\n")
        if eol != b"\n":
            data = data.replace(b"\n", eol)
    return data if not data or data.endswith(eol) else data + eol


def smtp_data(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends throughout, leading dots doubled, CRLF at the end."""
    data = _line_ends(message, b"\r\n").replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


async def submit_smtp(endpoint: IStreamClientEndpoint, clock: IReactorTime, smtp: SmtpConfig, *,
                      user: str, password: Secret, sender: str, recipients: Sequence[str],
                      message: bytes) -> None:
    """Send over ``endpoint`` (made by ``smtp_endpoint``); see ``submit``."""
    factory: _SubmissionFactory | None = None

    def cancel(_: Deferred[Any]) -> None:
        if factory is not None:
            factory.abort()

    result: Deferred[Any] = Deferred(cancel)
    factory = _SubmissionFactory(clock, smtp, user=user, password=password, sender=sender,
                                 recipients=recipients, data=smtp_data(message), result=result)
    connecting = endpoint.connect(factory)
    connecting.addTimeout(smtp.timeout, clock)
    try:
        await connecting
    except CancelledError:
        raise
    except DeferredTimeout:
        raise SendError(f"cannot reach {factory.where}: timed out after {smtp.timeout:g} s"
                        ) from None
    except Exception:
        raise SendError(f"cannot reach {factory.where}: {describe_failure(Failure())}") from None
    try:
        _, addresses = await result
    except tsmtp.SMTPClientError as e:
        raise _smtp_error(e, factory.where, user, sender) from None
    refused, accepted = _refused_and_accepted(addresses)
    if refused:
        raise RecipientsRefused(refused, accepted)


async def submit_sendmail(reactor: ProcessReactor, smtp: SmtpConfig, *, sender: str,
                          recipients: Sequence[str], message: bytes) -> None:
    """Run ``smtp.sendmail -i -f SENDER -- RECIPIENTS`` with the message (LF ends) on stdin."""
    program = smtp.sendmail or "sendmail"
    argv = [program, "-i", "-f", sender, "--", *recipients]
    try:
        result = await run_process(reactor, argv, scrubbed_environment(os.environ), smtp.timeout,
                                   stdin=_line_ends(message, b"\n"),
                                   max_output=0, max_stderr=MAX_STDERR)
    except ProcessStartError as e:
        raise SendError(str(e)) from None
    if result.ok:
        return
    said = "" if result.timed_out else next(
        (f": {line}" for line in map(clean_text, result.stderr.splitlines()) if line), "")
    raise SendError(f"{program} {result.describe()}{said}")


def _check_envelope(sender: str, recipients: Sequence[str], message: bytes,
                    smtp: SmtpConfig) -> None:
    problem = address_problem(sender)
    if problem is not None:
        raise SendError(f"cannot send as '{clean_text(sender, 80)}': {problem}")
    if not recipients:
        raise SendError("no recipient given")
    for recipient in recipients:
        problem = address_problem(recipient)
        if problem is not None:
            raise SendError(f"bad recipient '{clean_text(recipient, 80)}': {problem}")
    if not message:
        raise SendError("the message is empty")
    if len(message) > smtp.max_message_size:
        raise SendError(f"message too large: {len(message)} bytes "
                        f"(the limit is {smtp.max_message_size})")


# What sending needs of the reactor: connecting (SMTP) or running sendmail.
SubmitReactor = MailReactor


async def submit(reactor: SubmitReactor, smtp: SmtpConfig, *, user: str, password: Secret,
                 sender: str, recipients: Sequence[str], message: bytes) -> None:
    """Hand ``message`` to the SMTP server or sendmail; return once every recipient has it.

    Raises SendError (connection refused, timeout, TLS verification failed, login refused,
    message too large, server closed) or RecipientsRefused; never showing the password.
    """
    _check_envelope(sender, recipients, message, smtp)
    if smtp.sendmail is not None:
        await submit_sendmail(reactor, smtp, sender=sender, recipients=recipients,
                              message=message)
        return
    await submit_smtp(smtp_endpoint(reactor, smtp), IReactorTime(reactor), smtp, user=user,
                      password=password, sender=sender, recipients=recipients, message=message)
