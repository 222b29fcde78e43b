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
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
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
from mailsocketd.line.mail.sendinput import SendInput, UnsentMail
from mailsocketd.line.mail.throttle import MAX_DELAY, LoginThrottle, client_key, user_key
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
from mailsocketd.mail.tls import CaFileError
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import (
    MAX_NAME,
    ListedMessage,
    UserSession,
    open_user_session,
)
from mailsocketd.net import is_local

__all__ = ["MailBridge", "MailUser", "Opener", "as_user_error"]

DEFAULT_COUNT = 20
NOT_CONFIGURED = "mail is not configured on this server (no [imap] in its configuration)"
SHUTTING_DOWN = "server shutting down"
CA_FILE_BROKEN = ("cannot reach the mail server: this server's TLS settings are broken "
                  "(its ca_file; the details are in its log)")
_log = Logger()
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


def as_user_error(error: Exception) -> Exception:
    """The one place a mail-side failure becomes a line for the user: a MailError, or a
    failure the mail side can name (a timeout, a lost connection, TLS), as a CommandError with
    ``describe_failure``'s text.  Anything else is returned as it is: a bug, which the line
    server logs with its traceback."""
    if isinstance(error, CommandError):
        return error
    if isinstance(error, CaFileError):  # the server's own file: its path is for the log only
        _log.error("{error}", error=clean_text(str(error)), event="ca_file_unusable")
        return CommandError(CA_FILE_BROKEN)
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


