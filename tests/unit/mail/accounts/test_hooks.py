"""The on_new_mail hook: debounced per mailbox, no shell, facts as arguments and environment,
a minimal environment (no password variable), and nothing left scheduled after stop()."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from mailrig import account
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mailsocketd.mail.accounts.hooks import NewMailHook
from mailsocketd.mail.imap.client import MailboxCounts


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
    acct = account(on_new_mail=("/usr/local/bin/notify", "--quiet"), on_new_mail_delay=delay)
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
    assert executable == "/usr/local/bin/notify"
    assert args == ["/usr/local/bin/notify", "--quiet", "work", "INBOX", "50", "50", "50"]
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
    assert sorted(s[2][3] for s in reactor.spawned) == ["INBOX", "Lists"]


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
