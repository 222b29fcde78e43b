"""Slowing down and then refusing password guessing: per client, and per user name.

Every failed ``login`` is remembered for ``window`` seconds under a key.  Each failure's
``error:`` reply is held back longer than the last (1, 2, 4 ... up to 16 s), so a script
guessing on one connection crawls; once ``limit`` failures are on record the key is refused
outright, without asking the IMAP server, until they have aged out.  Successful logins do not
wipe the record: one valid account must not buy unlimited guesses at others.

Attempts still waiting for the IMAP server's answer count as well (``reserve`` before the round
trip, ``release`` or ``failed`` after it): logins sent at once on many connections cannot all
reach the server before the first failure is counted, so at most ``limit`` attempts of one key
are ever tried in a window.

Keys (``client_key``): an IPv4 address as it is; an IPv6 address by its /64, the block one
customer line gets (an IPv4 address mapped into IPv6 counts as the IPv4 address); a UNIX socket
client by its peer uid (SO_PEERCRED).  ``user_key`` is the user name's local part, case folded,
so ``Alice``, ``alice`` and ``alice@other.example`` share one record.
"""

from __future__ import annotations

import ipaddress
from collections import deque

from twisted.internet.interfaces import IReactorTime

__all__ = ["MAX_DELAY", "LoginThrottle", "client_key", "user_key"]

MAX_DELAY = 16.0
MAX_HOSTS = 100_000  # bound the memory an address-hopping attacker can make us keep


def client_key(host: str, uid: int | None = None) -> str:
    """The key a client's failed logins are counted under (see the module docstring)."""
    if host == "unix":
        return "unix" if uid is None else f"unix uid {uid}"
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def user_key(name: str) -> str:
    """The key a user name's failed logins (and its sessions) are counted under."""
    local, at, _domain = name.rpartition("@")
    return (local if at and local else name).casefold()


class LoginThrottle:
    """Failed logins and logins under way per key, with the delay and lock-out they earn."""

    def __init__(self, clock: IReactorTime, limit: int, window: float) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._pending: dict[str, int] = {}

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
        """Seconds until the failures on record let ``host`` try again (0: they do)."""
        times = self._recent(host)
        if len(times) < self.limit:
            return 0.0
        return max(times[-self.limit] + self.window - self.clock.seconds(), 0.0)

    def pending(self, host: str) -> int:
        """How many attempts of ``host`` are waiting for the IMAP server's answer."""
        return self._pending.get(host, 0)

    def reserve(self, host: str) -> bool:
        """Count one attempt as under way, if failures and attempts under way leave room;
        every True must be followed by one ``release`` or one ``failed``."""
        if len(self._recent(host)) + self.pending(host) >= self.limit:
            return False
        self._pending[host] = self.pending(host) + 1
        return True

    def release(self, host: str) -> None:
        """An attempt ``reserve`` counted did not fail (it logged in, or never got an answer)."""
        left = self.pending(host) - 1
        if left > 0:
            self._pending[host] = left
        else:
            self._pending.pop(host, None)

    def failed(self, host: str, reserved: bool = False) -> float:
        """Record a failure (of a reserved attempt, which it ends); returns how long to hold
        back the error reply."""
        if reserved:
            self.release(host)
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
        """How many keys have failures on record that have not aged out (for ``status``):
        records are otherwise forgotten only when their key is seen again, so they are pruned
        here first."""
        for host in list(self._failures):
            self._recent(host)
        return len(self._failures)
