"""IdleLoop: the one IDLE loop (RFC 2177) of every connection that watches a mailbox, both the
account checks' (accounts/connection.py) and a line user's ``watch`` (users/watch.py).

IDLE is simple on the wire and full of traps around it; they are handled here, once, so that
both behave the same.  ``run()`` plays one round:

* It waits for its turn: two rounds start at least IDLE_MIN_SPACING seconds apart, so a server
  that ends every IDLE at once, or reports a change in every reply, cannot spin the loop.  News
  is never delayed (its owner checks it as soon as IDLE ends); only the next round waits.
* Then it sends IDLE, unless the owner has news to check first.  The server must answer ``+``
  within the command timeout (else the connection is dropped); a refusal (NO, BAD) means
  polling on this connection from then on.
* IDLE ends on demand (``changed()`` for news; ``end()`` or ``leave()`` when the owner needs the
  connection or stops), at the owner's deadline, or ``keepalive`` seconds after it started: DONE
  is sent and its reply must come within the command timeout, else the connection is dropped.
  So the DONE round trip is the heartbeat, and IDLE never outlives RFC 2177's 29 minutes.
* A server that ends IDLE on its own, without news, within IDLE_SHORT seconds,
  IDLE_SHORT_LIMIT times in a row, is polled instead on that connection (logged once,
  ``event="idle_fallback"``).  An IDLE that lasted IDLE_SHORT seconds (whoever ended it) breaks
  the row; one we ended, or one that brought news, neither counts nor breaks it.

What differs between the owners stays with them: what news is and what it triggers, how the
connection is shared with other commands, and what polling does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.errors import ServerRefused
from mailsocketd.mail.imap.client import ImapClient
from mailsocketd.mail.tls import ReactorClock

__all__ = ["IDLE_MIN_SPACING", "IDLE_SHORT", "IDLE_SHORT_LIMIT", "IdleLoop", "QuickIdleEnds",
           "RoundEnd"]

IDLE_MIN_SPACING = 1.0  # seconds between two rounds (IDLE starts), at least
IDLE_SHORT = 5.0  # an IDLE the server ends sooner than this, without news, ended "at once"
IDLE_SHORT_LIMIT = 3  # that many in a row: poll instead of IDLE on this connection

# How a round ended: "skipped" (no IDLE was sent: the owner ended the round while it waited
# for its turn, had news to check, or its deadline passed), "refused" (the server refused
# IDLE: poll from now on), "done" (we ended IDLE with DONE), "server" (the server ended it).
RoundEnd = Literal["skipped", "refused", "done", "server"]
_Wake = Literal["timer", "end", "reply"]


class QuickIdleEnds:
    """Counts the server's quick ends of IDLE in a row on one connection."""

    def __init__(self) -> None:
        self.count = 0

    def ended(self, lasted: float, *, by_server: bool, news: bool) -> bool:
        """One IDLE ended after ``lasted`` seconds; True when the row reaches the limit (time
        to poll instead)."""
        if lasted >= IDLE_SHORT:
            self.count = 0
            return False
        if not by_server or news:
            return False
        self.count += 1
        return self.count >= IDLE_SHORT_LIMIT


@dataclass
class _Round:
    """One round, from waiting for its turn to IDLE's tagged reply."""

    until: float | None
    idle_sent: bool = False
    ending: bool = False  # end it: DONE as soon as IDLE runs; no IDLE if it has not begun
    done_sent: bool = False
    wakeup: Deferred[_Wake] | None = None
    waiters: list[Deferred[None]] = field(default_factory=list)


