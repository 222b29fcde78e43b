"""IdleWatch: a line user's ``watch``, pushing news of one mailbox between the user's commands.

With IDLE, rounds of the one IDLE loop (``imap/idle.py``) run while no command is queued: the
watched mailbox is selected (EXAMINE) first, if a command selected another.  A command ends the
round (DONE) before it runs; the next round starts when the queue is empty.  An EXISTS during
IDLE ends it; one STATUS tells whether UIDNEXT grew, and if so ``notify`` hears of it.  The loop
paces the rounds, renews IDLE every ``[imap] keepalive`` seconds and gives IDLE up when the
server refuses it or keeps ending it at once; then, as without IDLE, the watch polls: a STATUS
every POLL_INTERVAL seconds.

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
from mailsocketd.mail.imap.client import ImapClient, MailboxCounts
from mailsocketd.mail.imap.commands import Selected, mailbox_key
from mailsocketd.mail.imap.idle import IdleLoop, RoundEnd
from mailsocketd.mail.tls import ReactorClock

__all__ = ["POLL_INTERVAL", "IdleWatch", "WatchedSession"]

T = TypeVar("T")
log = Logger()
POLL_INTERVAL = 30.0


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
    uidnext: int
    uidvalidity: int
    ended: Callable[[str], None] | None = None  # told why, if the watch ends by itself
    dirty: bool = False  # it may have grown: STATUS before the next IDLE

    @property
    def key(self) -> str:
        return mailbox_key(self.mailbox)


class IdleWatch:
    """The watch of one UserSession (see the module docstring)."""

    def __init__(self, session: WatchedSession, client: ImapClient, clock: ReactorClock, *,
                 keepalive: float, use_idle: bool, user: str) -> None:
        self.session = session
        self.clock = clock
        self.user = user
        self.watched: _Watched | None = None
        self.idle = IdleLoop(client, clock, keepalive=keepalive, has_news=self._has_news,
                             poll_interval=POLL_INTERVAL, label=f"user {user}",
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
        self.watched = _Watched(mailbox, notify, counts.uidnext, counts.uidvalidity, ended)

    def stop(self) -> None:
        """Watch nothing: a round under way ends (DONE), polling stops."""
        self.watched = None
        self.idle.end()
        if self._poll_timer is not None and self._poll_timer.active():
            self._poll_timer.cancel()
        self._poll_timer = None

    # -- what the session tells us -----------------------------------------------------------

    def changed(self, kind: str) -> None:
        """The client's on_change: an EXISTS for the selected mailbox."""
        watched = self.watched
        if kind != "exists" or watched is None or self.session.selected != watched.key:
            return
        watched.dirty = True
        self.idle.changed()

    def selected(self, selected: Selected) -> None:
        """A SELECT/EXAMINE answered: did the watched mailbox grow meanwhile?"""
        watched = self.watched
        if watched is None or mailbox_key(selected.mailbox) != watched.key:
            return
        if (selected.uidnext is None or selected.uidnext > watched.uidnext
                or selected.uidvalidity != watched.uidvalidity):
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
        if watched.dirty:
            await self._recheck(watched)
        if self.watched is watched and self.idle.use_idle and not self.idle.running:
            self.idle.run().addBoth(self._round_over)

    def _round_over(self, result: RoundEnd | Failure) -> None:
        if isinstance(result, Failure) and isinstance(result.value, Exception):
            self._failed(result.value)  # a lost connection is the session's news
        self.resume_soon()

    async def _recheck(self, watched: _Watched) -> None:
        """One STATUS of the watched mailbox; notify if UIDNEXT grew."""
        watched.dirty = False
        counts = await self.session.status(watched.mailbox)
        grew = (counts.uidvalidity == watched.uidvalidity
                and counts.uidnext > watched.uidnext)
        watched.uidnext, watched.uidvalidity = counts.uidnext, counts.uidvalidity
        if grew and self.watched is watched:
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
        self._poll_timer = self.clock.callLater(POLL_INTERVAL, self._poll)

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
