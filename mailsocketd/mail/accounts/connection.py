"""One connection's life: log in, check every mailbox, then IDLE or poll until told to stop.

After login every configured mailbox gets one STATUS; once they are answered the session is
healthy (``on_healthy``: the service reconnects at once when such a session ends).  Then:

* With IDLE (offered by the server and ``idle = true``): the first mailbox is EXAMINEd and
  watched with IDLE, in rounds of the one IDLE loop (``imap/idle.py``).  An untagged EXISTS /
  EXPUNGE / FETCH ends IDLE (DONE), that mailbox gets a STATUS, and the next round starts, so
  new mail is seen within a round trip or two.  The loop paces the rounds, renews IDLE every
  ``keepalive`` seconds (the DONE round trip is the heartbeat), and gives IDLE up for polling
  when the server refuses it or keeps ending it at once.
* Without IDLE: the connection sleeps between checks, and every ``keepalive`` seconds a NOOP
  proves it alive.
* Either way every mailbox gets a STATUS every ``interval`` seconds (IDLE can watch only the
  selected mailbox; for it this is a safety net).  A reply that does not come within
  ``timeout`` seconds aborts the connection, so a connection that a server or NAT box dropped
  silently is replaced within ``keepalive + timeout`` seconds.
* A mailbox whose UIDVALIDITY changed while its messages did not (a Courier folder that no
  client opened read-write: ``imap/uidvalidity.py``) is SELECTed read-write once per
  connection, which settles it, and checked again.

What a change triggers (one STATUS) and what polling does (STATUS, NOOP) are this module's;
the IDLE mechanics are the loop's.  Errors propagate out of ``run()``; the caller
(``service.py``) records them and reconnects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.accounts.state import AccountState
from mailsocketd.mail.errors import ServerRefused
from mailsocketd.mail.imap.client import LOGOUT_TIMEOUT, ImapClient, MailboxCounts
from mailsocketd.mail.imap.idle import IdleLoop
from mailsocketd.mail.imap.login import Credentials, log_in
from mailsocketd.mail.imap.uidvalidity import compare
from mailsocketd.mail.tls import ReactorClock

__all__ = ["AccountConnection", "Wakeup"]

Wakeup = Literal["timer", "stop"]  # why a polling sleep ended


class AccountConnection:
    """Drives one logged-in connection (see the module docstring)."""

    log = Logger()

    def __init__(self, client: ImapClient, *, account: AccountConfig, state: AccountState,
                 clock: ReactorClock, password: Credentials,
                 on_logged_in: Callable[[], None] | None = None,
                 on_healthy: Callable[[], None] | None = None) -> None:
        self.client = client
        self.account = account
        self.state = state
        self.clock = clock
        self.password = password
        self.on_logged_in = on_logged_in
        self.on_healthy = on_healthy
        self.stopping = False
        self._dirty = False
        self._settled: set[str] = set()  # mailboxes selected read-write to settle them
        self._selected: str | None = None  # the mailbox this connection has selected
        self._wakeup: Deferred[Wakeup] | None = None
        self.idle = IdleLoop(client, clock, keepalive=account.keepalive,
                             has_news=lambda: self._dirty, poll_interval=account.interval,
                             label=account.name, log_fields={"account": account.name},
                             on_idling=lambda: state.set_state("idling"), use_idle=False)
        client.lost_callbacks.append(self._lost)
        client.listen_for_alerts(self._alert)

    def _alert(self, text: str) -> None:
        """An ``[ALERT]`` from the server (RFC 3501 7.1: for a human to see): logged."""
        self.log.warn("{account}: the mail server says: {text}", account=self.account.name,
                      text=text, event="imap_alert")

    # -- waiting -----------------------------------------------------------------------------

    def _changed(self, kind: str) -> None:
        """The watched mailbox changed (EXISTS, EXPUNGE, FETCH): check it soon."""
        self._dirty = True
        self.idle.changed()

    def _wake(self, reason: Wakeup) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.callback(reason)

    def _lost(self, reason: Failure) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.errback(reason)

    async def _sleep(self, seconds: float) -> Wakeup:
        """Wait ``seconds``, or less when stop() is called; a lost connection raises its
        reason."""
        if self.stopping:
            return "stop"
        wakeup: Deferred[Wakeup] = Deferred()
        self._wakeup = wakeup
        timer = self.clock.callLater(max(seconds, 0.0), self._wake, "timer")
        try:
            return await wakeup
        finally:
            if timer.active():
                timer.cancel()

    def stop(self) -> None:
        """Finish the current step, then log out."""
        self.stopping = True
        self._wake("stop")
        self.idle.end()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Log in, check, then watch until stop() (errors propagate)."""
        self.state.set_state("logging-in")
        caps = await log_in(self.client, self.account.address, self.account.tls,
                            self.account.user, self.password)
        self.state.logged_in(self.client.encrypted)
        if self.on_logged_in is not None:
            self.on_logged_in()
        self.client.on_change = self._changed
        await self.check_all()
        if self.on_healthy is not None:  # logged in and answered: the server works
            self.on_healthy()
        if self.account.idle and b"IDLE" in caps and not self.stopping:
            self.idle.use_idle = await self._select_watched()
        await self._watch()
        await self._log_out()

    async def _watch(self) -> None:
        """Until stop(): wait (IDLE or poll), then check what is due: every mailbox each
        ``interval``, the watched one when IDLE brought news."""
        next_poll = self.clock.seconds() + self.account.interval
        while not self.stopping:
            self.state.set_state("connected")
            if not self.idle.use_idle:
                await self._poll_until(next_poll)
            elif self.clock.seconds() < next_poll:
                await self.idle.run(until=next_poll)
            if self.stopping:
                break
            if self.clock.seconds() >= next_poll:
                self._dirty = False
                await self.check_all()
                next_poll = self.clock.seconds() + self.account.interval
            elif self._dirty and self.idle.use_idle:
                self._dirty = False
                await self.check(self.account.mailboxes[0])

    async def _select_watched(self) -> bool:
        """EXAMINE the first mailbox for IDLE; on refusal, fall back to polling."""
        mailbox = self.account.mailboxes[0]
        self._selected = None
        try:
            await self.client.examine(mailbox)
            self._selected = mailbox
        except ServerRefused as e:
            self.state.record_check_error(mailbox, f"cannot IDLE on it: {e}")
            return False
        self._dirty = False  # EXAMINE's own EXISTS is not news
        return True

    async def _poll_until(self, next_poll: float) -> None:
        """Sleep until the next check, or the next heartbeat (a NOOP) if that comes first."""
        deadline = min(next_poll, self.clock.seconds() + self.account.keepalive)
        woken = await self._sleep(deadline - self.clock.seconds())
        if woken == "timer" and self.clock.seconds() < next_poll:
            await self.client.noop_check()

    async def check_all(self) -> None:
        for mailbox in self.account.mailboxes:
            if self.stopping:
                return
            await self.check(mailbox)

    async def check(self, mailbox: str) -> None:
        """One STATUS round trip; a refusal (no such mailbox) is that mailbox's error.  A
        mailbox whose UIDVALIDITY changed while its messages did not is settled first (once
        per connection, see ``_settle``)."""
        self.state.set_state("checking")
        started = self.clock.seconds()
        try:
            if mailbox == self._selected and not self.idle.use_idle:
                # the selected mailbox's STATUS may show this session's view (RFC 3501
                # 6.3.10; Courier's does), which only IDLE or a NOOP brings up to date
                await self.client.noop_check()
            counts = await self.client.status_counts(mailbox)
            latency = self.clock.seconds() - started
            previous = self.state.mailboxes[mailbox].counts
            if (previous is not None and mailbox not in self._settled
                    and compare(previous, counts).continuity == "unsettled"):
                counts = await self._settle(mailbox)
        except ServerRefused as e:
            self.state.record_check_error(mailbox, str(e))
            return
        self.state.record_check(mailbox, counts, latency)

    async def _settle(self, mailbox: str) -> MailboxCounts:
        """One read-write SELECT, which makes a Courier folder write its UID database and so
        keep its UIDVALIDITY from now on; then an EXAMINE (of the IDLE mailbox, or of this one
        when polling), so that no mailbox stays open read-write, and a new STATUS.  The cost:
        the messages in the folder then lose \\Recent (for every client), as with any
        read-write open."""
        self._settled.add(mailbox)
        self.log.info(
            "{account} {mailbox}: UIDVALIDITY changed while the messages did not; selecting "
            "it read-write once so that the server settles it", account=self.account.name,
            mailbox=mailbox, event="uidvalidity_unsettled")
        self._selected = None
        await self.client.select_read_write(mailbox)
        if self.idle.use_idle:
            self.idle.use_idle = await self._select_watched()
        else:  # read-only again at once: mail that comes later keeps its \Recent
            await self.client.examine(mailbox)
            self._selected = mailbox
        return await self.client.status_counts(mailbox)

    async def _log_out(self) -> None:
        """LOGOUT politely, but briefly: the caller aborts the connection after this."""
        with contextlib.suppress(Exception):  # going away anyway; the caller aborts
            await self.client.log_out(LOGOUT_TIMEOUT)
