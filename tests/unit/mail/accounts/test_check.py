"""mailsocketd-check without a network: verdict lines, thresholds, failures, usage, config."""

from __future__ import annotations

import base64
import datetime
import re

import pytest
from mailrig import MailReactorClock, account, write_password
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from mailsocketd.check_command import choose_account, main, run_check
from mailsocketd.mail.accounts.check import (
    Limits,
    Outcome,
    ProbeResult,
    failed,
    parse_range,
    perf_label,
    plugin_text,
    verdict,
)
from mailsocketd.mail.errors import (
    AuthFailed,
    CheckTimeout,
    CleartextRefused,
    ProtocolViolation,
    ServerClosed,
    ServerRefused,
    TokenError,
    TokenRefused,
)
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.sasl import TokenRejected
from mailsocketd.mail.secrets import PasswordSource, SecretError
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
    (Limits(warning_unseen=parse_range("2")), 1, "INBOX unseen 3 > 2", "unseen=3;2;;0"),
    (Limits(warning_unseen=parse_range("2"), critical_unseen=parse_range("2")), 2,
     "INBOX unseen 3 > 2", "unseen=3;2;2;0"),
    (Limits(warning_unseen=parse_range("3")), 0, None, "unseen=3;3;;0"),
    (Limits(warning_unseen=parse_range("5:")), 1, "INBOX unseen 3 < 5", "unseen=3;5:;;0"),
    (Limits(critical_unseen=parse_range("~:2")), 2, "INBOX unseen 3 > 2", "unseen=3;;~:2;0"),
    (Limits(warning_unseen=parse_range("@1:3")), 1, "INBOX unseen 3 inside @1:3",
     "unseen=3;@1:3;;0"),
    (Limits(warning_unseen=parse_range("@4:9")), 0, None, "unseen=3;@4:9;;0"),
    (Limits(warning_unseen=parse_range("4:9")), 1, "INBOX unseen 3 < 4", "unseen=3;4:9;;0"),
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
    (TokenError("token endpoint idp.example.org: HTTP 503"), 3,
     "token endpoint idp.example.org: HTTP 503"),
    (TokenRefused("token endpoint idp.example.org: invalid_grant"), 3,
     "token endpoint idp.example.org: invalid_grant"),
    (TokenRejected("access token refused for user alice, a fresh one too (XOAUTH2): NO x"), 2,
     "access token refused for user alice, a fresh one too (XOAUTH2): NO x"),
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


# -- foreign text cannot break the plugin line -----------------------------------------------

HOSTILE = "bad | time=0s;;;\x1b[31m\r\nIMAP OK - all fine\x00\u202e|" + "z" * 2000


def assert_one_clean_line(line, bars=0):
    assert line.count("|") == bars, line
    assert line.isprintable(), repr(line)
    assert len(line) < 600, len(line)


@pytest.mark.parametrize("error", [
    AuthFailed(f"login refused for user alice: NO {HOSTILE}"),
    ServerClosed(f"the server closed the connection: {HOSTILE}"),
    ServerRefused("connection", "BYE", HOSTILE),
    ProtocolViolation(f"malformed response {HOSTILE}: ValueError"),
])
def test_server_text_in_a_failure_cannot_break_the_line(error):
    outcome = failed(account(), Failure(error))
    assert outcome.code == 2
    assert_one_clean_line(outcome.line)
    assert outcome.line.startswith("IMAP CRITICAL - work: ")
    assert "bad / time=0s;;; [31m" in outcome.line  # the text is still there, only defused
    assert outcome.line.endswith("... (mail.example.test port 993)")


def test_the_auth_failure_line_keeps_the_server_reply_readable():
    error = AuthFailed("login refused for user alice: NO [AUTHENTICATIONFAILED] a|b\tc")
    assert failed(account(), Failure(error)).line == (
        "IMAP CRITICAL - work: login refused for user alice: NO [AUTHENTICATIONFAILED] a/b c "
        "(mail.example.test port 993)")


