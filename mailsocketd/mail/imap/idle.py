"""The rule against a busy IDLE loop, shared by the account checks (session.py) and a line
user's ``watch`` (userwatch.py).

* Two IDLE commands on one connection start at least IDLE_MIN_SPACING seconds apart.
* A server that ends IDLE on its own, without news, within IDLE_SHORT seconds, IDLE_SHORT_LIMIT
  times in a row, is polled instead on that connection.  An IDLE that lasted IDLE_SHORT
  seconds (whoever ended it) breaks the row; one we ended, or one that brought news, neither
  counts nor breaks it.
"""

from __future__ import annotations

__all__ = ["IDLE_MIN_SPACING", "IDLE_SHORT", "IDLE_SHORT_LIMIT", "QuickIdleEnds"]

IDLE_MIN_SPACING = 1.0  # seconds between two IDLE starts, at least
IDLE_SHORT = 5.0  # an IDLE the server ends sooner than this, without news, ended "at once"
IDLE_SHORT_LIMIT = 3  # that many in a row: poll instead of IDLE on this connection


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
