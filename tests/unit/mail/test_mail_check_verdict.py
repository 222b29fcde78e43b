"""mailsocketd-check without a network: verdict lines, thresholds, failures, usage, config."""

from __future__ import annotations

import datetime

import pytest
from mailrig import account
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.python.failure import Failure

from mailsocketd.mail.check_command import choose_account, main
from mailsocketd.mail.errors import AuthFailed, CheckTimeout, CleartextRefused
from mailsocketd.mail.imap import MailboxCounts
from mailsocketd.mail.probe import Limits, ProbeResult, failed, verdict
from mailsocketd.mail.secrets import SecretError
from mailsocketd.table import ConfigError

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def result(unseen=3, elapsed=0.045, expires=None, extra=()):
    boxes = (("INBOX", MailboxCounts(12, unseen, 0, 13, 1)), *extra)
    return ProbeResult(boxes, elapsed, expires)


def test_ok_line_exactly_as_the_issue_shows():
    outcome = verdict(account(), result(), Limits())
    assert outcome.code == 0
    assert outcome.line == ("IMAP OK - work INBOX: 12 messages, 3 unseen, 0.045 s "
                            "| time=0.045s messages=12 unseen=3")


@pytest.mark.parametrize(("limits", "code", "note", "perf"), [
    (Limits(warning_unseen=2), 1, "INBOX unseen 3 > 2", "unseen=3;2;;0"),
    (Limits(warning_unseen=2, critical_unseen=2), 2, "INBOX unseen 3 > 2", "unseen=3;2;2;0"),
    (Limits(warning_unseen=3), 0, None, "unseen=3;3;;0"),
    (Limits(warning_time=0.01), 1, "time 0.045 s > 0.01 s", "time=0.045s;0.01;;0"),
    (Limits(warning_time=0.01, critical_time=0.04), 2, "time 0.045 s > 0.04 s",
     "time=0.045s;0.01;0.04;0"),
])
def test_thresholds(limits, code, note, perf):
    outcome = verdict(account(), result(), limits)
    assert outcome.code == code
    assert outcome.line.startswith(f"IMAP {['OK', 'WARNING', 'CRITICAL'][code]} - work INBOX")
    assert (note in outcome.line) if note else ("(" not in outcome.line)
    assert perf in outcome.line.split(" | ")[1].split()


def test_certificate_expiry_warning():
    soon = NOW + datetime.timedelta(days=5, hours=1)
    outcome = verdict(account(), result(expires=soon), Limits(cert_days=14), now=NOW)
    assert outcome.code == 1
    assert "certificate expires in 5 days (2026-11-30 13:00 UTC)" in outcome.line
    later = NOW + datetime.timedelta(days=90)
    assert verdict(account(), result(expires=later), Limits(cert_days=14), now=NOW).code == 0


def test_several_mailboxes_and_a_missing_one():
    extra = (("Lists", MailboxCounts(40, 0, 0, 41, 1)), ("Nope", "STATUS refused: NO no"))
    outcome = verdict(account(), result(extra=extra), Limits())
    assert outcome.code == 2
    assert outcome.line == (
        "IMAP CRITICAL - work INBOX: 12 messages, 3 unseen; Lists: 40 messages, 0 unseen; "
        "Nope: STATUS refused: NO no, 0.045 s | time=0.045s messages=12 unseen=3 "
        "'Lists messages'=40 'Lists unseen'=0")


@pytest.mark.parametrize(("error", "code", "text"), [
    (ConnectionRefusedError(), 2, "connection refused"),
    (DNSLookupError("nope.invalid"), 2, "cannot resolve the server's name"),
    (CheckTimeout("the server greeting", 10), 2,
     "timed out after 10 s waiting for the server greeting"),
    (AuthFailed("login refused for user alice: NO x"), 2, "login refused for user alice"),
    (CleartextRefused("the server offers no STARTTLS"), 2, "the server offers no STARTTLS"),
    (SecretError("password_file /x: cannot open"), 3, "password_file /x: cannot open"),
])
def test_failures_have_their_own_clear_message(error, code, text):
    outcome = failed(account(), Failure(error))
    assert outcome.code == code
    name = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code]
    assert outcome.line.startswith(f"IMAP {name} - work: {text}")
    assert outcome.line.endswith("(mail.example.test port 993)")


def test_choose_account():
    a, b = account(name="a"), account(name="b")
    assert choose_account([a], None) is a
    assert choose_account([a, b], "b") is b
    with pytest.raises(ConfigError, match="choose one with --account"):
        choose_account([a, b], None)
    with pytest.raises(ConfigError, match=r"no account named 'c' \(configured: a, b\)"):
        choose_account([a, b], "c")
    with pytest.raises(ConfigError, match="no \\[accounts.NAME\\] table"):
        choose_account([], None)


def test_config_and_usage_problems_are_unknown(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[accounts.work]\nserver = "imap.example.org"\n')
    assert main(["--config", str(bad)]) == 3
    assert capsys.readouterr().out.startswith("IMAP UNKNOWN - accounts.work.server: ")
    assert main(["--config", str(tmp_path / "missing.toml")]) == 3
    assert "cannot read configuration file" in capsys.readouterr().out
    assert main(["--config", str(bad), "--timeout", "soon"]) == 3
    assert capsys.readouterr().out.startswith("IMAP UNKNOWN - mailsocketd-check: argument")
    assert main([]) == 3
