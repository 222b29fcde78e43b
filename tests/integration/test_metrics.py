"""``[metrics]`` on the real daemon: ``GET /metrics`` over HTTP shows the line service, the line
users' logins, sessions, watches and sends, and a real Dovecot account's checks; promtool (the
Debian package prometheus) finds the output clean, and the alert rules of docs/operations.md
valid and firing when they should."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from daemon import Daemon, free_port, start_daemon
from lineclient import LineClient
from mailrig import account_toml, write_password
from mailserver import MailServer
from processrig import need_program
from prometheus_client.parser import text_string_to_metric_families
from test_mail_commands import mail_config

pytestmark = pytest.mark.timeout(120)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback http)
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], ""


def values(text: str) -> dict[str, float]:
    """``name{label="v",...}`` -> value, labels sorted by name."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return found


def wait_metric(url: str, sample: str, wanted: float, timeout: float = 20.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        got = values(get(url)[2])
        if got.get(sample) == wanted:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{sample} never became {wanted}: {got.get(sample)}")
        time.sleep(0.1)


@pytest.fixture
def metrics_daemon(mailserver: MailServer, tmp_path: Path):
    box = "M" + uuid.uuid4().hex[:10]
    mailserver.populate("bob", 3, box)
    port = free_port()
    config = (mail_config(mailserver, login_failures=10)
              + f'[metrics]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
              + account_toml("work", server=f"tls:127.0.0.1:{mailserver.imaps_port}",
                             user="bob", password_file=write_password(
                                 tmp_path, mailserver.users["bob"]),
                             ca_file=str(mailserver.ca_file), mailboxes=[box]))
    daemon = start_daemon(tmp_path, config_toml=config)
    try:
        yield daemon, f"http://127.0.0.1:{port}/metrics", box
    finally:
        daemon.stop()


def test_metrics_of_a_real_daemon(metrics_daemon: tuple[Daemon, str, str],
                                  mailserver: MailServer, tmp_path: Path):
    daemon, url, box = metrics_daemon
    got = wait_metric(url, f'mailsocketd_mailbox_messages{{account="work",mailbox="{box}"}}', 3)
    assert got['mailsocketd_account_up{account="work"}'] == 1
    assert got[f'mailsocketd_mailbox_unseen{{account="work",mailbox="{box}"}}'] == 3
    stamp = got[f'mailsocketd_account_last_check_timestamp_seconds{{account="work",'
                f'mailbox="{box}"}}']
    assert abs(stamp - time.time()) < 60
    assert got["mailsocketd_check_duration_seconds_count"] >= 1
    assert got["process_open_fds"] > 0

    with LineClient.connect(daemon.port) as alice:
        assert alice.ask("time").startswith("20")
        assert alice.ask("no-such-command").startswith("error: unknown command")
        assert alice.ask("login alice wrong").startswith("error: login failed")
        assert alice.ask(f"login alice {mailserver.users['alice']}").startswith("ok logged in")
        assert alice.ask("watch on").startswith("ok watching")
        assert alice.ask("send alice@" + mailserver.domain).startswith("ok ready")
        for line in ("Subject: counted", "", "hello", "."):
            alice.send(line)
        assert alice.line().startswith("ok sent")
        got = values(get(url)[2])
        assert got["mailsocketd_line_connections"] == 1
        assert got["mailsocketd_mail_sessions"] == 1
        assert got["mailsocketd_watches"] == 1
        assert got['mailsocketd_logins_total{outcome="failed"}'] == 1
        assert got['mailsocketd_logins_total{outcome="ok"}'] == 1
        assert got['mailsocketd_sends_total{outcome="sent"}'] == 1
        assert got['mailsocketd_commands_total{command="time",outcome="ok"}'] == 1
        assert got['mailsocketd_commands_total{command="unknown",outcome="error"}'] == 1
        assert got['mailsocketd_commands_total{command="input",outcome="ok"}'] == 1
    got = wait_metric(url, "mailsocketd_mail_sessions", 0)
    assert got["mailsocketd_line_connections_total"] >= 1

    status, content_type, text = get(url)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    check = subprocess.run([need_program("promtool"), "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert get(url.removesuffix("metrics") + "other")[0] == 404


def alert_rules() -> str:
    """The alert rules of docs/operations.md (its first yaml block with ``groups:``)."""
    blocks: list[str] = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    return next(b for b in blocks if b.startswith("groups:"))


RULE_TESTS = """\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mailsocketd_account_up{account="work", instance="a", job="mailsocketd"}'
        values: '1 1 0x20'
      - series: 'mailsocketd_account_last_check_timestamp_seconds{account="work", mailbox="INBOX", instance="a", job="mailsocketd"}'
        values: '0+60x5 300x30'
      - series: 'mailsocketd_line_refused_total{reason="max_connections_per_peer", instance="a", job="mailsocketd"}'
        values: '0+100x20'
    alert_rule_test:
      - eval_time: 1m
        alertname: MailsocketdAccountDown
        exp_alerts: []
      - eval_time: 20m
        alertname: MailsocketdAccountDown
        exp_alerts:
          - exp_labels: {severity: warning, account: work, instance: a, job: mailsocketd}
            exp_annotations:
              summary: "mailsocketd account work is not logged in"
              description: "Not logged in for 10 minutes: see 'status' and the connection_failed events."
      - eval_time: 4m
        alertname: MailsocketdCheckStale
        exp_alerts: []
      - eval_time: 30m
        alertname: MailsocketdCheckStale
        exp_alerts:
          - exp_labels: {severity: warning, account: work, mailbox: INBOX, instance: a, job: mailsocketd}
            exp_annotations:
              summary: "work INBOX not checked for 15 minutes"
              description: "Checks run every [accounts.NAME] interval (300 s by default); raise the threshold above yours."
      - eval_time: 15m
        alertname: MailsocketdConnectionsRefused
        exp_alerts:
          - exp_labels: {severity: warning, reason: max_connections_per_peer, instance: a, job: mailsocketd}
            exp_annotations:
              summary: "mailsocketd refuses connections (max_connections_per_peer)"
              description: "Raise [line] max_connections / max_connections_per_peer, or find the client."
"""


def test_the_documented_alert_rules_are_valid_and_fire(tmp_path: Path):
    promtool = need_program("promtool")
    rules = tmp_path / "rules.yml"
    rules.write_text(alert_rules())
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 3 rules found" in check.stdout, check.stdout
    (tmp_path / "tests.yml").write_text(RULE_TESTS)
    run = subprocess.run([promtool, "test", "rules", "tests.yml"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its sockets' inodes in /proc/net/tcp*)."""
    fds = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fds.iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_off_by_default_and_turned_on_by_a_reload(tmp_path: Path):
    daemon = start_daemon(tmp_path, config_toml="[line]\nbanner = false\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert listening_ports(daemon.proc.pid) == {daemon.port}  # no metrics by default
        (tmp_path / "mailsocketd.toml").write_text(
            f'[line]\nbanner = false\n[metrics]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n')
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("configuration reloaded")
        assert daemon.ask(b"time").startswith(b"20")
        got = values(get(url)[2])
        assert got['mailsocketd_commands_total{command="time",outcome="ok"}'] == 1
        assert listening_ports(daemon.proc.pid) == {daemon.port, port}
    finally:
        daemon.stop()