def test_mailbox_errors_and_names_cannot_break_the_line():
    extra = (("Lists|x\x07", MailboxCounts(40, 0, 0, 41, 1)),
             ("Nope", f"STATUS refused: NO {HOSTILE}"))
    outcome = verdict(account(), result(extra=extra), Limits(warning_unseen=parse_range("1")))
    assert outcome.code == 2
    assert_one_clean_line(outcome.line, bars=1)
    text, perf = outcome.line.split(" | ")
    assert "; Lists/x: 40 messages, 0 unseen; Nope: STATUS refused: NO bad / time=0s" in text
    assert perf == ("time=0.045s messages=12 unseen=3;1;;0 'Lists/x messages'=40 "
                    "'Lists/x unseen'=0;1;;0")


def parse_perfdata(perf):
    """The labels and values of a perfdata string, read as the guidelines define it."""
    found, i = {}, 0
    while i < len(perf):
        if perf[i] == " ":
            i += 1
            continue
        if perf[i] == "'":
            label, i = "", i + 1
            while not (perf[i] == "'" and perf[i + 1:i + 2] != "'"):
                label += perf[i]
                i += 2 if perf[i] == "'" else 1
            i += 1
        else:
            end = perf.index("=", i)
            label, i = perf[i:end], end
            assert " " not in label and "'" not in label, label
        assert perf[i] == "=", (perf, i)
        end = perf.find(" ", i)
        end = len(perf) if end < 0 else end
        found[label], i = perf[i + 1:end], end
    return found


def test_perfdata_labels_are_quoted_per_the_guidelines():
    names = ("My Box", "a=b", "it's", "plain")
    extra = tuple((name, MailboxCounts(n, n, 0, 1, 1)) for n, name in enumerate(names))
    outcome = verdict(account(), result(extra=extra), Limits())
    perf = outcome.line.split(" | ")[1]
    assert perf == ("time=0.045s messages=12 unseen=3 'My Box messages'=0 'My Box unseen'=0 "
                    "'a=b messages'=1 'a=b unseen'=1 'it''s messages'=2 'it''s unseen'=2 "
                    "'plain messages'=3 'plain unseen'=3")
    assert parse_perfdata(perf) == {
        "time": "0.045s", "messages": "12", "unseen": "3",
        "My Box messages": "0", "My Box unseen": "0", "a=b messages": "1", "a=b unseen": "1",
        "it's messages": "2", "it's unseen": "2", "plain messages": "3", "plain unseen": "3"}


@pytest.mark.parametrize(("label", "quoted"), [
    ("time", "time"), ("a=b", "'a=b'"), ("it's", "'it''s'"), ("two words", "'two words'"),
    ("x|y", "x/y"), ("tab\there", "'tab here'"), ("''", "''" * 3),
])
def test_perf_label(label, quoted):
    assert perf_label(label) == quoted


def test_plugin_text_is_bounded_and_single_line():
    assert plugin_text("a|b\r\nc\x00d") == "a/b  c d"
    assert plugin_text(b"bytes|\xff") == "bytes/\ufffd"
    long = plugin_text("x" * 5000)
    assert len(long) == 300 and long.endswith("...")


def test_configuration_and_usage_text_cannot_break_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[accounts.work]\nserver = "imap|x=1"\nuser = "u"\npassword_env = "P"\n')
    assert main(["--config", str(bad)]) == 3
    out = capsys.readouterr().out
    assert out.startswith("IMAP UNKNOWN - accounts.work.server: ") and "imap/x=1" in out
    assert_one_clean_line(out.rstrip("\n"))
    assert main(["--config", str(bad), "--timeout", "1|2"]) == 3
    out = capsys.readouterr().out
    assert "not a number: '1/2'" in out
    assert_one_clean_line(out.rstrip("\n"))


# -- the whole check on a memory reactor: what goes over the wire, what is shown ----------------

DISTINCTIVE = "Zq7~leak-canary_3f9c1e0b/Hunter2-never-log-me"


