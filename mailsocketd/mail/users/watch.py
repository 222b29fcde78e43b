"""IdleWatch: a UserSession's ``watch``, pushing news of one mailbox between the user's commands.

With IDLE: while no command is queued, the watched mailbox is selected and IDLE runs.  A
command ends IDLE (DONE) first; IDLE resumes when the queue is empty, after re-EXAMINING the
watched mailbox if the command selected another.  An EXISTS during IDLE ends it; one STATUS
tells whether UIDNEXT grew, and if so ``notify`` hears of it.  IDLE is re-issued every
``idle_restart`` seconds (its DONE round trip is the heartbeat).

Against a busy loop (idlerule.py): two IDLE commands are at least IDLE_MIN_SPACING apart, and
a server that ends IDLE on its own, without news, IDLE_SHORT_LIMIT times in a row, each within
IDLE_SHORT seconds, is polled instead, as is one without IDLE: a STATUS every POLL_INTERVAL
seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.errors import INTERNAL_ERROR_TEXT, CheckTimeout, MailError, ServerRefused
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.commands import Selected, mailbox_key
from mailsocketd.mail.imap.idle import IDLE_MIN_SPACING, QuickIdleEnds

if TYPE_CHECKING:
    from mailsocketd.mail.users.session import UserSession

__all__ = ["POLL_INTERVAL", "IdleWatch"]

log = Logger()
POLL_INTERVAL = 30.0


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


@dataclass
class _Idle:
    """One IDLE command, from sending it to its tagged reply."""

    started_at: float
    accepted: bool = False  # the server's "+" came: DONE may be sent
    done_sent: bool = False
    done_wanted: bool = False  # end it as soon as it is accepted
    waiters: list[Deferred[None]] = field(default_factory=list)
    timers: list[IDelayedCall] = field(default_factory=list)


def _cancel(timer: IDelayedCall | None) -> None:
    if timer is not None and timer.active():
        timer.cancel()


class IdleWatch:
    """The watch state machine of one UserSession (see the module docstring)."""

    def __init__(self, session: UserSession, use_idle: bool) -> None:
        self.session = session
        self.clock: Any = session.clock
        self.use_idle = use_idle
        self.watched: _Watched | None = None
        self._idle: _Idle | None = None
        self._last_idle_start = float("-inf")
        self._quick_ends = QuickIdleEnds()
        self._resume_timer: IDelayedCall | None = None
        self._poll_timer: IDelayedCall | None = None

    @property
    def idling(self) -> bool:
        return self._idle is not None

    def start(self, mailbox: str, notify: Callable[[str, MailboxCounts], None],
              counts: MailboxCounts, ended: Callable[[str], None] | None = None) -> None:
        """Watch ``mailbox`` from these counts on (replacing any other); ``ended`` hears why
        if the watch ends by itself (the mailbox was deleted, say)."""
        self.stop()
        self.watched = _Watched(mailbox, notify, counts.uidnext, counts.uidvalidity, ended)

    def stop(self) -> None:
        """Watch nothing; a running IDLE ends when the next command (or logout) ends it."""
        self.watched = None
        _cancel(self._resume_timer)
        _cancel(self._poll_timer)
        self._resume_timer = self._poll_timer = None

    # -- what the session tells us -----------------------------------------------------------

    def changed(self, kind: str) -> None:
        """The client's on_change: an EXISTS for the selected mailbox."""
        watched = self.watched
        if kind != "exists" or watched is None or self.session.selected != watched.key:
            return
        watched.dirty = True
        self.end_idle()

    def selected(self, selected: Selected) -> None:
        """A SELECT/EXAMINE answered: did the watched mailbox grow meanwhile?"""
        watched = self.watched
        if watched is None or mailbox_key(selected.mailbox) != watched.key:
            return
        if (selected.uidnext is None or selected.uidnext > watched.uidnext
                or selected.uidvalidity != watched.uidvalidity):
            watched.dirty = True

    # -- ending IDLE -------------------------------------------------------------------------

    async def leave_idle(self) -> None:
        """End IDLE (if it runs) and wait for the server's reply; the caller holds the lock."""
        idle = self._idle
        if idle is None:
            return
        waiter: Deferred[None] = Deferred()
        idle.waiters.append(waiter)
        self.end_idle()
        await waiter

    def end_idle(self) -> None:
        """Send DONE (once, and only after the server's "+"); its reply must come in time."""
        idle = self._idle
        if idle is None or idle.done_sent:
            return
        if not idle.accepted:
            idle.done_wanted = True
            return
        idle.done_sent = True
        client, timeout = self.session.client, self.session.imap.timeout
        client.done()
        idle.timers.append(self.clock.callLater(
            timeout, client.drop, CheckTimeout("the reply to DONE", timeout)))

    def _idle_finished(self, result: object, idle: _Idle) -> None:
        """IDLE's tagged reply (or the connection's end): wake the waiters, resume."""
        if self._idle is idle:
            self._idle = None
        for timer in idle.timers:
            _cancel(timer)
        error = result if isinstance(result, Failure) else None
        if error is not None and error.check(ServerRefused):
            self._fall_back(f"the server refused IDLE: {error.value}")
            error = None
        elif error is None:
            self._count_quick_end(idle)
        for waiter in idle.waiters:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)
        self.resume_soon()

    def _count_quick_end(self, idle: _Idle) -> None:
        """The anti-spin rule of idlerule.py: poll after too many quick ends in a row."""
        lasted = self.clock.seconds() - idle.started_at
        news = self.watched is not None and self.watched.dirty
        if self._quick_ends.ended(lasted, by_server=not idle.done_sent, news=news):
            self._fall_back(f"the server ended IDLE at once {self._quick_ends.count} times")

    def _fall_back(self, reason: str) -> None:
        if self.use_idle:
            self.use_idle = False
            log.warn("user {user}: {reason}; polling every {interval:g} s instead",
                     user=self.session.user, reason=reason, interval=POLL_INTERVAL,
                     event="idle_fallback")

    # -- resuming ----------------------------------------------------------------------------

    def resume_soon(self) -> None:
        """After a command (or IDLE's end): IDLE again (spaced), or keep polling."""
        if self.watched is None or not self.session.alive:
            return
        if not self.use_idle:
            self._schedule_poll()
            return
        if not (self.session.busy or self._idle is not None or self._resume_timer is not None):
            self._resume_now()

    def _resume_now(self) -> None:
        self._resume_timer = None
        Deferred.fromCoroutine(self._resume())

    async def _resume(self) -> None:
        """Select the watched mailbox if needed, STATUS it if it may have grown, IDLE."""
        session = self.session
        if session.busy:
            return  # the operation holding the lock resumes when it is done
        await session.acquire()
        try:
            watched = self.watched
            if watched is None or not session.alive or self._idle is not None:
                return
            if session.selected != watched.key:
                await session.select(watched.mailbox, readonly=True)
            if watched.dirty:
                await self._recheck(watched)
            delay = self._last_idle_start + IDLE_MIN_SPACING - self.clock.seconds()
            if delay > 0:  # news is never delayed; only the next IDLE is
                self._resume_timer = self.clock.callLater(delay, self._resume_now)
            elif self.use_idle and self.watched is watched:
                await self._start_idle()
        except Exception as e:
            self._failed(e)
        finally:
            session.release()
        if not self.use_idle:
            self._schedule_poll()

    async def _start_idle(self) -> None:
        client = self.session.client
        started, finished = client.idle()
        idle = _Idle(self.clock.seconds())
        self._idle = idle
        self._last_idle_start = idle.started_at
        finished.addBoth(self._idle_finished, idle)
        try:
            await client.within(started, "the server to accept IDLE")
        except ServerRefused:
            return  # _idle_finished falls back to polling
        if self._idle is not idle:
            return
        idle.accepted = True
        idle.timers.append(self.clock.callLater(self.session.imap.idle_restart, self.end_idle))
        watched = self.watched
        if idle.done_wanted or watched is None or watched.dirty:
            self.end_idle()

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
        """A failed resume or poll: a lost connection is the session's news; anything else
        (the watched mailbox was deleted, say) ends the watch."""
        if not self.session.alive:
            return
        if isinstance(error, MailError):
            reason = str(error)
            log.warn("user {user}: watch ended: {error}", user=self.session.user,
                     error=reason, event="watch_failed")
        else:
            reason = INTERNAL_ERROR_TEXT
            log.failure("user {user}: watch ended by an unexpected error", Failure(error),
                        user=self.session.user)
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
