"""The daemon's metrics, read at scrape time from the state the services keep anyway.

Nothing here runs on the line service's hot path: the gauges (open connections, mail sessions,
watches, each mailbox's counts, each account's state) and most counters (connections, refusals,
logins, sends) are numbers the line server, the mail bridge and the account states hold for
``status`` already, and are read when Prometheus asks.  Only two things are kept as they
happen: requests by command and outcome (``LineServer.count_commands``, a dict increment) and
the check latency histogram (``AccountState.on_check``).

Label values are bounded: a command label is a command of the table, ``input`` or ``unknown``
(what a client types never becomes a label); outcomes and refusal reasons are fixed sets;
accounts and mailboxes come from the configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mailsocketd import __version__
from mailsocketd.line.mail.commands import MailBridge
from mailsocketd.line.mail.state import LOGIN_OUTCOMES, SEND_OUTCOMES
from mailsocketd.line.server import LineServer
from mailsocketd.mail.accounts.service import AccountsService, AccountWatcher
from mailsocketd.mail.accounts.state import AccountState

__all__ = ["UP_STATES", "DaemonCollector", "Metrics"]

# An account is up while it is logged in: checking, idling, or waiting between polls.
UP_STATES = frozenset({"checking", "idling", "connected"})


class DaemonCollector:
    """A prometheus_client collector over the daemon's live state (see the module docstring)."""

    def __init__(self, server: LineServer, bridge: MailBridge,
                 accounts: AccountsService | None,
                 on_watcher: Callable[[AccountState], None] | None = None) -> None:
        self.server = server
        self.bridge = bridge
        self.accounts = accounts
        self.on_watcher = on_watcher

    def collect(self) -> Iterator[Metric]:
        yield from self._line()
        yield from self._mail_users()
        yield from self._accounts(self.watchers())
        info = GaugeMetricFamily("mailsocketd_build_info", "The running version (always 1).",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def _line(self) -> Iterator[Metric]:
        server = self.server
        yield GaugeMetricFamily("mailsocketd_line_connections",
                                "Line connections open now.", value=server.open_connections)
        yield CounterMetricFamily("mailsocketd_line_connections",
                                  "Line connections admitted since start.",
                                  value=server.total_connections)
        refused = CounterMetricFamily("mailsocketd_line_refused",
                                      "Line connections refused, by reason.", labels=["reason"])
        for reason, count in server.refused.items():
            refused.add_metric([reason], count)
        yield refused
        commands = CounterMetricFamily(
            "mailsocketd_commands", "Line requests served, by command and outcome (error: "
            "the reply was an error line).", labels=["command", "outcome"])
        counts = server.command_counts
        if counts is not None:
            for command, (ok, failed) in counts.items():
                commands.add_metric([command, "ok"], ok)
                commands.add_metric([command, "error"], failed)
        yield commands

    def _mail_users(self) -> Iterator[Metric]:
        bridge = self.bridge
        logins = CounterMetricFamily("mailsocketd_logins", "Line users' logins, by outcome.",
                                     labels=["outcome"])
        for outcome in LOGIN_OUTCOMES:
            logins.add_metric([outcome], bridge.logins[outcome])
        yield logins
        sessions, watching = bridge.session_counts()
        yield GaugeMetricFamily("mailsocketd_mail_sessions",
                                "Line users logged in to the mail server now.", value=sessions)
        yield GaugeMetricFamily("mailsocketd_watches",
                                "Line users watching a mailbox now.", value=watching)
        sends = CounterMetricFamily("mailsocketd_sends", "Messages sent with 'send', by "
                                    "outcome.", labels=["outcome"])
        for outcome in SEND_OUTCOMES:
            sends.add_metric([outcome], bridge.sends[outcome])
        yield sends

    def watchers(self) -> list[AccountWatcher]:
        watchers = list(self.accounts.watchers) if self.accounts is not None else []
        if self.on_watcher is not None:  # accounts a reload added get the histogram too
            for watcher in watchers:
                self.on_watcher(watcher.state)
        return watchers

    @staticmethod
    def _accounts(watchers: Iterable[AccountWatcher]) -> Iterator[Metric]:
        up = GaugeMetricFamily("mailsocketd_account_up", "1 while the account is logged in "
                               "and being checked, else 0.", labels=["account"])
        messages = GaugeMetricFamily("mailsocketd_mailbox_messages", "Messages in the "
                                     "mailbox at its last check.", labels=["account", "mailbox"])
        unseen = GaugeMetricFamily("mailsocketd_mailbox_unseen", "Unseen messages in the "
                                   "mailbox at its last check.", labels=["account", "mailbox"])
        last = GaugeMetricFamily("mailsocketd_account_last_check_timestamp_seconds",
                                 "When the mailbox was last checked (Unix time).",
                                 labels=["account", "mailbox"])
        for watcher in watchers:
            state = watcher.state
            name = state.account.name
            up.add_metric([name], 1 if state.state in UP_STATES else 0)
            for record in state.mailboxes.values():
                if record.counts is not None:
                    messages.add_metric([name, record.name], record.counts.messages)
                    unseen.add_metric([name, record.name], record.counts.unseen)
                if record.last_check is not None:
                    last.add_metric([name, record.name], record.last_check)
        yield from (up, messages, unseen, last)


class Metrics:
    """The daemon's own registry (not prometheus_client's global one): the collector over its
    state, the check latency histogram and the process collector (CPU, memory, open files)."""

    def __init__(self, server: LineServer, bridge: MailBridge,
                 accounts: AccountsService | None) -> None:
        self.server = server
        self.registry = CollectorRegistry()
        self.check_duration = Histogram(
            "mailsocketd_check_duration_seconds",
            "Time from a mailbox check's STATUS command to its answer.",
            registry=self.registry)
        self.collector = DaemonCollector(server, bridge, accounts, self.observe_checks)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.collector.watchers()  # wires the histogram to the accounts there are now

    def watch_accounts(self, accounts: AccountsService) -> None:
        """Report on these accounts (built after the listeners, which need the site)."""
        self.collector.accounts = accounts
        self.collector.watchers()

    def observe_checks(self, state: AccountState) -> None:
        """Have ``state`` report each check's latency to the histogram."""
        if state.on_check is None:
            state.on_check = self.check_duration.observe

    def start_counting(self) -> None:
        """Count requests by command from now on (the only counting on the hot path)."""
        self.server.count_commands()

