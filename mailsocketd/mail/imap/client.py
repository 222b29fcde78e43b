"""ImapClient: Twisted's IMAP4Client with IDLE, bounded memory, timeouts and a TLS policy.

What it adds to ``twisted.mail.imap4.IMAP4Client``:

* IDLE (RFC 2177): ``idle()`` starts it, ``done()`` ends it; while it runs, untagged EXISTS /
  EXPUNGE / FETCH lines call ``on_change`` instead of piling up in memory.
* Limits: a response line over MAX_LENGTH, a literal over MAX_LITERAL, a response over
  MAX_RESPONSE or more than MAX_UNTAGGED untagged lines for one command drop the connection with
  a logged ProtocolViolation.  Nothing the server sends can make memory grow without bound.
* Timeouts without TimeoutMixin (Twisted #6463): every step runs ``within`` a deadline; when it
  passes the connection is aborted and every pending command fails with CheckTimeout.
* ``encrypted`` and ``peer_certificate()`` for the TLS policy of ``login.py``, which also
  holds the authentication (AUTHENTICATE PLAIN/LOGIN/CRAM-MD5, or LOGIN).
* ``commands_sent`` counts the commands by name, so tests can prove a check is one STATUS.
* ``[ALERT]`` (RFC 3501 7.1: the text MUST be shown to the user), in any OK/NO/BAD/BYE,
  tagged or not, goes to ``on_alert`` as one cleaned line; until one is set the last few wait
  in ``alerts`` (a login's alert comes before its owner is ready).

This reaches into IMAP4Client's and Command's internals; every such name is declared, with why,
in ``mailsocketd/twisted_private.py``, which the canary test checks on the installed Twisted.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from mailsocketd.mail.errors import (
    CheckTimeout,
    ProtocolViolation,
    ServerClosed,
    ServerRefused,
    clean_text,
)
from mailsocketd.mail.imap.wire import (
    MAX_UID,
    STATUS_ARGS,
    STATUS_ITEMS,
    MailboxCounts,
    command,
    mailbox_arg,
    status_items,
)
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ReactorClock

# MAX_UID, MailboxCounts, command and mailbox_arg live in wire.py; they are exported from here
# too, where the rest of the package has always found them.
__all__ = ["ALERT_LIMIT", "LOGOUT_TIMEOUT", "MAX_UID", "ImapClient", "MailboxCounts", "command",
           "mailbox_arg"]

T = TypeVar("T")
LOGOUT_TIMEOUT = 2.0  # seconds a LOGOUT may take before the connection is simply closed
MAX_ALERTS_KEPT = 5  # [ALERT] texts kept until on_alert is set
ALERT_LIMIT = 300  # characters of one [ALERT] text
_ALERT = re.compile(rb"(?:OK|NO|BAD|BYE|PREAUTH) \[ALERT\] ?", re.IGNORECASE)
CHANGE_KINDS = {b"EXISTS": "exists", b"EXPUNGE": "expunge", b"FETCH": "flags",
                b"RECENT": "recent"}


class ImapClient(imap4.IMAP4Client):
    """An IMAP4 client for watching mailboxes: IDLE, STATUS, limits, timeouts (see module doc)."""

    MAX_LENGTH = 64 * 1024
    MAX_LITERAL = 64 * 1024
    MAX_RESPONSE = 256 * 1024
    MAX_UNTAGGED = 1000
    log = Logger()

    def __init__(self, clock: ReactorClock, command_timeout: float = 30.0,
                 label: str = "imap") -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.clock = clock
        self.command_timeout = command_timeout
        self.label = label
        self.greeted: Deferred[None] = Deferred()
        self.idle_started: Deferred[None] | None = None
        self.on_change: Callable[[str], None] | None = None
        self.on_connected: Callable[[ImapClient], None] | None = None
        self.on_alert: Callable[[str], None] | None = None
        self.alerts: deque[str] = deque(maxlen=MAX_ALERTS_KEPT)
        self.lost_callbacks: list[Callable[[Failure], None]] = []
        self.commands_sent: Counter[str] = Counter()
        self.lines_received = 0
        self.connected_ok = False
        self.deadline: float | None = None
        self.bye: str | None = None
        self._idle_command: imap4.Command | None = None
        self._done_sent = False
        self._drop_reason: Exception | None = None
        self.lost_reason: Failure | None = None
        self._waiting: dict[Deferred[Any], Deferred[Any]] = {}
        self._response_size = 0
        self._literal_left = 0

    # -- connection life ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected_ok = True
        super().connectionMade()  # type: ignore[no-untyped-call]
        if self.on_connected is not None:
            self.on_connected(self)

    def serverGreeting(self, caps: Any) -> None:
        if not self.greeted.called:
            self.greeted.callback(None)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Fail everything pending with the most telling reason we have."""
        self.connected_ok = False
        if self._drop_reason is not None:
            reason = Failure(self._drop_reason)
        elif self.bye is not None and reason.check(ConnectionDone, ConnectionLost):
            reason = Failure(ServerClosed(f"the server closed the connection: {self.bye}"))
        self.lost_reason = reason
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        for pending in (self.greeted, self.idle_started):
            if pending is not None and not pending.called:
                pending.errback(reason)
        waiting, self._waiting = self._waiting, {}
        for outer, inner in waiting.items():
            if not outer.called:
                outer.errback(reason)
            inner.cancel()
        callbacks, self.lost_callbacks = self.lost_callbacks, []
        for callback in callbacks:
            callback(reason)

    def drop(self, error: Exception) -> None:
        """Abort the connection; pending commands fail with ``error``."""
        if self._drop_reason is None:
            self._drop_reason = error
            if isinstance(error, ProtocolViolation):
                self.log.error("{label}: dropping the connection: {error}",
                               label=self.label, error=str(error), event="protocol_error")
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    @property
    def dropping(self) -> bool:
        """Whether the connection is gone or being dropped: no further reply will come."""
        return self._drop_reason is not None or not self.connected_ok

    def send_line(self, line: bytes) -> None:
        self.sendLine(line)  # type: ignore[no-untyped-call]

    @property
    def encrypted(self) -> bool:
        """Is the connection TLS (implicit, or after STARTTLS)?"""
        return bool(self.startedTLS) or ISSLTransport.providedBy(self.transport)

    def peer_certificate(self) -> Any:
        """The server's certificate (pyOpenSSL X509) when the connection is TLS, else None."""
        get = getattr(self.transport, "getPeerCertificate", None)
        return get() if get is not None and self.encrypted else None

    # -- limits and dispatch -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> Any:
        if self._drop_reason is not None:
            return None
        return super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        if self._drop_reason is not None:
            return
        self.lines_received += 1
        self._response_size += len(line) + 2
        if self._response_size > self.MAX_RESPONSE:
            self.drop(ProtocolViolation(f"response larger than {self.MAX_RESPONSE} bytes"))
            return
        try:
            super().lineReceived(line)  # type: ignore[no-untyped-call]
        except Exception as e:  # a bad literal announcement, say
            self.drop(ProtocolViolation(f"malformed response line: {type(e).__name__}"))
            return
        if self._parts is None and not self._collecting():
            self._response_size = 0  # MAX_RESPONSE bounds all that one command collects

    def _collecting(self) -> bool:
        """Whether a command (other than IDLE) is waiting for its reply, keeping lines."""
        cmd = self.tags.get(self.waiting) if self.waiting else None
        return cmd is not None and cmd is not self._idle_command

    def lineLengthExceeded(self, line: bytes) -> None:
        self.drop(ProtocolViolation(f"response line longer than {self.MAX_LENGTH} bytes"))

    def _setupForLiteral(self, rest: bytes, octets: int) -> None:
        if octets > self.MAX_LITERAL or self._response_size + octets > self.MAX_RESPONSE:
            self.drop(ProtocolViolation(
                f"server announced a {octets}-byte literal (limit {self.MAX_LITERAL})"))
            return
        self._response_size += octets
        self._literal_left = octets
        super()._setupForLiteral(rest, octets)  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> Any:
        """A literal's bytes.  Twisted strips the CRLF that follows a literal when it arrives
        in the same read (``passon.lstrip``), so a response ending in a literal (a LIST name
        sent as one) swallowed the next response line.  Give it the literal alone; the rest
        goes back to line mode, untouched."""
        left = self._literal_left
        if len(data) <= left:
            self._literal_left -= len(data)
            return super().rawDataReceived(data)  # type: ignore[no-untyped-call]
        self._literal_left = 0
        super().rawDataReceived(data[:left])  # type: ignore[no-untyped-call]
        return self.dataReceived(data[left:])  # queued: LineReceiver is mid-dataReceived

    def dispatchCommand(self, tag: bytes, rest: bytes) -> None:
        """Like IMAP4Client's, but a malformed response is a logged ProtocolViolation."""
        if self._drop_reason is not None:
            return
        if tag != b"+" and rest[:1] in b"OoNnBbPp":
            self._alert(rest)
        try:
            if self.state is None and rest[:4].upper() == b"BYE ":
                self.bye = clean_text(rest[4:])
                self.drop(ServerRefused("connection", "BYE", rest[4:].decode("utf-8", "replace")))
            elif self.state is None:
                self.response_UNAUTH(tag, rest)  # type: ignore[no-untyped-call]
            else:
                self._defaultHandler(tag, rest)
        except ProtocolViolation as e:
            self.drop(e)
        except Exception as e:  # any parse failure means the same: drop
            self.drop(ProtocolViolation(
                f"malformed response {clean_text(tag + b' ' + rest, 80)!r}: "
                f"{type(e).__name__}"))

    def _alert(self, rest: bytes) -> None:
        """A response with an ``[ALERT]`` code: its text to ``on_alert`` (or ``alerts``)."""
        found = _ALERT.match(rest)
        if found is not None:
            self._tell(clean_text(rest[found.end():], ALERT_LIMIT) or "(no text)")

    def _tell(self, alert: str) -> None:
        if self.on_alert is None:
            self.alerts.append(alert)
            return
        try:
            self.on_alert(alert)
        except Exception:
            self.log.failure("{label}: on_alert failed", label=self.label)

    def listen_for_alerts(self, on_alert: Callable[[str], None]) -> None:
        """From now on ``on_alert`` hears every alert; it hears those kept so far at once."""
        self.on_alert = on_alert
        kept, self.alerts = list(self.alerts), deque(maxlen=MAX_ALERTS_KEPT)
        for alert in kept:
            self._tell(alert)

    def _defaultHandler(self, tag: bytes, rest: bytes) -> None:
        if tag == b"*":
            self._untagged(rest)
        elif tag == b"+":
            cmd = self.tags.get(self.waiting) if self.waiting else None
            if cmd is None:
                raise ProtocolViolation("continuation request with no command waiting")
            cmd.continuation(rest)
        else:
            self._tagged(tag, rest)

    def _untagged(self, rest: bytes) -> None:
        words = rest.split(b" ", 2)
        if len(words) >= 2 and words[0].isdigit() and words[1].upper() in CHANGE_KINDS:
            if self.on_change is not None:
                self.on_change(CHANGE_KINDS[words[1].upper()])
            return
        if words[0].upper() == b"BYE":
            self.bye = clean_text(rest[4:])
        cmd = self.tags.get(self.waiting) if self.waiting else None
        if cmd is None or cmd is self._idle_command:
            return  # keep-alive chatter ("* OK Still here") or notices: nothing to keep
        if len(cmd.lines) >= self.MAX_UNTAGGED:
            raise ProtocolViolation(f"more than {self.MAX_UNTAGGED} untagged responses "
                                    f"to one {cmd.command.decode('ascii', 'replace')}")
        cmd.lines.append(rest)

    def _tagged(self, tag: bytes, rest: bytes) -> None:
        cmd = self.tags.get(tag)
        if cmd is None:
            raise ProtocolViolation(f"response for unknown tag {clean_text(tag, 20)!r}")
        status, _, text = rest.partition(b" ")
        refusal = None
        if status.upper() != b"OK":
            refusal = ServerRefused(cmd.command.decode("ascii", "replace"),
                                    status.decode("ascii", "replace"),
                                    text.decode("utf-8", "replace"))
        is_idle = self._idle_command is not None and cmd is self._idle_command
        if is_idle:
            self._idle_command = None
            self._idle_ended(refusal)
        if cmd.defer is not None:
            if refusal is None:
                cmd.finish(rest, self._extraInfo)
            else:
                cmd.defer.errback(refusal)
        del self.tags[tag]
        self.waiting = None
        self._flushQueue()  # type: ignore[no-untyped-call]

    def _extraInfo(self, lines: Any) -> None:
        """Untagged data nobody asked for (FLAGS after EXAMINE, say): counts come from STATUS,
        so it is dropped rather than logged as IMAP4Client would."""

    # -- commands ----------------------------------------------------------------------------

    def sendCommand(self, cmd: imap4.Command) -> Deferred[Any]:
        self.commands_sent[cmd.command.decode("ascii", "replace")] += 1
        d: Deferred[Any] = super().sendCommand(cmd)  # type: ignore[no-untyped-call]
        return d

    def within(self, d: Deferred[T], step: str, timeout: float | None = None) -> Deferred[T]:
        """``d``'s result, unless the timeout passes first (the connection is then aborted) or
        the connection is lost (``d`` is then cancelled: a password command is killed).

        With a ``deadline`` set (the check command's overall timeout) no step outlives it.
        """
        seconds = self.command_timeout if timeout is None else timeout
        error = CheckTimeout(step, seconds)
        if self.deadline is not None:
            left = max(self.deadline - self.clock.seconds(), 0.0)
            if left < seconds:
                seconds, error = left, CheckTimeout(step, self.command_timeout)
        outer: Deferred[T] = Deferred()
        if self.lost_reason is not None:
            d.cancel()
            d.addErrback(lambda _: None)
            outer.errback(self.lost_reason)
            return outer
        timer = self.clock.callLater(seconds, self.drop, error)
        self._waiting[outer] = d

        def done(result: Any) -> None:
            if timer.active():
                timer.cancel()
            self._waiting.pop(outer, None)
            if not outer.called:
                outer.callback(result)

        d.addBoth(done)
        return outer

    def run(self, cmd: imap4.Command, step: str | None = None) -> Deferred[Any]:
        """Send ``cmd`` and wait for its tagged reply, within the command timeout."""
        name = cmd.command.decode("ascii", "replace")
        return self.within(self.sendCommand(cmd), step or f"the reply to {name}")

    def wait_for_greeting(self) -> Deferred[None]:
        return self.within(self.greeted, "the server greeting")

    def capabilities(self, cached: bool = False) -> Deferred[dict[bytes, Any]]:
        """The capabilities: from the greeting if ``cached`` and it had them, else CAPABILITY.

        They are asked again after STARTTLS and after login, where the list may differ.
        """
        d: Deferred[dict[bytes, Any]] = self.getCapabilities(useCache=int(cached))  # type: ignore[no-untyped-call]
        return self.within(d, "the reply to CAPABILITY")

    def _startedTLS(self, result: Any, context: Any) -> Any:
        # Lines that came with the STARTTLS reply were sent in clear, before the handshake: an
        # attacker on the path could have injected them (RFC 3501 6.2.1).  Refuse them.
        if self._buffer:
            error = ProtocolViolation("the server sent data after its STARTTLS reply, "
                                      "before TLS started")
            self.drop(error)
            raise error
        return super()._startedTLS(result, context)  # type: ignore[no-untyped-call]

    def start_tls(self, context_factory: Any) -> Deferred[dict[bytes, Any]]:
        """STARTTLS with a verifying context factory; fires with the capabilities over TLS."""
        d: Deferred[dict[bytes, Any]] = self.startTLS(context_factory)  # type: ignore[no-untyped-call]
        return self.within(d, "the TLS handshake after STARTTLS")

    def login_command(self, user: bytes, secret: Secret) -> Deferred[Any]:
        """The LOGIN command, for servers that offer no usable SASL mechanism."""
        args = imap4._quote(user) + b" " + imap4._quote(secret.reveal())
        return self.run(command(b"LOGIN", args), "the reply to LOGIN")

    def status_counts(self, mailbox: str) -> Deferred[MailboxCounts]:
        """One STATUS round trip: MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY."""
        args = mailbox_arg(mailbox) + b" (" + STATUS_ARGS + b")"
        answered = self.run(command(b"STATUS", args)).addCallback(status_items)
        return answered.addCallback(self._counts, mailbox)

    def _counts(self, status: dict[str, Any], mailbox: str) -> MailboxCounts:
        try:
            values = {k: int(status[k]) for k in STATUS_ITEMS}
        except (KeyError, ValueError, TypeError):
            error = ProtocolViolation(f"incomplete STATUS reply for {mailbox!r}")
            self.drop(error)
            raise error from None
        return MailboxCounts(values["MESSAGES"], values["UNSEEN"], values["RECENT"],
                             values["UIDNEXT"], values["UIDVALIDITY"])

    def examine(self, mailbox: str) -> Deferred[Any]:
        """EXAMINE (read-only select, leaves \\Recent alone) the mailbox to IDLE on."""
        return self.run(command(b"EXAMINE", mailbox_arg(mailbox)), "the reply to EXAMINE")

    def select_read_write(self, mailbox: str) -> Deferred[Any]:
        """SELECT (read-write) the mailbox: only to make a server settle its UIDVALIDITY
        (Courier writes a folder's UID database only then: ``imap/uidvalidity.py``).  It costs
        what any read-write open costs: the messages lose \\Recent for other clients."""
        return self.run(command(b"SELECT", mailbox_arg(mailbox)), "the reply to SELECT")

    def log_out(self, timeout: float) -> Deferred[Any]:
        """LOGOUT; the connection is closed when the server has answered."""
        d: Deferred[Any] = self.logout()  # type: ignore[no-untyped-call]
        return self.within(d, "the reply to LOGOUT", timeout)

    def noop_check(self) -> Deferred[Any]:
        """NOOP as a heartbeat: proves the connection still carries replies."""
        return self.run(command(b"NOOP"), "the reply to NOOP (heartbeat)")

    # -- IDLE --------------------------------------------------------------------------------

    def idle(self) -> tuple[Deferred[None], Deferred[Any]]:
        """Start IDLE: (started, finished).

        ``started`` fires when the server's ``+`` continuation arrives (fails if it refuses);
        ``finished`` when the server ends IDLE, normally after ``done()``.
        """
        started: Deferred[None] = Deferred()
        self.idle_started = started
        self._done_sent = False
        cmd = command(b"IDLE", None, self._idle_continuation)
        self._idle_command = cmd
        return started, self.sendCommand(cmd)

    def _idle_ended(self, refusal: ServerRefused | None) -> None:
        """IDLE's tagged reply came; if it never started, say so to ``idle_started``."""
        started = self.idle_started
        if started is not None and not started.called:
            if refusal is None:
                started.callback(None)
            else:
                started.errback(refusal)

    def _idle_continuation(self, rest: bytes) -> None:
        if self.idle_started is not None and not self.idle_started.called:
            self.idle_started.callback(None)

    @property
    def idling(self) -> bool:
        return self._idle_command is not None

    def done(self) -> None:
        """End IDLE (once); the Deferred from ``idle()`` fires on the server's tagged OK."""
        if self._idle_command is not None and not self._done_sent:
            self._done_sent = True
            self.send_line(b"DONE")