class IdleLoop:
    """IDLE rounds on one connection (see the module docstring).

    ``has_news`` tells whether the owner has a change to check: such a round sends no IDLE, and
    an IDLE that brought news is no quick end.  ``on_idling`` hears that the server accepted
    IDLE.  ``label`` and ``log_fields`` (``account=`` or ``user=``) go into the log events;
    ``poll_interval`` is what the owner polls at once IDLE is given up, for the log line.
    """

    log = Logger()

    def __init__(self, client: ImapClient, clock: ReactorClock, *, keepalive: float,
                 has_news: Callable[[], bool], poll_interval: float, label: str,
                 log_fields: Mapping[str, object] | None = None,
                 on_idling: Callable[[], None] | None = None, use_idle: bool = True) -> None:
        self.client = client
        self.clock = clock
        self.keepalive = keepalive
        self.use_idle = use_idle
        self._has_news = has_news
        self._poll_interval = poll_interval
        self._label = label
        self._log_fields = dict(log_fields or {})
        self._on_idling = on_idling
        self._round: _Round | None = None
        self._last_start = float("-inf")
        self._quick_ends = QuickIdleEnds()
        client.lost_callbacks.append(self._lost)

    @property
    def running(self) -> bool:
        """Whether a round is under way (waiting for its turn, or IDLE is out)."""
        return self._round is not None

    @property
    def idling(self) -> bool:
        """Whether IDLE is out: sent, and its tagged reply not yet in."""
        return self._round is not None and self._round.idle_sent

    # -- what the owner says -----------------------------------------------------------------

    def run(self, until: float | None = None) -> Deferred[RoundEnd]:
        """One round: fires when it is over, with how it ended; fails when the connection is
        lost (or dropped: no ``+``, no reply to DONE in time).  IDLE ends by ``until`` (a clock
        time) at the latest."""
        if self._round is not None:
            raise RuntimeError("an IDLE round is under way already")
        r = self._round = _Round(until)
        return Deferred.fromCoroutine(self._run(r))

    def changed(self) -> None:
        """The owner has news: end IDLE (DONE) so that it can check.  A round still waiting for
        its turn keeps waiting (the spacing holds), then sends no IDLE."""
        r = self._round
        if r is not None and r.idle_sent:
            self.end()

    def end(self) -> None:
        """End the round now, whatever it is doing: DONE once IDLE runs (at once if it does);
        no IDLE at all if it has not been sent."""
        r = self._round
        if r is not None:
            r.ending = True
            self._wake(r, "end")

    async def leave(self) -> None:
        """``end()``, then wait until the round is over and the connection free for another
        command.  Fails as the round does."""
        r = self._round
        if r is None:
            return
        waiter: Deferred[None] = Deferred()
        r.waiters.append(waiter)
        self.end()
        await waiter

    # -- a round -----------------------------------------------------------------------------

    async def _run(self, r: _Round) -> RoundEnd:
        try:
            how = await self._play(r)
        except Exception as e:
            self._over(r, Failure(e))
            raise
        self._over(r, None)
        return how

    def _over(self, r: _Round, error: Failure | None) -> None:
        if self._round is r:
            self._round = None
        waiters, r.waiters = r.waiters, []
        for waiter in waiters:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)

    async def _play(self, r: _Round) -> RoundEnd:
        wait = self._last_start + IDLE_MIN_SPACING - self.clock.seconds()
        if wait > 0:
            await self._sleep(r, wait)
        if r.ending:
            return "skipped"
        self._last_start = now = self.clock.seconds()
        if self._has_news() or (r.until is not None and now >= r.until):
            return "skipped"
        return await self._idle(r)

    async def _idle(self, r: _Round) -> RoundEnd:
        client = self.client
        sent_at = self.clock.seconds()
        started, finished = client.idle()
        r.idle_sent = True
        finished.addBoth(self._replied, r)
        try:
            await client.within(started, "the server to accept IDLE")
            heartbeat = await self._hold(r, sent_at)
            await self._done(r, finished, heartbeat)
        except ServerRefused as e:
            finished.addErrback(lambda _: None)  # the same refusal
            self._give_up("the server refused IDLE ({error})", error=str(e),
                          event="idle_refused")
            return "refused"
        except Exception:
            finished.addErrback(lambda _: None)  # a lost connection fails IDLE too: said above
            raise
        return self._ended(r, sent_at)

    async def _hold(self, r: _Round, sent_at: float) -> bool:
        """While IDLE runs: wait for the owner, the server's end or the deadline.  True when
        ``keepalive`` ended it (the DONE is then a heartbeat)."""
        if not self.client.idling or r.ending:
            return False
        if self._on_idling is not None:
            self._on_idling()
        deadline = sent_at + self.keepalive
        heartbeat = r.until is None or deadline <= r.until
        if r.until is not None and not heartbeat:
            deadline = r.until
        why = await self._sleep(r, deadline - self.clock.seconds())
        return heartbeat and why == "timer"

    async def _done(self, r: _Round, finished: Deferred[Any], heartbeat: bool) -> None:
        """DONE (unless the server ended IDLE already); its reply must come in time."""
        step = "the reply to DONE"
        if self.client.idling and not self.client.dropping:
            r.done_sent = True
            self.client.done()
            if heartbeat:
                step += " (heartbeat)"
        await self.client.within(finished, step)

    def _ended(self, r: _Round, sent_at: float) -> RoundEnd:
        """IDLE is over: apply the anti-spin rule."""
        by_server = not r.done_sent
        lasted = self.clock.seconds() - sent_at
        if self._quick_ends.ended(lasted, by_server=by_server, news=self._has_news()):
            self._give_up("the server ended IDLE at once {count} times in a row",
                          count=self._quick_ends.count, event="idle_fallback")
        return "server" if by_server else "done"

    def _give_up(self, why: str, **fields: object) -> None:
        """Poll from now on, said once in the log (a warning for the anti-spin rule)."""
        if not self.use_idle:
            return
        self.use_idle = False
        emit = self.log.warn if fields["event"] == "idle_fallback" else self.log.info
        emit("{label}: " + why + "; polling every {interval:g} s on this connection instead",
             label=self._label, interval=self._poll_interval, **fields, **self._log_fields)

    # -- waiting -----------------------------------------------------------------------------

    async def _sleep(self, r: _Round, seconds: float) -> _Wake:
        """Wait ``seconds``, or until woken (end(), IDLE's reply); a lost connection raises."""
        wakeup: Deferred[_Wake] = Deferred()
        r.wakeup = wakeup
        timer = self.clock.callLater(max(seconds, 0.0), self._wake, r, "timer")
        try:
            return await wakeup
        finally:
            r.wakeup = None
            if timer.active():
                timer.cancel()

    def _wake(self, r: _Round, why: _Wake) -> None:
        wakeup, r.wakeup = r.wakeup, None
        if wakeup is not None and not wakeup.called:
            wakeup.callback(why)

    def _replied(self, result: object, r: _Round) -> object:
        """IDLE's tagged reply (or its failure) came: wake the round; the result goes on."""
        self._wake(r, "reply")
        return result

    def _lost(self, reason: Failure) -> None:
        r = self._round
        wakeup = r.wakeup if r is not None else None
        if r is not None and wakeup is not None and not wakeup.called:
            r.wakeup = None
            wakeup.errback(reason)
