"""Slowing down and then refusing password guessing, per peer address.

Every failed ``login`` from an address is remembered for ``window`` seconds.  Each failure's
``error:`` reply is held back longer than the last (1, 2, 4 ... up to 16 s), so a script
guessing on one connection crawls; once ``limit`` failures are on record the address is
refused outright, without asking the IMAP server, until they have aged out.  Successful
logins do not wipe the record: one valid account must not buy unlimited guesses at others.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IReactorTime

MAX_DELAY = 16.0
MAX_HOSTS = 100_000  # bound the memory an address-hopping attacker can make us keep


class LoginThrottle:
    """Failed logins per address, with the delay and lock-out they earn."""

    def __init__(self, clock: IReactorTime, limit: int, window: float) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, host: str) -> deque[float]:
        times = self._failures.get(host)
        if times is None:
            return deque()
        cutoff = self.clock.seconds() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[host]
        return times

    def locked_for(self, host: str) -> float:
        """Seconds until ``host`` may try again (0: it may try now)."""
        times = self._recent(host)
        if len(times) < self.limit:
            return 0.0
        return max(times[-self.limit] + self.window - self.clock.seconds(), 0.0)

    def failed(self, host: str) -> float:
        """Record a failure; returns how long to hold back the error reply."""
        self._recent(host)  # forget failures that have aged out
        if host not in self._failures and len(self._failures) >= MAX_HOSTS:
            self._prune()
        times = self._failures.setdefault(host, deque(maxlen=self.limit))
        times.append(self.clock.seconds())
        return min(2.0 ** (len(times) - 1), MAX_DELAY)

    def _prune(self) -> None:
        for host in list(self._failures):
            self._recent(host)
        if len(self._failures) >= MAX_HOSTS:  # all recent: forget the oldest entries
            oldest = sorted(self._failures, key=lambda h: self._failures[h][-1])
            for host in oldest[: len(oldest) // 2]:
                del self._failures[host]

    def addresses(self) -> int:
        """How many addresses have failures on record (for ``status``)."""
        return len(self._failures)
