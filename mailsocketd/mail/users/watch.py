"""IdleWatch: a line user's ``watch``, pushing news of one mailbox between the user's commands.

With IDLE, rounds of the one IDLE loop (``imap/idle.py``) run while no command is queued: the
watched mailbox is selected (EXAMINE) first, if a command selected another.  A command ends the
round (DONE) before it runs; the next round starts when the queue is empty.  An EXISTS during
IDLE ends it; one STATUS tells whether UIDNEXT grew, and if so ``notify`` hears of it.  The loop
paces the rounds, renews IDLE every ``[imap] keepalive`` seconds and gives IDLE up when the
server refuses it or keeps ending it at once; then, as without IDLE, the watch polls.

Whatever IDLE does, the watched mailbox gets a STATUS every ``[imap] watch_interval`` seconds
(the safety net the account checks have: Courier's IDLE looks for new mail only once a minute
by default, and tells nothing when the mailbox is deleted).  An EXPUNGE that empties the
mailbox during IDLE (all Cyrus says when another client deletes it) brings the STATUS at once.
A STATUS or SELECT refused (the mailbox is gone) ends the watch, and ``ended`` hears why.

New mail is UIDNEXT growing, also across a UIDVALIDITY that changed while the messages did not
(``imap/uidvalidity.py``); the first time that is seen the mailbox is settled (SELECTed
read-write once, then EXAMINEd again).

The watch sees its session only through ``WatchedSession``: it never imports the session, and
the session's queue stays the session's (``if_free`` runs a step only when nothing waits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.errors import INTERNAL_ERROR_TEXT, MailError
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.commands import Selected, UserImapClient, mailbox_key
from mailsocketd.mail.imap.idle import IdleLoop, RoundEnd
from mailsocketd.mail.imap.uidvalidity import compare
from mailsocketd.mail.tls import ReactorClock

__all__ = ["POLL_INTERVAL", "IdleWatch", "WatchedSession"]

T = TypeVar("T")
log = Logger()
POLL_INTERVAL = 30.0  # [imap] watch_interval's default


class WatchedSession(Protocol):
    """What the watch needs of its session (UserSession provides it)."""

    @property
    def alive(self) -> bool:
        """Whether the connection is usable (not lost, not logging out)."""

    @property
    def selected(self) -> str | None:
        """The mailbox_key of the selected mailbox."""

    async def select(self, mailbox: str, readonly: bool) -> Selected:
        """SELECT/EXAMINE; called only with the connection held."""

    async def status(self, mailbox: str) -> MailboxCounts:
        """STATUS; called only with the connection held."""

    async def settle(self, mailbox: str) -> Selected:
        """SELECT read-write (so the server settles the UIDVALIDITY), then EXAMINE again;
        called only with the connection held."""

    async def exclusive(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` alone on the connection, in turn after the commands queued."""

    async def if_free(self, step: Callable[[], Awaitable[None]]) -> bool:
        """Run ``step`` alone on the connection now, or not at all (False) if a command
        holds or waits for it: that command's end resumes the watch."""


@dataclass
class _Watched:
    """The watched mailbox and the UIDNEXT that news is measured against."""

    mailbox: str
    notify: Callable[[str, MailboxCounts], None]
    counts: MailboxCounts  # the last STATUS
    next_check: float  # the next STATUS at the latest (the safety net)
    ended: Callable[[str], None] | None = None  # told why, if the watch ends by itself
    dirty: bool = False  # it may have grown: STATUS before the next IDLE
    settled: bool = False  # selected read-write once to settle its UIDVALIDITY

    @property
    def key(self) -> str:
        return mailbox_key(self.mailbox)


