"""Mail-side anchor in Python: what a script using the standard library's imaplib pays per check.

    python imaplib_anchor.py PORT USER PASSWORD ROUNDS

Measures, each as the median over its rounds: a fresh connection + LOGIN + STATUS + LOGOUT per
check; a STATUS on one connection kept open; a FETCH of the 20 newest ENVELOPEs on a selected
(read-only) mailbox.  Prints one line: ``imaplib fresh_status_ms=.. open_status_ms=..
fetch20_ms=.. messages=N``.  Loopback only, cleartext (the benchmark's Dovecot has no TLS).
"""

from __future__ import annotations

import imaplib
import re
import statistics
import sys
import time
from collections.abc import Callable

HOST = "127.0.0.1"
ITEMS = "(MESSAGES UNSEEN RECENT)"


def timed_ms(action: Callable[[], object], rounds: int) -> float:
    """Median wall time of ``action`` over ``rounds`` calls, in milliseconds."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        action()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def fresh_status(port: int, user: str, password: str) -> None:
    """The way a cron script checks: connect, log in, STATUS, log out."""
    conn = imaplib.IMAP4(HOST, port, timeout=30)
    conn.login(user, password)
    conn.status("INBOX", ITEMS)
    conn.logout()


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    port, user, password, rounds = int(argv[1]), argv[2], argv[3], int(argv[4])
    fresh = timed_ms(lambda: fresh_status(port, user, password), rounds)
    conn = imaplib.IMAP4(HOST, port, timeout=30)
    conn.login(user, password)
    open_status = timed_ms(lambda: conn.status("INBOX", ITEMS), rounds * 10)
    _, data = conn.select("INBOX", readonly=True)
    messages = int(data[0] or b"0")
    first = max(1, messages - 19)
    fetch20 = timed_ms(lambda: conn.fetch(f"{first}:{messages}", "(ENVELOPE)"), rounds * 10)
    _, status = conn.status("INBOX", ITEMS)
    conn.logout()
    found = re.search(rb"MESSAGES (\d+)", status[0] if isinstance(status[0], bytes) else b"")
    print(f"imaplib fresh_status_ms={fresh:.3f} open_status_ms={open_status:.3f} "
          f"fetch20_ms={fetch20:.3f} messages={int(found.group(1)) if found else messages}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
