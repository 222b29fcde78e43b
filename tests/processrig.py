"""The programs the tests run, and watching the processes they started: has one ended?

``need_program`` finds a program a test runs (nc, promtool, logrotate, systemd-analyze,
setfacl...) or FAILS the test, never skips it: scripts/system-packages.sh installs them all.

A process counts as ended when it no longer exists or is a zombie: children a helper left
behind are reparented, so the test process cannot reap them and ``kill(pid, 0)`` alone would
still find them.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

# where Debian puts programs that a test's PATH may lack (root's tools, under pytest)
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def need_program(name: str) -> str:
    """The path of program ``name``; a missing one fails the test (never a skip)."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SYSTEM_PATH)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/system-packages.sh as root",
                    pytrace=False)
    return path


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