class ProbeRig:
    """run_check on a MemoryReactorClock; the test plays the (plain TCP) server."""

    def __init__(self, tmp_path, **overrides):
        self.reactor = MailReactorClock()
        source = PasswordSource("file", file=write_password(tmp_path, DISTINCTIVE))
        self.account = account(server="tcp:127.0.0.1:143", password=source, **overrides)
        self.outcomes: list[Outcome | Failure] = []
        run_check(self.reactor, self.account, Limits(timeout=10)).addBoth(self.outcomes.append)
        self.reactor.advance(0)
        (host, port, factory, _, _), = self.reactor.tcpClients
        assert (host, port) == ("127.0.0.1", 143)
        self.transport = StringTransport()
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        self.protocol = protocol
        self.protocol.makeConnection(self.transport)
        self.wire = b""

    def outcome(self) -> Outcome:
        """The one outcome (run_check never fails: a Failure here is the test's failure)."""
        (outcome,) = self.outcomes
        assert isinstance(outcome, Outcome), outcome
        return outcome

    def server(self, *lines):
        self.protocol.dataReceived(b"".join(line.encode() + b"\r\n" for line in lines))
        self.reactor.advance(0)

    def sent(self):
        data = self.transport.value()
        self.transport.clear()
        self.wire += data
        return data


def test_no_starttls_sends_no_password_and_no_login_socket_free(tmp_path):
    rig = ProbeRig(tmp_path)
    with capturedLogs() as events:
        rig.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] no TLS here")
        rig.sent()
    outcome = rig.outcome()
    assert outcome.code == 2
    assert outcome.line.startswith("IMAP CRITICAL - work: the server offers no STARTTLS: "
                                   "refusing to send the password in clear")
    assert b"AUTHENTICATE" not in rig.wire and b"LOGIN" not in rig.wire
    assert DISTINCTIVE.encode() not in rig.wire
    assert rig.transport.disconnecting  # and the connection is closed
    assert not [e for e in events if DISTINCTIVE in formatEvent(e) or DISTINCTIVE in repr(e)]
    assert rig.reactor.getDelayedCalls() == []


def test_a_refused_password_is_not_in_the_plugin_line_or_the_log(tmp_path):
    rig = ProbeRig(tmp_path, allow_cleartext=True)
    with capturedLogs() as events:
        rig.server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain")
        assert rig.sent().split(b" ", 1)[1] == b"AUTHENTICATE PLAIN\r\n"
        rig.server("+ ")
        answer = rig.sent()
        rig.server(f"0001 NO [AUTHENTICATIONFAILED] Authentication failed for {'x' * 50}|")
    plain = base64.b64encode(b"\0alice\0" + DISTINCTIVE.encode())
    assert answer == plain + b"\r\n"  # the distinctive password is the one that was used
    outcome = rig.outcome()
    assert outcome.code == 2
    assert outcome.line.startswith("IMAP CRITICAL - work: login refused for user alice: NO "
                                   "[AUTHENTICATIONFAILED] Authentication failed for xxx")
    assert "|" not in outcome.line
    texts = [outcome.line] + [formatEvent(e) for e in events] + [repr(e) for e in events]
    for form in (DISTINCTIVE, DISTINCTIVE[:12], plain.decode()):
        assert not [t for t in texts if form in t], form


@pytest.mark.parametrize(("text", "alerting", "quiet"), [
    ("10", [-1, 11, 100], [0, 5, 10]),  # outside 0..10
    ("10:", [-1, 0, 9], [10, 11, 10**6]),  # below 10
    ("~:10", [11, 100], [-(10**6), 0, 10]),  # above 10
    ("10:20", [9, 21], [10, 15, 20]),  # outside 10..20
    ("@10:20", [10, 15, 20], [9, 21]),  # inside 10..20, ends included
    ("-5:-1", [0, -6], [-5, -3, -1]),
])
def test_ranges_in_the_monitoring_plugins_syntax(text, alerting, quiet):
    r = parse_range(text)
    assert str(r) == text
    assert [v for v in alerting if not r.alerts(v)] == []
    assert [v for v in quiet if r.alerts(v)] == []


@pytest.mark.parametrize(("text", "problem"), [
    ("20:10", "inverted range '20:10'"), ("@5:1", "inverted range '@5:1'"),
    ("x", "not a range: 'x'"), ("", "not a range: ''"), ("@", "not a range: '@'"),
    ("1:2:3", "not a range"), ("nan", "not a range"),
])
def test_bad_and_inverted_ranges_are_refused(text, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_range(text)
