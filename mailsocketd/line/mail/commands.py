"""The mail bridge: the line service's mail commands (login, logout, check, mailboxes, list,
read, delete, send, watch) and its users' IMAP sessions, as one Service.

A line client logs in with its own IMAP credentials; the IMAP session (``UserSession``) lives
as long as the line connection, until ``logout``, or until the daemon stops: ``stopService``
logs every user out of IMAP, within ``line.close_grace`` seconds.  The logged-in user is the
line Session's ``user`` (a MailUser) and nothing else, so login gating, ``status`` and
``logout`` read one state.

The handlers only translate: typed arguments (split and checked by the command table) to calls,
results to replies.  Mail-side failures become UserErrors in one place, ``as_user_error``; the
line server turns those into ``error:`` lines and needs nothing of the mail side.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailsocketd.line.commands import Arg, Command
from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.sendinput import SendInput
from mailsocketd.line.mail.throttle import LoginThrottle
from mailsocketd.line.replies import CommandError, Reply, multiline, printable
from mailsocketd.line.session import Session
from mailsocketd.mail.errors import (
    AuthFailed,
    MailError,
    clean_text,
    describe_failure,
    failure_kind,
)
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.text.compose import DraftError, parse_recipients
from mailsocketd.mail.text.render import human_size, render_message
from mailsocketd.mail.text.summary import summarize, summary_line
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import UserSession, open_user_session
from mailsocketd.net import is_local

__all__ = ["MailBridge", "MailUser", "Opener", "as_user_error"]

DEFAULT_COUNT = 20
NOT_CONFIGURED = "mail is not configured on this server (no [imap] in its configuration)"
SHUTTING_DOWN = "server shutting down"
# How a login reaches the IMAP server: connect, log in, return the session (tests script it).
Opener = Callable[[ImapConfig, str, Secret], Awaitable[UserSession]]


@dataclass(eq=False)
class MailUser:
    """A logged-in line client: who, with which password (for SMTP), over which IMAP session."""

    name: str
    password: Secret
    imap: UserSession
    mailbox: str = "INBOX"  # the mailbox of the last list/read: delete acts on it
    watching: str | None = None


def counts_text(mailbox: str, counts: MailboxCounts) -> str:
    return (f"{mailbox} messages={counts.messages} unseen={counts.unseen} "
            f"recent={counts.recent}")


def as_user_error(error: Exception) -> Exception:
    """The one place a mail-side failure becomes a line for the user: a MailError, or a
    failure the mail side can name (a timeout, a lost connection, TLS), as a CommandError with
    ``describe_failure``'s text.  Anything else is returned as it is: a bug, which the line
    server logs with its traceback."""
    if isinstance(error, CommandError):
        return error
    failure = Failure(error)
    if isinstance(error, MailError) or failure_kind(failure) != "other":
        return CommandError(describe_failure(failure))
    return error


def translated(handler: Callable[..., Awaitable[Reply]]
               ) -> Callable[..., Coroutine[Any, Any, Reply]]:
    """``handler`` with its mail-side failures made UserErrors (see ``as_user_error``)."""
    @functools.wraps(handler)  # the table reads the handler's parameters through it
    async def run(session: Session, **args: Any) -> Reply:
        try:
            return await handler(session, **args)
        except Exception as e:
            user_error = as_user_error(e)
            if user_error is e:
                raise
            raise user_error from e
    return run


class BridgeReactor(MailReactor, Protocol):
    """What the mail commands need of the reactor: the mail side's (connecting, running
    sendmail) and the thread pool that renders a message for ``read``."""

    def getThreadPool(self) -> ThreadPool: ...
    def callFromThread(self, callable: Callable[..., Any], *args: object,
                       **kwargs: object) -> None: ...


class MailBridge(Service):
    """The mail commands' handlers, the login throttle, and the IMAP logout of every user on
    shutdown.  ``sessions`` is the line server's set of open sessions (wired after both are
    built): the logged-in users are those whose ``user`` is a MailUser."""

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
        self.throttle = LoginThrottle(self.clock, line.login_failures, line.login_lockout)
        self.sessions: Collection[Session] = ()
        self._stopping = False

    def commands(self) -> list[Command]:
        """The mail commands, for the command table."""
        mailbox = Arg("mailbox", kind="rest", optional=True)
        table = [
            Command(name="login", handler=self.log_in, summary="log in with your mail user "
                    "and password", args=(Arg("user"), Arg("password", kind="rest"))),
            Command(name="logout", handler=self.log_out, summary="end your mail session",
                    needs_login=True),
            Command(name="check", handler=self.check_mailbox, args=(mailbox,),
                    summary="message, unseen and recent counts", needs_login=True),
            Command(name="mailboxes", handler=self.list_mailboxes,
                    summary="your mailboxes with their counts", needs_login=True),
            Command(name="list", handler=self.list_messages,
                    args=(Arg("count", kind="number", optional=True), mailbox),
                    summary=f"the newest COUNT ({DEFAULT_COUNT}) messages", needs_login=True),
            Command(name="read", handler=self.read_message,
                    args=(Arg("uid", kind="uid"), mailbox),
                    summary="a message as text; marks it seen", needs_login=True),
            Command(name="delete", handler=self.delete_messages,
                    args=(Arg("uids", kind="uid", repeat=True, shown="UID"),),
                    summary="delete messages of the current mailbox", needs_login=True),
            Command(name="send", handler=self.send_message,
                    args=(Arg("to", kind="rest", shown="TO[,TO...]",
                              about="the addresses, separated by commas"),),
                    summary="write and send a message, end with '.'", needs_login=True),
            Command(name="watch", handler=self.watch_mailbox,
                    args=(Arg("switch", choices=("on", "off")), mailbox),
                    summary="push '* new mail' lines", needs_login=True),
        ]
        return [replace(command, handler=translated(command.handler))
                if inspect.iscoroutinefunction(command.handler) else command
                for command in table]

    # -- state -------------------------------------------------------------------------

    def _open(self, imap: ImapConfig, user: str, password: Secret) -> Awaitable[UserSession]:
        return open_user_session(self.reactor, imap, user, password, clock=self.clock)

    def _user(self, session: Session) -> MailUser:
        user = session.user
        if not isinstance(user, MailUser):
            raise CommandError("login first")
        if not user.imap.alive:
            session.user = None
            raise CommandError("the mail session was lost; login again")
        return user

    def _imap(self) -> ImapConfig:
        if self.imap is None:
            raise CommandError(NOT_CONFIGURED)
        return self.imap

    def _session_closed(self, session: Session) -> None:
        self._end(session, "connection closed")

    def _end(self, session: Session, why: str) -> Deferred[None]:
        """Forget the session's user and log it out of IMAP; fires when it is out."""
        user, session.user = session.user, None
        if not isinstance(user, MailUser):
            return succeed(None)
        return self._log_out_of_imap(user, why)

    def _log_out_of_imap(self, user: MailUser, why: str) -> Deferred[None]:
        """LOGOUT in the background; a failure is logged, never raised."""
        user.imap.on_lost = None
        done = Deferred.fromCoroutine(user.imap.logout())
        return done.addErrback(self._logout_failed, user.name, why)

    def _logout_failed(self, failure: Failure, user: str, why: str) -> None:
        self.log.info("logout of {user} ({why}) failed: {error}", user=user, why=why,
                      error=clean_text(str(failure.value)))

    def status_lines(self) -> list[str]:
        users = [s.user for s in self.sessions if isinstance(s.user, MailUser)]
        watching = sum(1 for u in users if u.watching is not None)
        return [f"mail sessions: {len(users)} logged in, {watching} watching; "
                f"failed logins on record from {self.throttle.addresses()} addresses"]

    # -- shutdown ----------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Log every user out of IMAP; fires when all are out or after ``line.close_grace``
        seconds, whichever is first (a mail server that does not answer cannot hold up the
        daemon's exit)."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        logouts = [self._end(s, SHUTTING_DOWN) for s in list(self.sessions)
                   if isinstance(s.user, MailUser)]
        if not logouts:
            return succeed(None)
        self.log.info("logging {count} mail users out", count=len(logouts),
                      event="mail_logout_all")
        return self._within_grace(logouts)

    def _within_grace(self, logouts: list[Deferred[None]]) -> Deferred[None]:
        done: Deferred[None] = Deferred()

        def finish(timed_out: bool) -> None:
            if done.called:
                return
            if timer.active():
                timer.cancel()
            if timed_out:
                left = sum(1 for d in logouts if not d.called)
                self.log.warn("{count} mail logouts unfinished after {grace:g} s; stopping "
                              "anyway", count=left, grace=self.line.close_grace,
                              event="mail_logout_timeout")
            done.callback(None)

        timer = self.clock.callLater(self.line.close_grace, finish, True)
        DeferredList(logouts).addCallback(lambda _: finish(False))
        return done

    # -- login / logout ----------------------------------------------------------------

    def _login_refusal(self, session: Session) -> str | None:
        if self.imap is None:
            return NOT_CONFIGURED
        if self._stopping:
            return SHUTTING_DOWN
        if not (session.secure or is_local(session.host) or self.line.allow_cleartext_login):
            return ("login refused: this connection is neither encrypted nor local, so the "
                    "password would cross the network in clear; use the server's TLS listener")
        if session.user is not None:
            return f"already logged in as {printable(session.user.name)}; 'logout' first"
        wait = self.throttle.locked_for(session.host)
        if wait > 0:
            return (f"too many failed logins from your address; try again in "
                    f"{int(wait) + 1} s")
        return None

    async def log_in(self, session: Session, user: str, password: str) -> Reply:
        """``login USER PASSWORD``: the password is the rest of the line, as typed."""
        refusal = self._login_refusal(session)
        if refusal is not None:
            raise CommandError(refusal)
        secret = Secret(password.encode("utf-8"))
        try:
            imap = await self.opener(self._imap(), user, secret)
        except AuthFailed as e:
            await self._failed_login(session, user, str(e))
            raise CommandError("login failed: wrong user name or password") from None
        mail_user = MailUser(user, secret, imap)
        if session.closed or self._stopping:  # the client or the daemon went meanwhile
            self._log_out_of_imap(mail_user, "connection closed during login")
            raise CommandError(SHUTTING_DOWN if self._stopping else "connection closed")
        session.user = mail_user
        if self._session_closed not in session.on_close:
            session.on_close.append(self._session_closed)
        imap.on_lost = functools.partial(self._lost, session)
        self.log.info("{peer}: {user} logged in", peer=session.peer, user=printable(user),
                      event="login")
        return Reply(f"ok logged in as {printable(user)}")

    async def _failed_login(self, session: Session, user: str, reason: str) -> None:
        delay = self.throttle.failed(session.host)
        locked = self.throttle.locked_for(session.host)
        self.log.warn("{peer}: login failed for {user}: {reason}", peer=session.peer,
                      user=printable(user), reason=clean_text(reason), event="login_failed")
        if locked > 0:
            self.log.warn("{host}: {count} failed logins; refusing logins from it for "
                          "{seconds:.0f} s", host=session.host, count=self.throttle.limit,
                          seconds=locked, event="login_lockout")
        await deferLater(self.clock, delay, lambda: None)

    def _lost(self, session: Session, reason: str) -> None:
        user = session.user
        if not isinstance(user, MailUser):
            return
        self.log.info("{peer}: mail session of {user} lost: {reason}", peer=session.peer,
                      user=printable(user.name), reason=reason, event="mail_session_lost")
        session.user = None
        session.push(f"error: mail session lost ({clean_text(reason)}); login again")

    def log_out(self, session: Session) -> Reply:
        self._end(session, "logout")
        return Reply("ok logged out")

    # -- reading -----------------------------------------------------------------------

    async def check_mailbox(self, session: Session, mailbox: str = "INBOX") -> Reply:
        counts = await self._user(session).imap.check(mailbox)
        return Reply("ok " + counts_text(mailbox, counts))

    async def list_mailboxes(self, session: Session) -> Reply:
        found = await self._user(session).imap.mailboxes()
        lines = [f"messages={c.messages} unseen={c.unseen} {name}" if c is not None
                 else f"messages=- unseen=- {name}" for name, c in found]
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
        lines = [summary_line(summarize(m.uid, m.header, m.flags, m.size))
                 for m in found.messages]
        return multiline(f"{len(lines)} of {found.exists} messages in {mailbox}, newest "
                         f"first (uidvalidity {found.uidvalidity})", lines)

    async def read_message(self, session: Session, uid: int,
                           mailbox: str | None = None) -> Reply:
        user, imap = self._user(session), self._imap()
        mailbox = mailbox or user.mailbox
        message = await user.imap.fetch_message(mailbox, uid, imap.read_limit)
        user.mailbox = mailbox
        # Rendering a big or hostile message takes up to about half a second: in the
        # reactor's thread pool other clients are served meanwhile.
        lines = await deferToThreadPool(
            IReactorFromThreads(self.reactor), self.reactor.getThreadPool(), render_message,
            message.data, text_limit=imap.text_limit, total_size=message.size)
        return multiline(f"message {uid} in {mailbox} ({human_size(message.size)})", lines)

    async def delete_messages(self, session: Session, uids: tuple[int, ...]) -> Reply:
        user = self._user(session)
        mailbox = user.mailbox
        outcome = await user.imap.delete(mailbox, sorted(set(uids)))
        n = len(outcome.deleted)
        text = f"ok deleted {n} message{'s' if n != 1 else ''} from {mailbox} ({outcome.method})"
        if outcome.missing:
            text += "; no such UID: " + " ".join(map(str, outcome.missing))
        return Reply(text)

    # -- sending and watching ----------------------------------------------------------

    def send_message(self, session: Session, to: str) -> Reply:
        user = self._user(session)
        if self.smtp is None:
            raise CommandError("sending is not configured on this server (no [smtp])")
        try:
            recipients = parse_recipients("".join(to.split()))  # spaces after commas are fine
        except DraftError as e:
            raise CommandError(str(e)) from None
        reader = SendInput(self.reactor, self.clock, self.smtp, user=user.name,
                           password=user.password, to=recipients, peer=session.peer)
        return Reply("ok ready: optional Subject:/Cc:/Bcc: lines, a blank line, the text; "
                     "end with a line holding only '.'", reader=reader)

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
        return Reply(f"ok watching {counts_text(mailbox, counts)}")

    def _new_mail(self, session: Session, mailbox: str, counts: MailboxCounts) -> None:
        session.push(f"* new mail: {mailbox} messages={counts.messages} "
                     f"unseen={counts.unseen}")

    def _watch_ended(self, session: Session, user: MailUser, reason: str) -> None:
        user.watching = None
        session.push(f"* watch ended: {clean_text(reason)}")
