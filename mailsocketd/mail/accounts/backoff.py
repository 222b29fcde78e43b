"""How long to wait before reconnecting: jittered exponential backoff that remembers, and a
quick return after a session that worked.

ClientService resets its own attempt counter whenever a TCP connection is made, which would let
a server that accepts and then drops every session be hammered at the initial delay.  So the
``Backoff.delay`` given to ClientService as its retry policy ignores that counter and keeps its
own: it grows with every lost or failed connection.

A session that logged in and got its first STATUS answered was **healthy**: the server, the
credentials and the mailboxes work, and the session most likely ended because the server was
restarted or a connection dropped.  If it stayed healthy for ``quick_after`` seconds, its end
is followed by a quick reconnection (within ``quick_jitter`` seconds, spread so that many
accounts do not all come back in the same instant) and the curve starts again from
``initial``.  A session that ends sooner counts as one more failure, so a server that is healthy
for a moment and then drops every session cannot turn quick reconnections into a loop; nor can
a server that refuses or fails before the first STATUS: both keep the growing delay.  A rejected
login (wrong password, no usable TLS, an unreadable password file) waits much longer, starting
at minutes, so that a bad password is never hammered against the server (and its fail2ban).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IReactorTime

__all__ = ["Backoff"]


class Backoff:
    """Reconnection delays for one account (see the module docstring)."""

    def __init__(self, clock: IReactorTime, *, initial: float = 1.0, maximum: float = 300.0,
                 factor: float = 2.0, quick_jitter: float = 1.0, quick_after: float = 10.0,
                 auth_initial: float = 300.0, auth_maximum: float = 3600.0,
                 jitter: Callable[[], float] = random.random) -> None:
        self._clock = clock
        self._curve = backoffPolicy(initial, maximum, factor, jitter=lambda: 0.0)
        self._auth_curve = backoffPolicy(auth_initial, auth_maximum, factor, jitter=lambda: 0.0)
        self._quick_jitter = quick_jitter
        self._quick_after = quick_after
        self._jitter = jitter
        self.failures = 0
        self.auth_failures = 0
        self._auth_pending = False
        self._healthy_at: float | None = None  # when the session that just ended became healthy

    def logged_in(self) -> None:
        """A session logged in: the credentials work (the long delay is forgotten)."""
        self.auth_failures = 0

    def healthy(self) -> None:
        """A session logged in and its first STATUS was answered: if it stays up for
        ``quick_after`` seconds, come back quickly when it ends, and the growing delay starts
        from the beginning."""
        self._healthy_at = self._clock.seconds()

    def auth_failed(self) -> None:
        """The next delay is the long one, and it grows with each rejected login in a row."""
        self.auth_failures += 1
        self._auth_pending = True

    def delay(self, attempt: int = 0) -> float:
        """Seconds to wait before the next attempt (ClientService's ``retryPolicy``).

        ``attempt`` (ClientService's own count) is ignored: see the module docstring.
        """
        healthy_at, self._healthy_at = self._healthy_at, None
        if self._auth_pending:
            self._auth_pending = False
            base = self._auth_curve(self.auth_failures - 1)
            return base * (0.75 + 0.5 * self._jitter())
        if healthy_at is not None and self._clock.seconds() - healthy_at >= self._quick_after:
            self.failures = 0
            return self._quick_jitter * self._jitter()
        self.failures += 1
        base = self._curve(self.failures - 1)
        return base * (0.75 + 0.5 * self._jitter())
