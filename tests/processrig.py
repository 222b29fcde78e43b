"""Watching the processes a test's helper programs started: has one ended?

A process counts as ended when it no longer exists or is a zombie: children a helper left
behind are reparented, so the test process cannot reap them and ``kill(pid, 0)`` alone would
still find them.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater


def ended(pid: int) -> bool:
    """No such process, or a zombie (reparented, not ours to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def ended_within(pid: int, within: float = 5.0) -> bool:
    """Whether ``pid`` ends within ``within`` seconds (polled every 50 ms)."""
    deadline = time.monotonic() + within
    while not ended(pid):
        if time.monotonic() > deadline:
            return False
        await deferLater(IReactorTime(reactor), 0.05, lambda: None)
    return True
