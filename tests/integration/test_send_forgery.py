"""Mail a logged-in user might forge, end to end: the installed daemon, the REAL Dovecot and
Postfix, over SMTP and through Postfix's own sendmail (issue 11, items 1, 2, 3 and 20).

The attacker logs in as ``alice@evil.example`` (Dovecot's ``auth_username_format = %Ln`` maps
it to alice), types a Subject holding an RFC 2047 word that decodes to CRLF + a From header + a
body (CVE-2024-6923 on this Python 3.11.7), and a Cc line with no blank line after the headers.
Bob must get one From (alice at the configured domain, the envelope too), the Subject exactly
as typed, the typed body, and alice her Cc copy; sendmail must get ``-f alice@example.test`` and
none of the daemon's secrets in its environment.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from daemon import Daemon, start_daemon
from lineclient import LineClient
from mailserver import MailServer

pytestmark = pytest.mark.timeout(120)

SECRET = "Acc0unt-S3cret-of-the-daemon"  # noqa: S105  (as a password_env would hold it)
INJECTION = ("Report =?utf-8?q?=0D=0AFrom:_Director_<director@example.test>=0D=0A=0D=0A"
             "forged?=")
SENDMAIL_WRAPPER = """#!/bin/sh
# what the daemon hands sendmail, recorded; then Postfix's own sendmail for the test instance
printf '%s\\n' "$@" >"{dir}/argv"
env >"{dir}/env"
MAIL_CONFIG="{config}" exec /usr/sbin/sendmail "$@"
"""


def config(server: MailServer, smtp: str) -> str:
    return (f'[line]\nlogin_failures = 50\n'
            f'[imap]\nserver = "tcp:127.0.0.1:{server.imap_port}"\nca_file = "{server.ca_file}"\n'
            f'[smtp]\n{smtp}\nfrom_domain = "{server.domain}"\n')


@pytest.fixture(params=["smtp", "sendmail"])
def daemon(request: pytest.FixtureRequest, mailserver: MailServer,
           tmp_path: Path) -> Iterator[tuple[str, Daemon, Path]]:
    if request.param == "smtp":
        smtp = (f'server = "tcp:127.0.0.1:{mailserver.smtp_port}"\n'
                f'ca_file = "{mailserver.ca_file}"')
    else:
        wrapper = tmp_path / "sendmail"
        wrapper.write_text(SENDMAIL_WRAPPER.format(
            dir=tmp_path, config=mailserver.dir / "postfix" / "etc"))
        wrapper.chmod(0o755)
        smtp = f'sendmail = "{wrapper}"'
    started = start_daemon(tmp_path, config_toml=config(mailserver, smtp),
                           env={"MAILSOCKETD_WORK_PASSWORD": SECRET})
    try:
        yield request.param, started, tmp_path
    finally:
        started.stop()


def fetched(server: MailServer, user: str, message_id: str, timeout: float = 10.0
            ) -> tuple[bytes, EmailMessage]:
    """The message ``message_id`` from ``user``'s INBOX (raw, parsed), waiting for delivery."""
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10) as imap:
            imap.starttls(server.ssl_context())
            imap.login(user, server.users[user])
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "HEADER", "Message-ID", message_id)
            if found[0].split():
                _, data = imap.fetch(found[0].split()[-1], "(BODY.PEEK[])")
                fetched = data[0]
                assert isinstance(fetched, tuple)
                msg = email.message_from_bytes(fetched[1], policy=email.policy.default)
                assert isinstance(msg, EmailMessage)
                return fetched[1], msg
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} not in {user}'s INBOX" + server.log_tail())
        time.sleep(0.1)


def send(maild: Daemon, server: MailServer, login: str, lines: list[str]) -> str:
    """Log in as ``login`` (alice's password), send ``lines`` to bob; the Message-ID."""
    with LineClient.connect(maild.port) as c:
        assert c.ask(f"login {login} {server.users['alice']}").startswith("ok logged in")
        assert c.ask("send bob@example.test").startswith("ok ready")
        for line in (*lines, "."):
            c.send(line)
        sent = c.line()
    assert re.fullmatch(r"ok sent <[^>]+@example\.test>", sent), sent
    return sent.removeprefix("ok sent ")


def test_an_encoded_word_in_the_subject_stays_literal(daemon: tuple[str, Daemon, Path],
                                                      mailserver: MailServer) -> None:
    """Item 1: no second From, no forged body, the Subject read back exactly as typed."""
    message_id = send(daemon[1], mailserver, "alice", [f"Subject: {INJECTION}", "",
                                                       "the real body"])
    raw, msg = fetched(mailserver, "bob", message_id)
    assert msg.get_all("From") == ["alice@example.test"]
    assert msg["Subject"] == INJECTION
    assert msg.get_content().replace("\r\n", "\n") == "the real body\n"
    assert b"director" not in raw.lower() and b"forged" not in raw


