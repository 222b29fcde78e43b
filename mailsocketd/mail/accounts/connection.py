"""One connection's life: log in, check every mailbox, then IDLE or poll until told to stop.

After login every configured mailbox gets one STATUS.  Then:

* With IDLE (offered by the server and ``idle = true``): the first mailbox is EXAMINEd and
  watched with IDLE.  An untagged EXISTS / EXPUNGE / FETCH ends IDLE (DONE), that mailbox gets
  a STATUS, and IDLE starts again, so new mail is seen within a round trip or two.
* Without IDLE: the session sleeps between checks.
* IDLE is paced (idlerule.py): at most one IDLE (or change-driven STATUS) per
  IDLE_MIN_SPACING seconds, so a server that ends every IDLE at once, or reports a change in
  every reply, cannot spin the loop.  A server that ends IDLE on its own, without news and
  within IDLE_SHORT seconds, IDLE_SHORT_LIMIT times in a row, is not asked to IDLE again on
  this connection: the session polls instead (logged once, ``event="idle_fallback"``).
* Either way every mailbox gets a STATUS every ``interval`` seconds (IDLE can watch only the
  selected mailbox; for it this is a safety net), and every ``keepalive`` seconds the connection
  must prove it is alive: IDLE is ended and restarted (the DONE round trip is the heartbeat,
  and IDLE never runs longer than 25 minutes), or a NOOP is sent when polling.  A reply that
  does not come within ``timeout`` seconds aborts the connection, so a connection that a server
  or NAT box dropped silently is replaced within ``keepalive + timeout`` seconds.

Errors propagate out of ``run()``; the caller (``checker``) records them and reconnects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.accounts.state import AccountState
from mailsocketd.mail.errors import ServerRefused
from mailsocketd.mail.imap.client import LOGOUT_TIMEOUT, ImapClient
from mailsocketd.mail.imap.idle import IDLE_MIN_SPACING, QuickIdleEnds
from mailsocketd.mail.imap.login import log_in
from mailsocketd.mail.secrets import Secret

__all__ = ["AccountConnection"]



class AccountConnection:
    """Drives one logged-in connection (see the module docstring)."""

    log = Logger()

    def __init__(self, client: ImapClient, *, account: AccountConfig, state: AccountState,
                 clock: Any, password: Callable[[], Deferred[Secret]],
                 on_logged_in: Callable[[], None] | None = None) -> None:
        self.client = client
        self.account = account
        self.state = state
        self.clock = clock
        self.password = password
        self.on_logged_in = on_logged_in
        self.use_idle = False
        self.stopping = False
        self._dirty = False
        self._wakeup: Deferred[str] | None = None
        self._round_started: float | None = None
        self._quick_ends = QuickIdleEnds()
        client.lost_callbacks.append(self._lost)

    # -- waiting -----------------------------------------------------------------------------

    def _changed(self, kind: str) -> None:
        """The watched mailbox changed (EXISTS, EXPUNGE, FETCH): check it soon."""
        self._dirty = True
        self._wake("change")

    def _wake(self, reason: str) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.callback(reason)

    def _lost(self, reason: Failure) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.errback(reason)

    async def _sleep(self, seconds: float, wake_on_change: bool = True) -> str:
        """Wait ``seconds``, or less when the mailbox changes (unless ``wake_on_change`` is
        false), stop() is called or the connection is lost (which raises its reason)."""
        if self.stopping or (wake_on_change and self._dirty and self.use_idle):
            return "now"
        wakeup: Deferred[str] = Deferred()
        self._wakeup = wakeup
        timer = self.clock.callLater(max(seconds, 0.0), self._wake, "timer")
        try:
            return await wakeup
        finally:
            if timer.active():
                timer.cancel()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` whatever the mailbox does; only stop() or a lost connection end it
        sooner."""
        until = self.clock.seconds() + seconds
        while not self.stopping and self.clock.seconds() < until:
            await self._sleep(until - self.clock.seconds(), wake_on_change=False)

    def stop(self) -> None:
        """Finish the current step, then log out."""
        self.stopping = True
        self._wake("stop")

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Log in, check, then watch until stop() (errors propagate)."""
        self.state.set_state("logging-in")
        caps = await log_in(self.client, self.account, self.password)
        self.state.logged_in(self.client.encrypted)
        if self.on_logged_in is not None:
            self.on_logged_in()
        self.client.on_change = self._changed
        await self.check_all()
        self.use_idle = self.account.idle and b"IDLE" in caps and not self.stopping
        if self.use_idle:
            self.use_idle = await self._select_watched()
        await self._watch()
        await self._log_out()

    async def _watch(self) -> None:
        next_poll = self.clock.seconds() + self.account.interval
        while not self.stopping:
            if self.use_idle:
                await self._pace_idle()
                if self.stopping:
                    break
            now = self.clock.seconds()
            if now < next_poll and not (self._dirty and self.use_idle):
                deadline = min(next_poll, now + self.account.keepalive)
                if self.use_idle:
                    await self._idle_until(deadline)
                else:
                    await self._poll_until(deadline, next_poll)
                if self.stopping:
                    break
            if self.clock.seconds() >= next_poll:
                self._dirty = False
                await self.check_all()
                next_poll = self.clock.seconds() + self.account.interval
            elif self._dirty and self.use_idle:
                self._dirty = False
                await self.check(self.account.mailboxes[0])

    async def _select_watched(self) -> bool:
        """EXAMINE the first mailbox for IDLE; on refusal, fall back to polling."""
        mailbox = self.account.mailboxes[0]
        try:
            await self.client.examine(mailbox)
        except ServerRefused as e:
            self.state.record_check_error(mailbox, f"cannot IDLE on it: {e}")
            return False
        self._dirty = False  # EXAMINE's own EXISTS is not news
        return True

    async def _pace_idle(self) -> None:
        """Begin a round of the IDLE loop no sooner than IDLE_MIN_SPACING after the last."""
        if self._round_started is not None:
            wait = self._round_started + IDLE_MIN_SPACING - self.clock.seconds()
            if wait > 0:
                self.state.set_state("connected")
                await self._pause(wait)
        self._round_started = self.clock.seconds()

    async def _idle_until(self, deadline: float) -> None:
        """IDLE until the deadline or a change; the DONE round trip doubles as heartbeat."""
        client = self.client
        idle_started = self.clock.seconds()
        started, finished = client.idle()
        finished.addCallback(lambda _: self._wake("idle ended"))
        accepted = ended_by_server = False
        try:
            await client.within(started, "the server to accept IDLE")
            accepted = ended_by_server = True
            if client.idling:
                self.state.set_state("idling")
                await self._sleep(deadline - self.clock.seconds())
                ended_by_server = not client.idling
                client.done()
            await client.within(finished, "the reply to DONE (heartbeat)")
        except BaseException as e:
            # The IDLE command fails too (a lost connection fails every command): what is
            # raised here says it all, so its failure must not be left unhandled.
            finished.addErrback(lambda _: None)
            if accepted or not isinstance(e, ServerRefused):
                raise
            self.use_idle = False  # the server said NO to IDLE after all: poll instead
            return
        self.state.set_state("connected")
        lasted = self.clock.seconds() - idle_started
        if self._quick_ends.ended(lasted, by_server=ended_by_server, news=self._dirty):
            self.use_idle = False
            self.log.warn(
                "{account}: the server ended IDLE at once {count} times in a row; polling "
                "every {interval:g} s on this connection instead",
                account=self.account.name, count=self._quick_ends.count,
                interval=self.account.interval, event="idle_fallback")

    async def _poll_until(self, deadline: float, next_poll: float) -> None:
        """Sleep until the deadline; a NOOP heartbeat when it is not yet time to check."""
        self.state.set_state("connected")
        reason = await self._sleep(deadline - self.clock.seconds())
        if reason == "timer" and self.clock.seconds() < next_poll:
            await self.client.noop_check()

    async def check_all(self) -> None:
        for mailbox in self.account.mailboxes:
            if self.stopping:
                return
            await self.check(mailbox)

    async def check(self, mailbox: str) -> None:
        """One STATUS round trip; a refusal (no such mailbox) is that mailbox's error."""
        self.state.set_state("checking")
        started = self.clock.seconds()
        try:
            counts = await self.client.status_counts(mailbox)
        except ServerRefused as e:
            self.state.record_check_error(mailbox, str(e))
            return
        self.state.record_check(mailbox, counts, self.clock.seconds() - started)

    async def _log_out(self) -> None:
        """LOGOUT politely, but briefly: the caller aborts the connection after this."""
        with contextlib.suppress(Exception):  # going away anyway; the caller aborts
            await self.client.log_out(LOGOUT_TIMEOUT)
