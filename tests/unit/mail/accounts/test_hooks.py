"""The on_new_mail hook: debounced per mailbox, no shell, facts as arguments and environment,
a minimal environment (no password variable), and nothing left scheduled after stop()."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest_twisted
from mailrig import account, global_reactor
from processrig import ended
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport, IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from mailsocketd.mail.accounts.hooks import NewMailHook
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.process import SETSID

NOTIFY = sys.executable  # a program that exists: run_process checks before it spawns
WRAP = [SETSID, "--"] if SETSID else []  # each helper starts through setsid(1): a group of its own


class ProcessTransport:
    """The part of IProcessTransport that the hook (run_process) uses."""

    def __init__(self):
        self.signals: list[str] = []

    def closeStdin(self):
        pass

    def signalProcess(self, name):
        self.signals.append(name)


class ProcessReactor(Clock):
    """A clock that records spawnProcess calls; the test ends the processes."""

    def __init__(self):
        super().__init__()
        self.spawned: list[tuple[IProcessProtocol, bytes | str, Sequence[bytes | str],
                                 Mapping[str, str] | None, ProcessTransport]] = []

    def spawnProcess(self, processProtocol: IProcessProtocol, executable: bytes | str,
                     args: Sequence[bytes | str], *, env: Mapping[str, str] | None = None,
                     **kw: Any) -> IProcessTransport:
        transport = ProcessTransport()
        # partial on purpose: only the calls run_process makes, so that any other one fails
        as_process = cast(IProcessTransport, transport)
        processProtocol.makeConnection(as_process)
        self.spawned.append((processProtocol, executable, args, env, transport))
        return as_process

    def end(self, index, code=0):
        protocol = self.spawned[index][0]
        reason = ProcessDone(0) if code == 0 else ProcessTerminated(code)
        protocol.processEnded(Failure(reason))


def counts(messages, unseen=1, uidnext=None):
    return MailboxCounts(messages, unseen, 0, uidnext or messages + 1, 7)


def hook(delay=2.0, **environ):
    reactor = ProcessReactor()
    acct = account(on_new_mail=(NOTIFY, "--quiet"), on_new_mail_delay=delay)
    return NewMailHook(acct, reactor, environ), reactor


def test_a_burst_of_50_runs_the_hook_once():
    h, reactor = hook(PATH="/usr/bin", HOME="/home/alice", PW="secret", LANG="C.UTF-8")
    for n in range(1, 51):
        h.notify("INBOX", counts(n, unseen=n), 1)
        reactor.advance(0.01)
    assert reactor.spawned == []
    reactor.advance(2)
    assert len(reactor.spawned) == 1
    _, executable, args, env, _ = reactor.spawned[0]
    assert executable == (WRAP or [NOTIFY])[0]
    assert args == [*WRAP, NOTIFY, "--quiet", "work", "INBOX", "50", "50", "50"]
    assert env == {
        "PATH": "/usr/bin", "HOME": "/home/alice", "LANG": "C.UTF-8",
        "MAILSOCKETD_ACCOUNT": "work", "MAILSOCKETD_MAILBOX": "INBOX", "MAILSOCKETD_NEW": "50",
        "MAILSOCKETD_MESSAGES": "50", "MAILSOCKETD_UNSEEN": "50", "MAILSOCKETD_RECENT": "0",
        "MAILSOCKETD_UIDNEXT": "51",
    }
    reactor.end(0)
    reactor.advance(60)
    assert len(reactor.spawned) == 1 and h.runs == 1


def test_news_while_running_runs_once_more_afterwards():
    h, reactor = hook()
    h.notify("INBOX", counts(1), 1)
    reactor.advance(2)
    h.notify("INBOX", counts(2), 1)
    h.notify("INBOX", counts(3), 1)
    reactor.advance(10)
    assert len(reactor.spawned) == 1  # never two at once for a mailbox
    reactor.end(0, code=3)  # a failing hook is logged, and does not stop the next run
    reactor.advance(2)
    assert len(reactor.spawned) == 2
    assert reactor.spawned[1][2][-3:] == ["2", "3", "1"]


def test_mailboxes_are_debounced_separately():
    h, reactor = hook()
    h.notify("INBOX", counts(1), 1)
    h.notify("Lists", counts(9), 2)
    reactor.advance(2)
    assert sorted(s[2][-4] for s in reactor.spawned) == ["INBOX", "Lists"]


def test_a_hanging_hook_is_killed():
    h, reactor = hook()
    h.notify("INBOX", counts(1), 1)
    reactor.advance(2)
    reactor.advance(60)
    assert reactor.spawned[0][4].signals == ["KILL"]


def test_stop_cancels_pending_runs_and_kills_running_ones():
    h, reactor = hook()
    h.notify("INBOX", counts(1), 1)
    reactor.advance(2)
    h.notify("Lists", counts(1), 1)
    h.stop()
    assert reactor.getDelayedCalls() == []
    assert reactor.spawned[0][4].signals == ["KILL"]
    h.notify("INBOX", counts(2), 1)
    assert reactor.getDelayedCalls() == []


def test_no_hook_configured_does_nothing():
    reactor = ProcessReactor()
    h = NewMailHook(account(), reactor, {})
    h.notify("INBOX", counts(1), 1)
    assert reactor.getDelayedCalls() == [] and reactor.spawned == []


def test_mail_spread_over_a_burst_still_runs_the_hook_once():
    h, reactor = hook(delay=2.0, PATH="/usr/bin")
    for n in range(1, 51):  # 50 messages over 5 s: never 2 s of quiet
        h.notify("INBOX", counts(n), 1)
        reactor.advance(0.1)
    assert reactor.spawned == []
    reactor.advance(2)
    assert len(reactor.spawned) == 1
    assert reactor.spawned[0][2][-3] == "50"  # NEW MESSAGES UNSEEN: all 50 in one run


def test_a_steady_trickle_runs_the_hook_at_least_every_max_wait():
    h, reactor = hook(delay=2.0, PATH="/usr/bin")
    for n in range(1, 41):  # one message a second for 40 s
        h.notify("INBOX", counts(n), 1)
        reactor.advance(1)
    assert len(reactor.spawned) == 1


# -- real programs with children (issue 11, item 15) ----------------------------------------------

def _starting_a_child(pid_file: str, then: str = "") -> tuple[str, ...]:
    """A hook (python) that starts a 30 s child holding its output and writes its pid."""
    return (sys.executable, "-c",
            "import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
            f"open({pid_file!r}, 'w').write(str(child.pid))\n" + then)


async def _until(predicate, within=5.0, what="the condition"):
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {within} s"
        await deferLater(cast(IReactorTime, global_reactor()), 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_hook_that_leaves_a_child_running_does_not_stall_the_next_run(tmp_path):
    pid_file = tmp_path / "child"
    acct = account(on_new_mail=_starting_a_child(str(pid_file)), on_new_mail_delay=0.05)
    h = NewMailHook(acct, global_reactor(), {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    with capturedLogs() as events:
        h.notify("INBOX", counts(1), 1)
        await _until(lambda: h.runs == 1 and not h._running, what="the first run's end")
        first_child = int(pid_file.read_text())
        pid_file.unlink()
        h.notify("INBOX", counts(2), 1)
        await _until(lambda: h.runs == 2 and not h._running, what="the second run's end")
    outcomes = [e["outcome"] for e in events if e.get("event") == "hook"]
    assert outcomes == ["exited with status 0"] * 2  # not "timed out after 60 s"
    await _until(lambda: ended(first_child) and ended(int(pid_file.read_text())),
                 what="the children's end")
    h.stop()


@pytest_twisted.ensureDeferred
async def test_stop_kills_a_hanging_hook_and_its_child(tmp_path):
    pid_file = tmp_path / "child"
    acct = account(on_new_mail=_starting_a_child(str(pid_file), "import time; time.sleep(60)"),
                   on_new_mail_delay=0.05)
    h = NewMailHook(acct, global_reactor(), {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    h.notify("INBOX", counts(1), 1)
    await _until(lambda: pid_file.exists() and pid_file.read_text(), what="the child's start")
    h.stop()  # the daemon stops
    await _until(lambda: ended(int(pid_file.read_text())), what="the child's end")
    await _until(lambda: not h._running, what="the run's end")