def test_the_domain_typed_at_login_never_becomes_the_sender(daemon: tuple[str, Daemon, Path],
                                                            mailserver: MailServer) -> None:
    """Item 2: Dovecot maps alice@evil.example to alice; she still sends as alice@example.test
    (From, envelope, sendmail -f)."""
    mode, maild, tmp_path = daemon
    message_id = send(maild, mailserver, "alice@evil.example", ["Subject: hi", "", "text"])
    _, msg = fetched(mailserver, "bob", message_id)
    assert msg.get_all("From") == ["alice@example.test"]
    assert msg["Return-Path"] == "<alice@example.test>"
    if mode == "sendmail":
        argv = (tmp_path / "argv").read_text().splitlines()
        assert argv == ["-i", "-f", "alice@example.test", "--", "bob@example.test"]


def test_a_cc_typed_without_the_blank_line_still_gets_it(daemon: tuple[str, Daemon, Path],
                                                         mailserver: MailServer) -> None:
    """Item 20: header lines run up to the first line that is not one, as mail(1) has it."""
    message_id = send(daemon[1], mailserver, "alice", ["Subject: lunch",
                                                       "Cc: alice@example.test", "noon?"])
    _, msg = fetched(mailserver, "bob", message_id)
    assert (msg["Subject"], msg["Cc"]) == ("lunch", "alice@example.test")
    assert msg.get_content().replace("\r\n", "\n") == "noon?\n"
    assert fetched(mailserver, "alice", message_id)[1]["Subject"] == "lunch"  # the Cc copy


@pytest.mark.parametrize("daemon", ["sendmail"], indirect=True)
def test_sendmail_never_sees_the_daemon_s_secrets(daemon: tuple[str, Daemon, Path],
                                                  mailserver: MailServer) -> None:
    """Item 3: the scrubbed environment the new-mail hooks get, nothing else (sendmail only:
    SMTP mode runs no program)."""
    mode, maild, tmp_path = daemon
    assert mode == "sendmail"
    send(maild, mailserver, "alice", ["text"])
    env = (tmp_path / "env").read_text()
    assert SECRET not in env and "MAILSOCKETD_WORK_PASSWORD" not in env
    assert "PATH=" in env


def test_an_address_that_looks_like_an_encoded_word_is_refused(
        daemon: tuple[str, Daemon, Path], mailserver: MailServer) -> None:
    """Mail clients (and Python's email package) decode "=?...?=" even inside an address."""
    with LineClient.connect(daemon[1].port) as c:
        assert c.ask(f"login alice {mailserver.users['alice']}").startswith("ok logged in")
        assert c.ask("send bob@example.test").startswith("ok ready")
        for line in ("Bcc: =?utf-8?q?=0D=0AX-Injected=3A_yes?=@example.test", "", "text", "."):
            c.send(line)
        refused = c.line()
        assert refused == ("error: Bcc: bad recipient '=?utf-8?q?=0D=0AX-Injected=3A_yes?="
                           "@example.test': '=?' (an RFC 2047 encoded word) in an address; "
                           "not sent"), refused


@pytest.fixture
def sender_login_check(mailserver: MailServer) -> Iterator[None]:
    """The Postfix sender check docs/configuration.md gives operators, on this test instance
    (its own per test run), taken off again afterwards."""
    etc = mailserver.dir / "postfix" / "etc"
    main_cf = etc / "main.cf"
    original = main_cf.read_text()
    (etc / "sender_logins").write_text("alice@example.test alice\nbob@example.test bob\n")
    main_cf.write_text(original + f"smtpd_sender_login_maps = texthash:{etc}/sender_logins\n"
                       "smtpd_sender_restrictions = reject_sender_login_mismatch\n")
    subprocess.run(["postfix", "-c", str(etc), "reload"], check=True, capture_output=True)
    time.sleep(0.5)  # the master restarts its smtpd processes
    try:
        yield
    finally:
        main_cf.write_text(original)
        subprocess.run(["postfix", "-c", str(etc), "reload"], check=True, capture_output=True)
        time.sleep(0.5)


def test_postfix_s_sender_login_check_passes_the_daemon_and_stops_a_forger(
        sender_login_check: None, mailserver: MailServer, tmp_path: Path) -> None:
    """The second lock: alice's login owns alice@example.test and nothing else."""
    smtp = (f'server = "tcp:127.0.0.1:{mailserver.smtp_port}"\n'
            f'ca_file = "{mailserver.ca_file}"')
    maild = start_daemon(tmp_path, config_toml=config(mailserver, smtp))
    try:
        message_id = send(maild, mailserver, "alice@evil.example", ["Subject: checked", "", "x"])
    finally:
        maild.stop()
    assert fetched(mailserver, "bob", message_id)[1]["From"] == "alice@example.test"
    with smtplib.SMTP("127.0.0.1", mailserver.smtp_port, timeout=10) as client:
        client.starttls(context=mailserver.ssl_context())
        client.login("alice", mailserver.users["alice"])
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("bob@example.test", ["bob@example.test"], b"Subject: forged\r\n\r\nx")
    [(code, text)] = refused.value.recipients.values()
    assert code == 553 and b"not owned by user alice" in text, text
