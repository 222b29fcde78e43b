"""A line user's own IMAP session: ``login USER PASSWORD`` and the mail commands behind it.

``open_user_session`` connects to the ``[imap]`` server (``imap/connect.py``), logs in with the
user's credentials (TLS and login by the rules of ``imap/login.py``, the same as the accounts')
and returns a ``UserSession``, which keeps that connection for the line connection.  Its
operations run strictly one after another (a DeferredLock); a failed one does not block the
next.

``watch`` pushes news of a mailbox (``watch.py``): with IDLE, the watched mailbox stays selected
and IDLE runs whenever no command is queued (a command ends it with DONE and it resumes after);
without IDLE, or when the server refuses it or keeps ending it at once, a STATUS every
POLL_INTERVAL seconds.  The watch sees this session only as a ``WatchedSession``.

Results are raw (bytes, numbers); rendering is another module's job.  Errors are MailErrors
whose ``str()`` is one line for the user: no class names, never the password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.errors import (
    AuthFailed,
    MailError,
    ServerRefused,
    clean_text,
)
from mailsocketd.mail.imap.client import LOGOUT_TIMEOUT, MAX_UID, MailboxCounts
from mailsocketd.mail.imap.commands import (
    FetchedMessage,
    ListedMessage,
    Selected,
    UserImapClient,
    log_in_user,
    loss_line,
    mailbox_key,
    unreachable,
)
from mailsocketd.mail.imap.connect import ImapClientFactory, connect
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor, ReactorClock
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.deleting import find_trash, remove
from mailsocketd.mail.users.known import KnownUids
from mailsocketd.mail.users.results import (
    MAX_NAME,
    Deletion,
    Listing,
    MailboxError,
    NoSuchMessage,
    SessionLost,
    UidValidityChanged,
    check_mailbox_name,
    refusal,
)
from mailsocketd.mail.users.watch import IdleWatch

# The results and errors (results.py) are exported from here too, with the session.
__all__ = ["MAX_NAME", "Deletion", "FetchedMessage", "ListedMessage", "Listing", "MailboxError",
           "NoSuchMessage", "SessionLost", "UidValidityChanged", "UserSession",
           "open_user_session"]

T = TypeVar("T")
log = Logger()
MAX_MAILBOXES = 200  # mailboxes() STATUSes at most this many
MAX_DELETE = 1000  # UIDs in one delete
LOST = "not logged in to the mail server (session lost); login again"
LOGGED_OUT = "not logged in to the mail server (logged out); login again"


async def open_user_session(reactor: ConnectReactor, imap: ImapConfig, user: str,
                            password: Secret, *, clock: IReactorTime | None = None,
                            client_ip: str | None = None) -> UserSession:
    """Connect, TLS per policy, tell the server ``client_ip`` (ID, see ``send_id``), log in;
    AuthFailed on wrong credentials (never naming the password), MailError for everything
    else.  Connecting takes at most imap.timeout, and so does the whole login."""
    if not user or len(user) > 256 or any(not c.isprintable() or c.isspace() for c in user):
        raise AuthFailed("bad user name")
    if any(b in (0, 10, 13) for b in password.reveal()):
        raise AuthFailed("the password contains control characters")
    time: ReactorClock = clock if clock is not None else reactor
    factory = ImapClientFactory(lambda: UserImapClient(
        time, imap.timeout, f"user {user}", read_limit=imap.read_limit,
        list_max=imap.list_max))
    try:
        client = await connect(reactor, imap.address, imap.tls, factory, imap.timeout)
    except Exception as e:
        raise unreachable(e, imap.timeout) from None
    return await start_user_session(client, imap, user, password, clock=time,
                                    client_ip=client_ip)


async def start_user_session(client: UserImapClient, imap: ImapConfig, user: str,
                             password: Secret, *, clock: ReactorClock,
                             client_ip: str | None = None) -> UserSession:
    """Log in over a connected client and wrap it in a UserSession."""
    caps = await log_in_user(client, imap.address, imap.tls, user, password,
                             timeout=imap.timeout, client_ip=client_ip)
    # Not logged here: the line service logs each login once, with the client's address.
    session = UserSession(client, imap, user, caps, clock)
    session.open_inbox()
    return session


class UserSession:
    """One user's logged-in IMAP connection (see the module docstring)."""

    def __init__(self, client: UserImapClient, imap: ImapConfig, user: str,
                 capabilities: frozenset[bytes], clock: ReactorClock) -> None:
        self.client = client
        self.imap = imap
        self.user = user
        self.on_lost: Callable[[str], None] | None = None
        self.capabilities = capabilities
        self.clock = clock
        self.lost_reason: str | None = None
        self.closing = False
        self._selection: Selected | None = None  # what selecting the selected mailbox said
        self._lock = DeferredLock()
        self._known = KnownUids()  # what list showed: read and delete check it
        self._namespace: str | None = None  # the personal namespace's prefix, once asked
        self._logout: Deferred[None] | None = None
        self.watcher = IdleWatch(self, client, clock, keepalive=imap.keepalive,
                                 use_idle=b"IDLE" in capabilities, user=user,
                                 interval=imap.watch_interval)
        client.on_change = self.watcher.changed
        client.lost_callbacks.append(self._connection_lost)

    def listen_for_alerts(self, on_alert: Callable[[str], None]) -> None:
        """``on_alert`` hears each ``[ALERT]`` the server sends (RFC 3501 7.1: the text MUST
        be shown to the user), cleaned, from the login's on; each is logged too."""
        def alert(text: str) -> None:
            log.warn("user {user}: the mail server says: {text}", user=self.user, text=text,
                     event="imap_alert")
            on_alert(text)
        self.client.listen_for_alerts(alert)

    def __repr__(self) -> str:
        return f"<UserSession {self.user!r} alive={self.alive}>"

    @property
    def alive(self) -> bool:
        return self.lost_reason is None and not self.closing and not self.client.dropping

    @property
    def selected(self) -> str | None:
        """The key (mailbox_key) of the selected mailbox; None when none is."""
        return None if self._selection is None else mailbox_key(self._selection.mailbox)

    # -- the queue ---------------------------------------------------------------------------

    def _require_alive(self) -> None:
        if self.closing:
            raise SessionLost(LOGGED_OUT)
        if not self.alive:
            raise SessionLost(LOST)

    async def exclusive(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` alone on the connection (IDLE ended first, resumed after)."""
        self._require_alive()
        await self._lock.acquire()
        try:
            self._require_alive()
            await self.watcher.leave_idle()
            return await step()
        except Exception as e:
            raise self._failed(e) from None
        finally:
            self._lock.release()
            self.watcher.resume_soon()

    async def if_free(self, step: Callable[[], Awaitable[None]]) -> bool:
        """Run ``step`` alone on the connection now, or not at all (False) when an operation
        holds or waits for it: the watch's steps give way to the user's commands, whose end
        resumes the watch."""
        if self._lock.locked or not self.alive:
            return False
        await self._lock.acquire()  # free: taken at once
        try:
            await step()
        finally:
            self._lock.release()
        return True

    def _failed(self, error: Exception) -> Exception:
        """A lost connection becomes SessionLost (on_lost told once); other errors pass."""
        if self.closing and not self.client.connected_ok:
            return SessionLost(LOGGED_OUT)
        if not self.client.dropping:
            return error
        reason = self.client.lost_reason or Failure(error)
        line = loss_line(reason)
        self.connection_lost(line)
        return SessionLost(f"{line}; login again")

    def _connection_lost(self, reason: Failure) -> None:
        self.connection_lost(loss_line(reason))

    def connection_lost(self, line: str) -> None:
        """Tell on_lost, once, unless we were logging out."""
        self.watcher.stop()
        if self.lost_reason is not None or self.closing:
            return
        self.lost_reason = line
        log.info("user {user}: mail session lost: {reason}", user=self.user, reason=line,
                 event="user_session_lost")
        if self.on_lost is not None:
            try:
                self.on_lost(line)
            except Exception:
                log.failure("on_lost callback failed")

    # -- mailbox steps (called with the lock held) -------------------------------------------

    async def select(self, mailbox: str, readonly: bool) -> Selected:
        """SELECT or EXAMINE; the watcher hears of the watched mailbox's UIDNEXT.

        A mailbox that is selected already (read-write, or read-only when that is all that is
        asked) is not selected again: a NOOP brings the server's news (EXISTS, EXPUNGE), which
        the client counts.  So ``list`` costs the same on a mailbox of 10 or 100,000 messages.
        """
        current = self._selection
        if (current is not None and self.selected == mailbox_key(mailbox)
                and (readonly or not current.readonly)):
            await self.client.noop_check()
            if self.client.exists is not None:
                return replace(current, exists=self.client.exists)
        self._selection = None
        try:
            selected = await self.client.select_mailbox(mailbox, readonly)
        except ServerRefused as e:
            raise refusal(mailbox, e) from None
        self._selection = selected
        self.watcher.selected(selected)
        return selected

    async def status(self, mailbox: str) -> MailboxCounts:
        """STATUS.  Of the selected mailbox it answers from this session's view (RFC 3501
        6.3.10): a NOOP first lets the server bring that view up to date."""
        if self.selected == mailbox_key(mailbox):
            await self.client.noop_check()
        try:
            return await self.client.status_counts(mailbox)
        except ServerRefused as e:
            raise refusal(mailbox, e) from None

    async def settle(self, mailbox: str) -> Selected:
        """SELECT read-write, which makes a Courier folder settle its UIDVALIDITY
        (``imap/uidvalidity.py``; its messages lose \\Recent), then EXAMINE it again."""
        self._selection = None
        await self.select(mailbox, readonly=False)
        self._selection = None
        return await self.select(mailbox, readonly=True)

    # -- the operations ----------------------------------------------------------------------

    def open_inbox(self) -> None:
        """EXAMINE INBOX in the background, as a mail client opens it on login.  ``check``,
        ``list`` and ``watch`` of INBOX then need no SELECT, and a STATUS of the selected
        mailbox costs the server little (Dovecot, 100,000 messages: 0.14 ms, against 3 ms for
        an unselected one).  A command that comes first waits for it; a failure only leaves
        nothing selected."""
        async def step() -> None:
            await self.select("INBOX", readonly=True)

        def failed(reason: Failure) -> None:
            log.info("user {user}: INBOX could not be opened: {error}", user=self.user,
                     error=clean_text(str(reason.value)), event="user_inbox_unopened")

        Deferred.fromCoroutine(self.exclusive(step)).addErrback(failed)

    async def check(self, mailbox: str = "INBOX") -> MailboxCounts:
        """One STATUS (after a NOOP when it is the selected mailbox, see ``status``)."""
        check_mailbox_name(mailbox)
        return await self.exclusive(lambda: self.status(mailbox))

    async def mailboxes(self) -> list[tuple[str, MailboxCounts | None]]:
        """Every mailbox (at most MAX_MAILBOXES, INBOX first) with its counts; None where
        STATUS cannot be had (\\Noselect, a refusal)."""
        async def step() -> list[tuple[str, MailboxCounts | None]]:
            found: list[tuple[str, MailboxCounts | None]] = []
            entries = await self.client.list_mailboxes()
            # INBOX first, the others in the server's order (Courier lists INBOX last)
            entries.sort(key=lambda e: e.name is None or mailbox_key(e.name) != "INBOX")
            for entry in entries[:MAX_MAILBOXES]:
                name = entry.name or entry.raw.decode("utf-8", "replace")
                counts = None
                if entry.name is not None and entry.selectable:
                    with contextlib.suppress(ServerRefused):
                        counts = await self.client.status_counts(entry.name)
                found.append((name, counts))
            return found
        return await self.exclusive(step)

    async def list_messages(self, mailbox: str, count: int) -> Listing:
        """EXAMINE, then one FETCH of the last ``count`` messages (newest first)."""
        check_mailbox_name(mailbox)
        if not 1 <= count <= self.imap.list_max:
            raise MailError(f"count must be 1 to {self.imap.list_max}")

        async def step() -> Listing:
            selected = await self.select(mailbox, readonly=True)
            messages: list[ListedMessage] = []
            if selected.exists:
                first = max(1, selected.exists - count + 1)
                messages = await self.client.fetch_headers(first, selected.exists)
            self._known.listed(mailbox, selected.uidvalidity, messages)
            return Listing(mailbox, selected.uidvalidity, selected.exists, tuple(messages))
        return await self.exclusive(step)

    async def fetch_message(self, mailbox: str, uid: int, limit: int) -> FetchedMessage:
        """SELECT, then ``UID FETCH`` the first ``limit`` bytes (at most read_limit); the
        server marks the message \\Seen."""
        check_mailbox_name(mailbox)
        limit = max(1, min(limit, self.imap.read_limit))

        async def step() -> FetchedMessage:
            selected = await self.select(mailbox, readonly=False)
            await self._known.check(self.client, selected, [uid])
            fetched = None
            if 0 < uid <= MAX_UID:
                fetched = await self.client.fetch_body(uid, limit)
            if fetched is None:
                raise NoSuchMessage(f"no message with UID {uid} in {clean_text(mailbox, 100)}")
            return fetched
        return await self.exclusive(step)

    async def delete(self, mailbox: str, uids: Sequence[int]) -> Deletion:
        """Delete by UID: UID EXPUNGE with UIDPLUS, else move to Trash, else mark \\Deleted.

        Without UIDPLUS a bare EXPUNGE would also remove what another client marked.
        """
        check_mailbox_name(mailbox)
        wanted = sorted(set(uids))
        if not wanted or len(wanted) > MAX_DELETE:
            raise MailError(f"give 1 to {MAX_DELETE} UIDs to delete")

        async def step() -> Deletion:
            selected = await self.select(mailbox, readonly=False)
            valid = [uid for uid in wanted if 0 < uid <= MAX_UID]
            await self._known.check(self.client, selected, valid)
            existing = await self.client.uid_search(valid) if valid else []
            missing = tuple(uid for uid in wanted if uid not in set(existing))
            if not existing:
                listed = ", ".join(str(uid) for uid in wanted[:10])
                plural = "s" if len(wanted) > 1 else ""
                raise NoSuchMessage(f"no message with UID{plural} {listed} in "
                                    f"{clean_text(mailbox, 100)}")
            method = await self._remove(mailbox, existing)
            return Deletion(tuple(existing), missing, method)
        return await self.exclusive(step)

    async def _remove(self, mailbox: str, uids: list[int]) -> str:
        trash = None
        if b"UIDPLUS" not in self.capabilities:
            trash = self.imap.trash or await self._find_trash()
        return await remove(self.client, self.capabilities, mailbox, uids, trash)

    async def _find_trash(self) -> str | None:
        """The server's Trash (``deleting.find_trash``): LIST, and NAMESPACE once."""
        if self._namespace is None:
            self._namespace = ""
            if b"NAMESPACE" in self.capabilities:
                with contextlib.suppress(ServerRefused):
                    found = await self.client.personal_namespace()
                    self._namespace = found[0] if found else ""
        return find_trash(await self.client.list_mailboxes(), self._namespace)

    async def watch(self, mailbox: str, notify: Callable[[str, MailboxCounts], None],
                    ended: Callable[[str], None] | None = None) -> MailboxCounts:
        """Push news of ``mailbox`` (UIDNEXT grew) to ``notify``; the counts now.  Calling it
        again switches mailbox.  ``ended`` hears why if the watch ends by itself (the mailbox
        was deleted, say; not on ``unwatch`` or a lost session, which has its own news)."""
        check_mailbox_name(mailbox)

        async def step() -> MailboxCounts:
            counts = await self.status(mailbox)
            self.watcher.start(mailbox, notify, counts, ended)
            return counts
        return await self.exclusive(step)

    async def unwatch(self) -> None:
        """Stop pushing (and end IDLE); quietly nothing when the session is gone."""
        self.watcher.stop()
        if self.alive:
            async def step() -> None:
                return None
            await self.exclusive(step)

    async def logout(self) -> None:
        """LOGOUT within LOGOUT_TIMEOUT, then close; idempotent."""
        if self._logout is None:
            self._logout = Deferred.fromCoroutine(self._log_out())
        await self._logout  # a second caller gets None as well: the result is None

    async def _log_out(self) -> None:
        was_alive = self.alive
        self.closing = True
        self.watcher.stop()  # ends IDLE: LOGOUT follows its reply
        if not was_alive:
            return
        with contextlib.suppress(Exception):
            await self.client.log_out(LOGOUT_TIMEOUT)
        if self.client.connected_ok:
            self.client.drop(MailError("logged out"))
        log.info("user {user} logged out of the mail server", user=self.user,
                 event="user_logout")
