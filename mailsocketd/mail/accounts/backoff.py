"""How long to wait before reconnecting: jittered exponential backoff that remembers.

ClientService resets its own attempt counter whenever a TCP connection is made, which would let
a server that accepts and then drops every session be hammered at the initial delay.  So the
``Backoff.delay`` given to ClientService as its retry policy ignores that counter and keeps its
own: it grows with every lost or failed connection and is forgiven only when a logged-in session
stayed up for ``healthy_after`` seconds.  A rejected login (wrong password, no usable TLS, an
unreadable password file) waits much longer, starting at minutes, so that a bad password is
never hammered against the server (and its fail2ban).
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
                 factor: float = 2.0, healthy_after: float = 60.0,
                 auth_initial: float = 300.0, auth_maximum: float = 3600.0,
                 jitter: Callable[[], float] = random.random) -> None:
        self._clock = clock
        self._curve = backoffPolicy(initial, maximum, factor, jitter=lambda: 0.0)
        self._auth_curve = backoffPolicy(auth_initial, auth_maximum, factor, jitter=lambda: 0.0)
        self._healthy_after = healthy_after
        self._jitter = jitter
        self.failures = 0
        self.auth_failures = 0
        self._auth_pending = False
        self._logged_in_at: float | None = None

    def logged_in(self) -> None:
        """A session logged in: the credentials work; the clock for 'healthy' starts."""
        self._logged_in_at = self._clock.seconds()
        self.auth_failures = 0

    def auth_failed(self) -> None:
        """The next delay is the long one, and it grows with each rejected login in a row."""
        self.auth_failures += 1
        self._auth_pending = True

    def _forgive_if_healthy(self) -> None:
        if self._logged_in_at is not None:
            if self._clock.seconds() - self._logged_in_at >= self._healthy_after:
                self.failures = 0
            self._logged_in_at = None

    def delay(self, attempt: int = 0) -> float:
        """Seconds to wait before the next attempt (ClientService's ``retryPolicy``).

        ``attempt`` (ClientService's own count) is ignored: see the module docstring.
        """
        self._forgive_if_healthy()
        if self._auth_pending:
            self._auth_pending = False
            base = self._auth_curve(self.auth_failures - 1)
        else:
            self.failures += 1
            base = self._curve(self.failures - 1)
        return base * (0.75 + 0.5 * self._jitter())
