"""The ``on_new_mail`` hook: a command run (no shell) when new mail arrives, debounced.

For each mailbox, the first piece of news starts a timer of ``on_new_mail_delay`` seconds; what
arrives meanwhile is folded in, and the command runs once with the latest counts and the sum of
new messages.  News that comes while the command runs makes it run once more afterwards.  So a
burst of 50 messages runs it once, a steady trickle at most once per delay, and never two at a
time for one mailbox.

The command gets the facts as arguments appended to the configured argv
(``ACCOUNT MAILBOX NEW MESSAGES UNSEEN``) and as ``MAILSOCKETD_*`` environment variables.  Its
environment is otherwise minimal (PATH, HOME, locale and the session-bus variables desktop
notifiers need): the daemon's own environment may hold a password (``password_env``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.process import (
    ProcessReactor,
    ProcessResult,
    run_process,
    scrubbed_environment,
)

__all__ = ["HOOK_TIMEOUT", "NewMailHook", "hook_environment"]

HOOK_TIMEOUT = 60.0
MAX_WAIT = 30.0  # a steady trickle of mail still runs the hook at least this often


def hook_environment(account: str, mailbox: str, counts: MailboxCounts, new: int,
                     base: Mapping[str, str]) -> dict[str, str]:
    """The hook's environment: the scrubbed one every helper gets, plus the facts."""
    env = scrubbed_environment(base)
    env.update({
        "MAILSOCKETD_ACCOUNT": account,
        "MAILSOCKETD_MAILBOX": mailbox,
        "MAILSOCKETD_NEW": str(new),
        "MAILSOCKETD_MESSAGES": str(counts.messages),
        "MAILSOCKETD_UNSEEN": str(counts.unseen),
        "MAILSOCKETD_RECENT": str(counts.recent),
        "MAILSOCKETD_UIDNEXT": str(counts.uidnext),
    })
    return env


@dataclass
class _Pending:
    """One mailbox's hook state: news folded in, a timer, whether it runs right now."""

    new: int = 0
    first: float = 0.0  # when the first news of this burst came
    counts: MailboxCounts | None = None
    timer: IDelayedCall | None = field(default=None, repr=False)
    running: bool = False


class NewMailHook:
    """Runs an account's ``on_new_mail`` command, debounced per mailbox (see module doc)."""

    log = Logger()

    def __init__(self, account: AccountConfig, reactor: ProcessReactor,
                 environ: Mapping[str, str] | None = None) -> None:
        self.account = account
        self.reactor = reactor
        self.environ = os.environ if environ is None else environ
        self.runs = 0
        self._pending: dict[str, _Pending] = {}
        self._running: set[Deferred[None]] = set()
        self._stopped = False

    def notify(self, mailbox: str, counts: MailboxCounts, new: int) -> None:
        """News of ``new`` messages in ``mailbox``: run the hook soon (once per burst)."""
        if self.account.on_new_mail is None or self._stopped:
            return
        pending = self._pending.setdefault(mailbox, _Pending())
        pending.new += new
        pending.counts = counts
        delay = self.account.on_new_mail_delay
        now = self.reactor.seconds()
        if pending.timer is None and not pending.running:
            pending.first = now
            pending.timer = self.reactor.callLater(delay, self._run, mailbox)
        elif pending.timer is not None and now + delay - pending.first <= max(MAX_WAIT, delay):
            pending.timer.reset(delay)  # more news: wait for the burst to end (up to MAX_WAIT)

    def _run(self, mailbox: str) -> None:
        pending = self._pending[mailbox]
        pending.timer = None
        if pending.counts is None or self.account.on_new_mail is None:
            return
        counts, new = pending.counts, pending.new
        pending.new, pending.running = 0, True
        argv = [*self.account.on_new_mail, self.account.name, mailbox, str(new),
                str(counts.messages), str(counts.unseen)]
        env = hook_environment(self.account.name, mailbox, counts, new, self.environ)
        self.runs += 1
        d = run_process(self.reactor, argv, env, HOOK_TIMEOUT, max_output=0)
        done = d.addCallbacks(self._ended, self._not_started, callbackArgs=(mailbox,),
                              errbackArgs=(mailbox,))
        self._running.add(done)
        done.addBoth(lambda _: self._running.discard(done))

    def _ended(self, result: ProcessResult, mailbox: str) -> None:
        level = self.log.info if result.ok else self.log.warn
        level("{account} {mailbox}: on_new_mail {outcome}", account=self.account.name,
              mailbox=mailbox, outcome=result.describe(), exit_code=result.exit_code,
              event="hook")
        self._after_run(mailbox)

    def _not_started(self, failure: Failure, mailbox: str) -> None:
        if isinstance(failure.value, CancelledError):
            return
        self.log.error("{account} {mailbox}: on_new_mail: {error}", account=self.account.name,
                       mailbox=mailbox, error=str(failure.value), event="hook")
        self._after_run(mailbox)

    def _after_run(self, mailbox: str) -> None:
        pending = self._pending[mailbox]
        pending.running = False
        if pending.new and not self._stopped:
            pending.timer = self.reactor.callLater(self.account.on_new_mail_delay,
                                                   self._run, mailbox)

    def stop(self) -> None:
        """Cancel every pending run and kill a command still running (the daemon stops)."""
        self._stopped = True
        for pending in self._pending.values():
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
            pending.timer = None
        for running in list(self._running):
            running.cancel()
