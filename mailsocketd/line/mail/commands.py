"""The mail commands of the line service: login, logout, check, mailboxes, list, read, delete,
send, watch.

A line client logs in with its own IMAP credentials; the IMAP session (``UserSession``) lives
as long as the line connection, or until ``logout``.  The handlers only translate: arguments
to calls, results to replies.  Failures are raised (CommandError for the user's mistakes, the
mail side's MailError for the servers' trouble) and the LineServer turns them into ``error:``
lines in one place.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailsocketd.line.config import LineConfig
from mailsocketd.line.commands import Command
from mailsocketd.line.mail.sendinput import SendInput
from mailsocketd.line.mail.throttle import LoginThrottle
from mailsocketd.line.replies import CommandError, Reply, multiline, printable
from mailsocketd.line.server import LineServer
from mailsocketd.line.session import Session
from mailsocketd.mail.errors import AuthFailed, clean_text
from mailsocketd.mail.imap.client import MAX_UID, MailboxCounts
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.text.compose import DraftError, parse_recipients
from mailsocketd.mail.text.render import human_size, render_message
from mailsocketd.mail.text.summary import summarize, summary_line
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import UserSession, open_user_session
from mailsocketd.net import is_loopback

DEFAULT_COUNT = 20
NOT_CONFIGURED = "mail is not configured on this server (no [imap] in its configuration)"


@dataclass(eq=False)
class MailUser:
    """A logged-in line client: who, with which password (for SMTP), over which IMAP session."""

    user: str
    password: Secret
    imap: UserSession
    mailbox: str = "INBOX"  # the mailbox of the last list/read: delete acts on it
    watching: str | None = None


@dataclass(eq=False)
class ClientState:
    """Mail state of one line connection."""

    user: MailUser | None = None
    closed: bool = False


def counts_text(mailbox: str, counts: MailboxCounts) -> str:
    return (f"{mailbox} messages={counts.messages} unseen={counts.unseen} "
            f"recent={counts.recent}")


def is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` alone takes ``²`` and ``٣``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def parse_uid(text: str) -> int:
    if not is_number(text) or not 0 < int(text) <= MAX_UID:
        raise CommandError(f"not a UID: '{printable(text)}' (UIDs are the numbers 'list' shows)")
    return int(text)


def is_local(host: str) -> bool:
    """Loopback or a UNIX socket: the password does not cross a network."""
    return host == "unix" or is_loopback(host)


class MailCommands:
    """The mail commands' handlers and the logged-in clients' state."""

    log = Logger()

    def __init__(self, reactor: Any, clock: IReactorTime, line: LineConfig,
                 imap: ImapConfig | None, smtp: SmtpConfig | None) -> None:
        self.reactor = reactor
        self.clock = clock
        self.line = line
        self.imap = imap
        self.smtp = smtp
        self.throttle = LoginThrottle(clock, line.login_failures, line.login_lockout)
        self.clients: dict[Session, ClientState] = {}

    def commands(self) -> list[Command]:
        """The mail commands, for the command table."""
        return [
            Command("login", self.do_login, "login USER PASSWORD",
                    "log in with your mail user and password", 2, None),
            Command("logout", self.do_logout, "logout", "end your mail session", 0, 0, True),
            Command("check", self.do_check, "check [MAILBOX]",
                    "message, unseen and recent counts", 0, None, True),
            Command("mailboxes", self.do_mailboxes, "mailboxes",
                    "your mailboxes with their counts", 0, 0, True),
            Command("list", self.do_list, "list [COUNT] [MAILBOX]",
                    f"the newest COUNT ({DEFAULT_COUNT}) messages",
                    0, None, True),
            Command("read", self.do_read, "read UID [MAILBOX]",
                    "a message as text; marks it seen",
                    1, None, True),
            Command("delete", self.do_delete, "delete UID [UID ...]",
                    "delete messages of the current mailbox", 1, None, True),
            Command("send", self.do_send, "send TO[,TO...]",
                    "write and send a message, end with '.'", 1, None, True),
            Command("watch", self.do_watch, "watch on|off [MAILBOX]",
                    "push '* new mail' lines", 1, None, True),
        ]

    # -- state -------------------------------------------------------------------------

    def _state(self, session: Session) -> ClientState:
        state = self.clients.get(session)
        if state is None:
            state = self.clients[session] = ClientState()
            session.on_close.append(lambda: self._closed(session))
        return state

    def _user(self, session: Session) -> MailUser:
        state = self.clients.get(session)
        if state is None or state.user is None:
            raise CommandError("login first")
        if not state.user.imap.alive:
            self._forget(session, state)
            raise CommandError("the mail session was lost; login again")
        return state.user

    def _imap(self) -> ImapConfig:
        if self.imap is None:
            raise CommandError(NOT_CONFIGURED)
        return self.imap

    def _closed(self, session: Session) -> None:
        state = self.clients.pop(session, None)
        if state is None:
            return
        state.closed = True
        if state.user is not None:
            self._end(state.user, "connection closed")
            state.user = None

    def _forget(self, session: Session, state: ClientState) -> None:
        state.user = None
        session.user = None

    def _end(self, user: MailUser, why: str) -> None:
        user.imap.on_lost = None
        d = Deferred.fromCoroutine(user.imap.logout())
        d.addErrback(lambda f: self.log.info("logout of {user} ({why}) failed: {error}",
                                             user=user.user, why=why,
                                             error=clean_text(str(f.value))))

    def status_lines(self) -> list[str]:
        users = [s.user for s in self.clients.values() if s.user is not None]
        watching = sum(1 for u in users if u.watching is not None)
        return [f"mail sessions: {len(users)} logged in, {watching} watching; "
                f"failed logins on record from {self.throttle.addresses()} addresses"]

    @staticmethod
    def _run(coroutine: Coroutine[Any, Any, Reply]) -> Deferred[Reply]:
        return Deferred.fromCoroutine(coroutine)

    # -- login / logout ----------------------------------------------------------------

    def do_login(self, server: LineServer, session: Session, args: Sequence[str]
                 ) -> Deferred[Reply]:
        return self._run(self._login(session, args[0], " ".join(args[1:])))

    def _login_refusal(self, session: Session) -> str | None:
        if self.imap is None:
            return NOT_CONFIGURED
        if not (session.secure or is_local(session.host) or self.line.allow_cleartext_login):
            return ("login refused: this connection is neither encrypted nor local, so the "
                    "password would cross the network in clear; use the server's TLS listener")
        state = self.clients.get(session)
        if state is not None and state.user is not None:
            return f"already logged in as {printable(state.user.user)}; 'logout' first"
        wait = self.throttle.locked_for(session.host)
        if wait > 0:
            return (f"too many failed logins from your address; try again in "
                    f"{int(wait) + 1} s")
        return None

    async def _login(self, session: Session, user: str, password: str) -> Reply:
        refusal = self._login_refusal(session)
        if refusal is not None:
            raise CommandError(refusal)
        imap_config = self._imap()
        state = self._state(session)
        secret = Secret(password.encode("utf-8"))
        try:
            imap = await open_user_session(self.reactor, imap_config, user, secret,
                                           clock=self.clock)
        except AuthFailed as e:
            await self._failed_login(session, user, str(e))
            raise CommandError("login failed: wrong user name or password") from None
        if state.closed:  # the client left while we logged in
            self._end(MailUser(user, secret, imap), "connection closed during login")
            raise CommandError("connection closed")
        state.user = MailUser(user, secret, imap)
        session.user = user
        imap.on_lost = lambda reason: self._lost(session, reason)
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
        state = self.clients.get(session)
        if state is None or state.user is None:
            return
        self.log.info("{peer}: mail session of {user} lost: {reason}", peer=session.peer,
                      user=printable(state.user.user), reason=reason, event="mail_session_lost")
        self._forget(session, state)
        session.push(f"error: mail session lost ({clean_text(reason)}); login again")

    def do_logout(self, server: LineServer, session: Session, args: Sequence[str]) -> Reply:
        state = self.clients.get(session)
        if state is not None and state.user is not None:
            self._end(state.user, "logout")
            self._forget(session, state)
        return Reply("ok logged out")

    # -- reading -----------------------------------------------------------------------

    def do_check(self, server: LineServer, session: Session, args: Sequence[str]
                 ) -> Deferred[Reply]:
        user = self._user(session)
        mailbox = " ".join(args) or "INBOX"

        async def check() -> Reply:
            return Reply("ok " + counts_text(mailbox, await user.imap.check(mailbox)))
        return self._run(check())

    def do_mailboxes(self, server: LineServer, session: Session, args: Sequence[str]
                     ) -> Deferred[Reply]:
        user = self._user(session)

        async def mailboxes() -> Reply:
            found = await user.imap.mailboxes()
            lines = [f"messages={c.messages} unseen={c.unseen} {name}" if c is not None
                     else f"messages=- unseen=- {name}" for name, c in found]
            return multiline(f"{len(lines)} mailboxes", lines)
        return self._run(mailboxes())

    def do_list(self, server: LineServer, session: Session, args: Sequence[str]
                ) -> Deferred[Reply]:
        user = self._user(session)
        list_max = self._imap().list_max
        count, rest = DEFAULT_COUNT, list(args)
        if rest and is_number(rest[0]):
            count = int(rest.pop(0))
            if not 0 < count <= list_max:
                raise CommandError(f"COUNT must be 1 to {list_max}")
        mailbox = " ".join(rest) or user.mailbox

        async def listing() -> Reply:
            found = await user.imap.list_messages(mailbox, count)
            user.mailbox = mailbox
            lines = [summary_line(summarize(m.uid, m.header, m.flags, m.size))
                     for m in found.messages]
            return multiline(f"{len(lines)} of {found.exists} messages in {mailbox}, newest "
                             f"first (uidvalidity {found.uidvalidity})", lines)
        return self._run(listing())

    def do_read(self, server: LineServer, session: Session, args: Sequence[str]
                ) -> Deferred[Reply]:
        user = self._user(session)
        imap = self._imap()
        uid = parse_uid(args[0])
        mailbox = " ".join(args[1:]) or user.mailbox

        async def read() -> Reply:
            message = await user.imap.fetch_message(mailbox, uid, imap.read_limit)
            user.mailbox = mailbox
            # Rendering a big or hostile message takes up to about half a second: in the
            # reactor's thread pool other clients are served meanwhile.
            lines = await deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), render_message, message.data,
                text_limit=imap.text_limit, total_size=message.size)
            return multiline(f"message {uid} in {mailbox} ({human_size(message.size)})", lines)
        return self._run(read())

    def do_delete(self, server: LineServer, session: Session, args: Sequence[str]
                  ) -> Deferred[Reply]:
        user = self._user(session)
        uids = sorted({parse_uid(a) for a in args})
        mailbox = user.mailbox

        async def delete() -> Reply:
            outcome = await user.imap.delete(mailbox, uids)
            n = len(outcome.deleted)
            plural = "s" if n != 1 else ""
            text = f"ok deleted {n} message{plural} from {mailbox} ({outcome.method})"
            if outcome.missing:
                text += "; no such UID: " + " ".join(map(str, outcome.missing))
            return Reply(text)
        return self._run(delete())

    # -- sending and watching ----------------------------------------------------------

    def do_send(self, server: LineServer, session: Session, args: Sequence[str]) -> Reply:
        user = self._user(session)
        if self.smtp is None:
            raise CommandError("sending is not configured on this server (no [smtp])")
        try:
            to = parse_recipients("".join(args))
        except DraftError as e:
            raise CommandError(str(e)) from None
        reader = SendInput(self.reactor, self.clock, self.smtp, user=user.user,
                           password=user.password, to=to, peer=session.peer)
        return Reply("ok ready: optional Subject:/Cc:/Bcc: lines, a blank line, the text; "
                     "end with a line holding only '.'", reader=reader)

    def do_watch(self, server: LineServer, session: Session, args: Sequence[str]
                 ) -> Deferred[Reply] | Reply:
        user = self._user(session)
        switch = args[0].lower()
        if switch == "off":
            if user.watching is None:
                return Reply("ok not watching")
            user.watching = None
            return self._run(self._unwatch(user))
        if switch != "on":
            raise CommandError("usage: watch on|off [MAILBOX]")
        mailbox = " ".join(args[1:]) or "INBOX"

        def notify(box: str, counts: MailboxCounts) -> None:
            session.push(f"* new mail: {box} messages={counts.messages} "
                         f"unseen={counts.unseen}")

        def ended(reason: str) -> None:
            user.watching = None
            session.push(f"* watch ended: {clean_text(reason)}")

        async def watch() -> Reply:
            counts = await user.imap.watch(mailbox, notify, ended)
            user.watching = mailbox
            return Reply(f"ok watching {counts_text(mailbox, counts)}")
        return self._run(watch())

    async def _unwatch(self, user: MailUser) -> Reply:
        await user.imap.unwatch()
        return Reply("ok not watching")
