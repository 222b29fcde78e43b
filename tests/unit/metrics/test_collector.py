"""The metrics (mailsocketd/metrics): read from the services' live state at scrape time, with the
documented names, bounded labels, and no counting on the hot path until they are served."""

from __future__ import annotations

import re
from typing import Any, cast

from linerig import Rig
from mailrig import MailReactorClock, account
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.commands import MailBridge
from mailsocketd.line.mail.state import BridgeReactor
from mailsocketd.mail.accounts.service import AccountsService
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.metrics.collector import Metrics

FAMILIES = {  # every family the issue names, with its type
    "mailsocketd_line_connections": "gauge",
    "mailsocketd_line_connections_total": "counter",
    "mailsocketd_line_refused_total": "counter",
    "mailsocketd_commands_total": "counter",
    "mailsocketd_logins_total": "counter",
    "mailsocketd_mail_sessions": "gauge",
    "mailsocketd_watches": "gauge",
    "mailsocketd_sends_total": "counter",
    "mailsocketd_mailbox_messages": "gauge",
    "mailsocketd_mailbox_unseen": "gauge",
    "mailsocketd_account_up": "gauge",
    "mailsocketd_account_last_check_timestamp_seconds": "gauge",
    "mailsocketd_check_duration_seconds": "histogram",
    "process_cpu_seconds_total": "counter",
}


def build(rig: Rig, accounts: AccountsService | None = None) -> Metrics:
    bridge = MailBridge(cast(BridgeReactor, None), LineConfig(), None, None, clock=rig.clock)
    metrics = Metrics(rig.server, bridge, None)
    if accounts is not None:
        metrics.watch_accounts(accounts)
    return metrics


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_every_named_family_is_there_with_its_type():
    rig = Rig()
    watched = AccountsService([account()], cast(Any, MailReactorClock()))
    text = scrape(build(rig, watched))
    found = types(text)
    for name, kind in FAMILIES.items():
        assert found.get(name) == kind, (name, found.get(name))


def test_line_numbers_are_read_from_the_server_at_scrape_time():
    rig = Rig(max_connections_per_peer=2)
    metrics = build(rig)
    metrics.start_counting()
    conns = [rig.connect("127.0.0.2", 40000 + i) for i in range(3)]  # the third is refused
    proto, _ = conns[0]
    # ``help nosuch``: a table command whose handler answers an error line (counted inline)
    proto.dataReceived(b"time\r\ntime\r\nnosuch\r\nhelp time\r\nhelp nosuch\r\n")
    got = samples(scrape(metrics))
    assert got[("mailsocketd_line_connections", ())] == 2
    assert got[("mailsocketd_line_connections_total", ())] == 2
    assert got[("mailsocketd_line_refused_total", (("reason", "max_connections_per_peer"),))] == 1
    assert got[("mailsocketd_line_refused_total", (("reason", "max_connections"),))] == 0
    assert got[("mailsocketd_commands_total", (("command", "time"), ("outcome", "ok")))] == 2
    assert got[("mailsocketd_commands_total",
                (("command", "unknown"), ("outcome", "error")))] == 1
    assert got[("mailsocketd_commands_total", (("command", "help"), ("outcome", "ok")))] == 1
    assert got[("mailsocketd_commands_total",
                (("command", "help"), ("outcome", "error")))] == 1
    assert got[("mailsocketd_logins_total", (("outcome", "ok"),))] == 0
    assert got[("mailsocketd_mail_sessions", ())] == 0


def test_what_clients_type_never_becomes_a_label():
    rig = Rig()
    metrics = build(rig)
    metrics.start_counting()
    proto, _ = rig.connect()
    proto.dataReceived(b"".join(b"cmd%d\r\n" % i for i in range(500)) + b"\xff\xfe\r\n")
    got = samples(scrape(metrics))
    labels = {dict(s[1])["command"] for s in got if s[0] == "mailsocketd_commands_total"}
    assert labels == {*rig.server.commands, "input", "unknown"}  # fixed, whatever is typed
    assert got[("mailsocketd_commands_total",
                (("command", "unknown"), ("outcome", "error")))] == 501


def test_no_counting_on_the_hot_path_until_metrics_are_served():
    rig = Rig()
    metrics = build(rig)
    proto, _ = rig.connect()
    proto.dataReceived(b"time\r\n")
    assert rig.server.command_counts is None
    assert not [s for s in samples(scrape(metrics)) if s[0] == "mailsocketd_commands_total"]


def test_accounts_up_counts_last_check_and_the_latency_histogram():
    rig = Rig()
    watched = AccountsService([account(mailboxes=("INBOX", "Lists/Twisted"))],
                              cast(Any, MailReactorClock()))
    metrics = build(rig, watched)
    state = watched.watchers[0].state
    got = samples(scrape(metrics))
    assert got[("mailsocketd_account_up", (("account", "work"),))] == 0
    assert not [s for s in got if s[0] == "mailsocketd_mailbox_messages"]  # never checked
    state.set_state("idling")
    state.clock.advance(1_800_000_000)  # type: ignore[attr-defined]
    state.record_check("Lists/Twisted", MailboxCounts(12, 3, 0, 100, 7), 0.042)
    got = samples(scrape(metrics))
    box = (("account", "work"), ("mailbox", "Lists/Twisted"))
    assert got[("mailsocketd_account_up", (("account", "work"),))] == 1
    assert got[("mailsocketd_mailbox_messages", box)] == 12
    assert got[("mailsocketd_mailbox_unseen", box)] == 3
    assert got[("mailsocketd_account_last_check_timestamp_seconds", box)] == 1_800_000_000
    assert got[("mailsocketd_check_duration_seconds_count", ())] == 1
    assert got[("mailsocketd_check_duration_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("mailsocketd_check_duration_seconds_bucket", (("le", "0.025"),))] == 0


def test_an_account_added_later_reports_its_checks_from_the_next_scrape():
    rig = Rig()
    watched = AccountsService([], cast(Any, MailReactorClock()))
    metrics = build(rig, watched)
    later = AccountsService([account()], cast(Any, MailReactorClock()))
    watched.watchers.extend(later.watchers)  # as a reload adds one
    scrape(metrics)
    later.watchers[0].state.record_check("INBOX", MailboxCounts(1, 1, 0, 2, 7), 0.5)
    got = samples(scrape(metrics))
    assert got[("mailsocketd_check_duration_seconds_count", ())] == 1


def test_the_registry_is_the_daemons_own():
    from prometheus_client import REGISTRY

    metrics = build(Rig())
    assert metrics.registry is not REGISTRY
    assert "mailsocketd_line_connections" not in generate_latest(REGISTRY).decode()
