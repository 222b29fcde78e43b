"""The mail bridge's state and what every mail command reads of it: the logged-in user
(``MailUser``), the settings, the throttles, the open sessions.

The handlers live in one module per concern (login, reading, sending, watching), each a mixin
of ``MailBridge``; they share this one base so they share one state, typed for each of them,
and reach each other's helpers only through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.sendinput import UnsentMail
from mailsocketd.line.mail.throttle import LoginThrottle
from mailsocketd.line.replies import CommandError, printable
from mailsocketd.line.session import Session
from mailsocketd.mail.errors import clean_text
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import MAX_NAME, UserSession, open_user_session

__all__ = ["BridgeReactor", "BridgeState", "MailUser", "Opener", "counts_text", "shown"]

NOT_CONFIGURED = "mail is not configured on this server (no [imap] in its configuration)"
SHUTTING_DOWN = "server shutting down"
# Outcomes counted for the metrics.  login: logged in; wrong user or password; refused before
# the IMAP server was asked (throttle, caps, cleartext); anything else (server unreachable...).
LOGIN_OUTCOMES = ("ok", "failed", "refused", "error")
# send: handed to SMTP/sendmail; refused by us (size, limits, a bad message); refused or failed
# by the mail server; anything else.
SEND_OUTCOMES = ("sent", "refused", "failed", "error")
# How a login reaches the IMAP server: connect, log in, return the session (tests script it).
# The last argument is the line client's IP address, for the IMAP server (ID, RFC 2971).
Opener = Callable[[ImapConfig, str, Secret, str | None], Awaitable[UserSession]]


@dataclass(eq=False)
class MailUser:
    """A logged-in line client: who, with which password (for SMTP), over which IMAP session."""

    name: str
    password: Secret
    imap: UserSession
    mailbox: str = "INBOX"  # the mailbox of the last list/read: delete acts on it
    watching: str | None = None


def shown(mailbox: str) -> str:
    """A mailbox name as a client may see it (typed by the user or sent by the server): made
    safe by the one cleaner, like every echo (a bidi override or a C1 control, which modified
    UTF-7 can carry, becomes ``?``); never cut, IMAP names are at most MAX_NAME."""
    return printable(mailbox, limit=MAX_NAME)


def counts_text(mailbox: str, counts: MailboxCounts) -> str:
    return (f"{shown(mailbox)} messages={counts.messages} unseen={counts.unseen} "
            f"recent={counts.recent}")


class BridgeReactor(MailReactor, Protocol):
    """What the mail commands need of the reactor: the mail side's (connecting, running
    sendmail) and the thread pool that renders a message for ``read``."""

    def getThreadPool(self) -> ThreadPool: ...
    def callFromThread(self, callable: Callable[..., Any], *args: object,
                       **kwargs: object) -> None: ...


class BridgeState:
    """The state behind the mail commands.  ``sessions`` is the line server's set of open
    sessions (wired after both are built): the logged-in users are those whose ``user`` is a
    MailUser."""

    # As a descriptor the Logger takes the name of the instance's class, MailBridge, whichever
    # mixin logs: one namespace for every mail command's log lines.
    log = Logger()

    def __init__(self, reactor: BridgeReactor, line: LineConfig, imap: ImapConfig | None,
                 smtp: SmtpConfig | None, *, clock: IReactorTime | None = None,
                 opener: Opener | None = None) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else IReactorTime(reactor)
        self.line = line
        self.imap = imap
        self.smtp = smtp
        self.opener = opener or self._open
        self.unsent = UnsentMail(smtp.max_unsent_per_user if smtp else 0,
                                 smtp.max_unsent_total if smtp else 0)
        self.throttle = LoginThrottle(self.clock, line.login_failures, line.login_lockout)
        self.user_throttle = LoginThrottle(self.clock, line.login_user_failures,
                                           line.login_user_lockout)
        self._logins_under_way: dict[str, int] = {}  # by user_key: sessions being opened
        self.logins = dict.fromkeys(LOGIN_OUTCOMES, 0)  # by outcome, for the metrics
        self.sends = dict.fromkeys(SEND_OUTCOMES, 0)
        self.sessions: Collection[Session] = ()
        self._stopping = False

    def reconfigure(self, line: LineConfig, imap: ImapConfig | None,
                    smtp: SmtpConfig | None) -> None:
        """A reload: new logins use the new ``[imap]``, new sends ``[smtp]``, and the limits
        apply from now on; users logged in keep their IMAP sessions (and watches)."""
        self.line, self.imap, self.smtp = line, imap, smtp
        self.unsent.per_user = smtp.max_unsent_per_user if smtp else 0
        self.unsent.total = smtp.max_unsent_total if smtp else 0
        self.throttle.limit, self.throttle.window = line.login_failures, line.login_lockout
        self.user_throttle.limit = line.login_user_failures
        self.user_throttle.window = line.login_user_lockout

    def _open(self, imap: ImapConfig, user: str, password: Secret,
              client_ip: str | None) -> Awaitable[UserSession]:
        return open_user_session(self.reactor, imap, user, password, clock=self.clock,
                                 client_ip=client_ip)

    def _user(self, session: Session) -> MailUser:
        """The session's user with a live IMAP session; a lost one (already pushed as a
        ``* mail session lost`` line) is forgotten here and answered with ``error:``."""
        user = session.user
        if not isinstance(user, MailUser):
            raise CommandError("login first")
        if not user.imap.alive:
            session.user = None
            reason = user.imap.lost_reason
            raise CommandError("the mail session was lost" +
                               (f" ({clean_text(reason)})" if reason else "") + "; login again")
        return user

    def _imap(self) -> ImapConfig:
        if self.imap is None:
            raise CommandError(NOT_CONFIGURED)
        return self.imap

    def session_counts(self) -> tuple[int, int]:
        """(users logged in over a live IMAP session, those of them watching a mailbox)."""
        users = self._live_users()
        return len(users), sum(1 for u in users if u.watching is not None)

    def _live_users(self) -> list[MailUser]:
        return [s.user for s in self.sessions
                if isinstance(s.user, MailUser) and s.user.imap.alive]