def summary_lines(messages: Sequence[ListedMessage]) -> list[str]:
    """``list``'s line for each message (pure: run in the thread pool)."""
    return [summary_line(summarize(m.uid, m.header, m.flags, m.size, m.arrived))
            for m in messages]


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
        self.unsent = UnsentMail(smtp.max_unsent_per_user if smtp else 0,
                                 smtp.max_unsent_total if smtp else 0)
        self.throttle = LoginThrottle(self.clock, line.login_failures, line.login_lockout)
        self.user_throttle = LoginThrottle(self.clock, line.login_user_failures,
                                           line.login_user_lockout)
        self._logins_under_way: dict[str, int] = {}  # by user_key: sessions being opened
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
            Command(name="send", handler=self.send_message, needs_login=True, reads_input=True,
                    args=(Arg("to", kind="rest", optional=True, shown="TO[,TO...]",
                              about="the addresses, separated by commas or spaces (or give "
                              "them in To:/Cc:/Bcc: lines)"),),
                    summary="write and send a message, end with '.'"),
            Command(name="watch", handler=self.watch_mailbox,
                    args=(Arg("switch", choices=("on", "off")), mailbox),
                    summary="push '* new mail' lines", needs_login=True),
        ]
        return [replace(command, handler=translated(command.handler))
                if inspect.iscoroutinefunction(command.handler) else command
                for command in table]

    # -- state -------------------------------------------------------------------------

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

    def _live_users(self) -> list[MailUser]:
        return [s.user for s in self.sessions
                if isinstance(s.user, MailUser) and s.user.imap.alive]

    def status_lines(self, viewer: str = "local") -> list[str]:
        """The mail sessions' numbers (the same for every viewer: no names, no addresses)."""
        users = self._live_users()
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
        user = session.user
        if isinstance(user, MailUser) and not user.imap.alive:
            session.user = None  # lost (and pushed): a new login replaces it
        elif user is not None:
            return f"already logged in as {printable(user.name)}; 'logout' first"
        return None

    def _throttled(self, client: str, name: str) -> str | None:
        """Why the failures and attempts under way of this client or user name refuse one
        more; None when they do not, and then the attempt is reserved in both throttles."""
        wait = self.throttle.locked_for(client)
        if wait > 0:
            return (f"too many failed logins from your address; try again in "
                    f"{int(wait) + 1} s")
        if not self.throttle.reserve(client):
            return ("too many logins from your address are waiting for the mail server; "
                    "try again when they are answered")
        if self.line.login_user_failures == 0:
            return None
        wait = self.user_throttle.locked_for(name)
        if wait > 0:
            self.throttle.release(client)
            return f"too many failed logins for this user name; try again in {int(wait) + 1} s"
        if not self.user_throttle.reserve(name):
            self.throttle.release(client)
            return ("too many logins for this user name are waiting for the mail server; "
                    "try again when they are answered")
        return None

    def _session_cap(self, name: str) -> str | None:
        """Why one more IMAP session (for the user name key ``name``) is refused, if it is:
        the sessions logged in and being opened count, per user and in total."""
        users = self._live_users()
        under_way = self._logins_under_way
        if len(users) + sum(under_way.values()) >= self.line.mail_sessions:
            return (f"too many mail sessions on this server ({self.line.mail_sessions} at "
                    "most); try again later")
        mine = sum(1 for u in users if user_key(u.name) == name) + under_way.get(name, 0)
        if mine >= self.line.mail_sessions_per_user:
            return (f"too many mail sessions for this user ({self.line.mail_sessions_per_user} "
                    "at most); log out of another first")
        return None

    async def log_in(self, session: Session, user: str, password: str) -> Reply:
        """``login USER PASSWORD``: the password is the rest of the line, as typed."""
        refusal = self._login_refusal(session)
        client, name = client_key(session.host, session.uid), user_key(user)
        refusal = refusal or self._session_cap(name) or self._throttled(client, name)
        if refusal is not None:
            raise CommandError(refusal)
        secret = Secret(password.encode("utf-8"))
        self._logins_under_way[name] = self._logins_under_way.get(name, 0) + 1
        try:
            imap = await self.opener(self._imap(), user, secret,
                                     None if session.host == "unix" else session.host)
        except AuthFailed as e:
            await self._failed_login(session, client, name, user, str(e))
            raise CommandError("login failed: wrong user name or password") from None
        except BaseException:
            self._release(client, name)
            raise
        finally:
            left = self._logins_under_way.pop(name) - 1
            if left:
                self._logins_under_way[name] = left
        self._release(client, name)
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

    def _release(self, client: str, name: str) -> None:
        """A reserved attempt ended without a failed login (it succeeded, or broke)."""
        self.throttle.release(client)
        if self.line.login_user_failures:
            self.user_throttle.release(name)

    async def _failed_login(self, session: Session, client: str, name: str, user: str,
                            reason: str) -> None:
        delay = self.throttle.failed(client, reserved=True)
        if self.line.login_user_failures:
            delay = max(delay, self.user_throttle.failed(name, reserved=True))
        self.log.warn("{peer}: login failed for {user}: {reason}", peer=session.peer,
                      user=printable(user), reason=clean_text(reason), event="login_failed")
        locked = self.throttle.locked_for(client)
        if locked > 0:
            self.log.warn("{host}: {count} failed logins; refusing logins from it for "
                          "{seconds:.0f} s", host=client, count=self.throttle.limit,
                          seconds=locked, event="login_lockout")
        if self.line.login_user_failures and self.user_throttle.locked_for(name) > 0:
            self.log.warn("user name {user}: {count} failed logins; refusing it for "
                          "{seconds:.0f} s", user=printable(name),
                          count=self.user_throttle.limit,
                          seconds=self.user_throttle.locked_for(name),
                          event="login_user_lockout")
        await deferLater(self.clock, min(delay, MAX_DELAY), lambda: None)

    def _lost(self, session: Session, reason: str) -> None:
        """The IMAP session died under a logged-in user: say so in a pushed ``*`` line (it may
        come between a command and its reply); the user stays on the session, dead, so the
        next mail command answers ``error: the mail session was lost ...``."""
        user = session.user
        if not isinstance(user, MailUser):
            return
        self.log.info("{peer}: mail session of {user} lost: {reason}", peer=session.peer,
                      user=printable(user.name), reason=reason, event="mail_session_lost")
        session.push(f"* mail session lost ({clean_text(reason)}); login again")

    def log_out(self, session: Session) -> Reply:
        self._end(session, "logout")
        return Reply("ok logged out")

    # -- reading -----------------------------------------------------------------------

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
                f"({outcome.method})")
        if outcome.missing:
            text += "; no such UID: " + " ".join(map(str, outcome.missing))
        return Reply(text)

    # -- sending and watching ----------------------------------------------------------

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
        return Reply("ok ready: optional Subject:/Cc:/Bcc: lines, a blank line, the text; "
                     "end with a line holding only '.'", reader=reader)

    def _offload(self, work: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """``work`` (composing a message) in the reactor's thread pool."""
        return deferToThreadPool(IReactorFromThreads(self.reactor),
                                 self.reactor.getThreadPool(), work, *args)

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
