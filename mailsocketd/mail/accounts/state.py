"""What is known about one account: its connection state and each mailbox's last check.

This is the data behind the line service's ``status`` lines and the structured log events; it
knows nothing of the network.  Every check result is kept (time, latency, counts, error) and
logged as a ``event="check"`` event; UIDNEXT growing between two checks of the same
mailbox is new mail, even across a UIDVALIDITY that changed while the messages did not (a
Courier folder's, until it settles: ``imap/uidvalidity.py``), logged as ``event="new_mail"``
and passed to the ``on_new_mail`` callback (the hook).  The first check after start-up sets
the baseline.

Errors follow the account's current state: a failed connection (``connection_failed``) is the
error of every line and clears the mailboxes' own errors, which belonged to the session that
ended; a login clears the connection error, since the connection works again.  A mailbox's own
error (STATUS refused) is shown only while the account is logged in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from twisted.logger import Logger

from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.errors import clean_text
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.uidvalidity import compare
from mailsocketd.mail.tls import ReactorClock
from mailsocketd.timefmt import format_time

__all__ = ["STATES", "AccountState", "MailboxRecord", "StateName"]

# Connection states as shown by ``status`` (one word each, so the lines stay easy to parse).
StateName = Literal["stopped", "connecting", "logging-in", "checking", "idling", "connected",
                    "backing-off", "auth-failed"]
STATES: tuple[StateName, ...] = get_args(StateName)

NewMailCallback = Callable[[str, MailboxCounts, int], None]


@dataclass
class MailboxRecord:
    """The last good check of one mailbox; ``error`` is set when the latest attempt failed."""

    name: str
    counts: MailboxCounts | None = None
    last_check: float | None = None
    latency: float | None = None
    error: str | None = None
    checks: int = 0
    new_mail: int = 0


class AccountState:
    """Connection state and per-mailbox results of one account; logs every change of note."""

    log = Logger()

    def __init__(self, account: AccountConfig, clock: ReactorClock,
                 on_new_mail: NewMailCallback | None = None) -> None:
        self.account = account
        self.clock = clock
        self.on_new_mail = on_new_mail
        # Told each good check's latency (the metrics' histogram sets it).
        self.on_check: Callable[[float], None] | None = None
        self.state: StateName = "stopped"
        self.error: str | None = None
        self.mailboxes = {name: MailboxRecord(name) for name in account.mailboxes}

    def set_state(self, state: StateName) -> None:
        """Not logged by itself: the events that cause changes of note are."""
        self.state = state

    def connection_failed(self, error: str, state: StateName, retry_in: float | None
                          ) -> None:
        """The connection failed or broke: remember why, say when the next attempt comes.

        The mailboxes' own errors were found on the connection that is gone: they are stale.
        """
        self.error = clean_text(error)
        for record in self.mailboxes.values():
            record.error = None
        self.set_state(state)
        self.log.warn("{account}: {error}; next attempt in {retry_in:.0f} s",
                      account=self.account.name, error=self.error, state=state,
                      retry_in=retry_in if retry_in is not None else 0.0,
                      event="connection_failed")

    def logged_in(self, encrypted: bool) -> None:
        """A session logged in: the last connection error is history."""
        self.error = None
        self.log.info("{account}: logged in to {server} as {user}",
                      account=self.account.name, server=str(self.account.address),
                      user=self.account.user, tls=encrypted, event="logged_in")

    def record_check(self, mailbox: str, counts: MailboxCounts, latency: float) -> None:
        """A STATUS answer arrived: keep it, log it, and tell of new mail."""
        record = self.mailboxes[mailbox]
        previous = record.counts
        record.counts, record.latency, record.error = counts, latency, None
        record.last_check = self.clock.seconds()
        record.checks += 1
        self.error = None
        if self.on_check is not None:
            self.on_check(latency)
        self.log.info(
            "{account} {mailbox}: {messages} messages, {unseen} unseen, {latency:.3f} s",
            account=self.account.name, mailbox=mailbox, messages=counts.messages,
            unseen=counts.unseen, recent=counts.recent, uidnext=counts.uidnext,
            uidvalidity=counts.uidvalidity, latency=latency, event="check")
        self._detect_new_mail(record, previous, counts)

    def _detect_new_mail(self, record: MailboxRecord, previous: MailboxCounts | None,
                         counts: MailboxCounts) -> None:
        if previous is None:
            return
        change = compare(previous, counts)
        if change.continuity == "recreated":
            self.log.info("{account} {mailbox}: UIDVALIDITY changed; counting afresh",
                          account=self.account.name, mailbox=record.name,
                          event="uidvalidity_changed")
            return
        if change.new <= 0:
            return
        record.new_mail += change.new
        self.log.info("{account} {mailbox}: new mail ({new} new, {unseen} unseen)",
                      account=self.account.name, mailbox=record.name, new=change.new,
                      messages=counts.messages, unseen=counts.unseen,
                      uidnext=counts.uidnext, event="new_mail")
        if self.on_new_mail is not None:
            self.on_new_mail(record.name, counts, change.new)

    def record_check_error(self, mailbox: str, error: str) -> None:
        """A check of one mailbox failed while the connection stayed usable."""
        record = self.mailboxes[mailbox]
        record.error = clean_text(error)
        self.log.warn("{account} {mailbox}: check failed: {error}", account=self.account.name,
                      mailbox=mailbox, error=record.error, event="check_failed")

    def status_lines(self, detailed: bool = True) -> list[str]:
        """One line per mailbox for the line service's ``status``; without ``detailed`` an
        error is only ``error=yes``: its text may hold file paths or a server's words, which
        only local clients (and the log) are shown."""
        return [self._status_line(record, detailed) for record in self.mailboxes.values()]

    def _status_line(self, record: MailboxRecord, detailed: bool = True) -> str:
        counts = record.counts
        error = self.error or record.error
        if error and not detailed:
            error = "yes"
        fields = [
            f"state={self.state}",
            f"messages={counts.messages if counts else '-'}",
            f"unseen={counts.unseen if counts else '-'}",
            "last_check=" + (format_time(record.last_check) if record.last_check else "-"),
            f"latency={record.latency:.3f}s" if record.latency is not None else "latency=-",
            f"error={error or '-'}",
        ]
        return f"account {self.account.name} {record.name}: " + " ".join(fields)