class IdleWatch:
    """The watch of one UserSession (see the module docstring)."""

    def __init__(self, session: WatchedSession, client: UserImapClient, clock: ReactorClock,
                 *, keepalive: float, use_idle: bool, user: str,
                 interval: float = POLL_INTERVAL) -> None:
        self.session = session
        self.client = client
        self.clock = clock
        self.user = user
        self.interval = interval
        self.watched: _Watched | None = None
        self.idle = IdleLoop(client, clock, keepalive=keepalive, has_news=self._has_news,
                             poll_interval=interval, label=f"user {user}",
                             log_fields={"user": user}, use_idle=use_idle)
        self._poll_timer: IDelayedCall | None = None

    @property
    def use_idle(self) -> bool:
        """False without IDLE, or once the loop gave it up: the watch polls."""
        return self.idle.use_idle

    @property
    def idling(self) -> bool:
        return self.idle.idling

    def _has_news(self) -> bool:
        return self.watched is not None and self.watched.dirty

    def start(self, mailbox: str, notify: Callable[[str, MailboxCounts], None],
              counts: MailboxCounts, ended: Callable[[str], None] | None = None) -> None:
        """Watch ``mailbox`` from these counts on (replacing any other); ``ended`` hears why
        if the watch ends by itself (the mailbox was deleted, say)."""
        self.stop()
        self.watched = _Watched(mailbox, notify, counts, self.clock.seconds() + self.interval,
                                ended)

    def stop(self) -> None:
        """Watch nothing: a round under way ends (DONE), polling stops."""
        self.watched = None
        self.idle.end()
        if self._poll_timer is not None and self._poll_timer.active():
            self._poll_timer.cancel()
        self._poll_timer = None

    # -- what the session tells us -----------------------------------------------------------

    def changed(self, kind: str) -> None:
        """The client's on_change: an EXISTS for the selected mailbox, or an EXPUNGE that
        left it empty (perhaps deleted by another client: the STATUS tells)."""
        watched = self.watched
        if watched is None or self.session.selected != watched.key:
            return
        if kind == "exists" or (kind == "expunge" and self.client.exists == 0):
            watched.dirty = True
            self.idle.changed()

    def selected(self, selected: Selected) -> None:
        """A SELECT/EXAMINE answered: did the watched mailbox grow meanwhile?"""
        watched = self.watched
        if watched is None or mailbox_key(selected.mailbox) != watched.key:
            return
        if (selected.uidnext is None or selected.uidnext > watched.counts.uidnext
                or selected.uidvalidity != watched.counts.uidvalidity):
            watched.dirty = True

    async def leave_idle(self) -> None:
        """End the round under way (if any) and wait for it; the caller holds the
        connection."""
        await self.idle.leave()

    # -- resuming ----------------------------------------------------------------------------

    def resume_soon(self) -> None:
        """After a command (or a round's end): the next round, or keep polling."""
        if self.watched is None or not self.session.alive or self.idle.running:
            return
        if not self.idle.use_idle:
            self._schedule_poll()
            return
        Deferred.fromCoroutine(self._resume())

    async def _resume(self) -> None:
        try:
            await self.session.if_free(self._next_round)
        except Exception as e:
            self._failed(e)

    async def _next_round(self) -> None:
        """With the connection held: the watched mailbox selected and its news checked, then
        a round of IDLE (it is sent before the connection is let go; a command that comes
        while the round waits for its turn ends it)."""
        watched = self.watched
        if watched is None or not self.session.alive or self.idle.running:
            return
        if self.session.selected != watched.key:
            await self.session.select(watched.mailbox, readonly=True)
        if watched.dirty or self.clock.seconds() >= watched.next_check:
            await self._recheck(watched)
        if self.watched is watched and self.idle.use_idle and not self.idle.running:
            self.idle.run(until=watched.next_check).addBoth(self._round_over)

    def _round_over(self, result: RoundEnd | Failure) -> None:
        if isinstance(result, Failure) and isinstance(result.value, Exception):
            self._failed(result.value)  # a lost connection is the session's news
        self.resume_soon()

    async def _recheck(self, watched: _Watched) -> None:
        """One STATUS of the watched mailbox (a second after settling it); notify if new
        mail came."""
        watched.dirty = False
        counts = await self.session.status(watched.mailbox)
        change = compare(watched.counts, counts)
        if change.continuity == "unsettled" and not watched.settled:
            watched.settled = True
            log.info("user {user}: {mailbox}: UIDVALIDITY changed while the messages did not; "
                     "selecting it read-write once so that the server settles it",
                     user=self.user, mailbox=watched.mailbox, event="uidvalidity_unsettled")
            await self.session.settle(watched.mailbox)
            watched.dirty = False
            counts = await self.session.status(watched.mailbox)
            change = compare(watched.counts, counts)
        watched.counts = counts
        watched.next_check = self.clock.seconds() + self.interval
        if change.new > 0 and self.watched is watched:
            try:
                watched.notify(watched.mailbox, counts)
            except Exception:
                log.failure("watch notify callback failed")

    def _failed(self, error: Exception) -> None:
        """A failed round or poll: a lost connection is the session's news; anything else
        (the watched mailbox was deleted, say) ends the watch."""
        if not self.session.alive:
            return
        if isinstance(error, MailError):
            reason = str(error)
            log.warn("user {user}: watch ended: {error}", user=self.user, error=reason,
                     event="watch_failed")
        else:
            reason = INTERNAL_ERROR_TEXT
            log.failure("user {user}: watch ended by an unexpected error", Failure(error),
                        user=self.user)
        watched = self.watched
        self.stop()
        if watched is not None and watched.ended is not None:
            try:
                watched.ended(reason)
            except Exception:
                log.failure("watch ended callback failed")

    # -- polling -----------------------------------------------------------------------------

    def _schedule_poll(self) -> None:
        if self.watched is None or not self.session.alive or self._poll_timer is not None:
            return
        self._poll_timer = self.clock.callLater(self.interval, self._poll)

    def _poll(self) -> None:
        self._poll_timer = None
        Deferred.fromCoroutine(self._poll_once())

    async def _poll_once(self) -> None:
        watched = self.watched
        if watched is None:
            return
        try:
            await self.session.exclusive(lambda: self._recheck(watched))
        except Exception as e:
            self._failed(e)
