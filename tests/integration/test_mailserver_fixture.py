"""Tests of the mail server fixtures themselves, with stdlib clients only."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from mailserver import MailServer, free_port_base, start_free_mailserver


def status(conn: imaplib.IMAP4, mailbox: str = "INBOX") -> dict[str, int]:
    typ, data = conn.status(mailbox, "(MESSAGES UNSEEN UIDNEXT)")
    assert typ == "OK", data
    raw = data[0]
    assert isinstance(raw, bytes)
    return {k: int(v) for k, v in re.findall(r"(MESSAGES|UNSEEN|UIDNEXT) (\d+)", raw.decode())}


def login(server: MailServer, user: str = "alice") -> imaplib.IMAP4:
    conn = imaplib.IMAP4(server.host, server.imap_port, timeout=10)
    conn.login(user, server.users[user])
    return conn


def wait_for_subject(conn: imaplib.IMAP4, subject: str, timeout: float = 10.0) -> bytes:
    """Poll INBOX until a message with this subject is there; return its header."""
    deadline = time.monotonic() + timeout
    conn.select("INBOX", readonly=True)
    while True:
        typ, data = conn.search(None, "SUBJECT", f'"{subject}"')
        assert typ == "OK", data
        nums = data[0].split()
        if nums:
            typ, fetched = conn.fetch(nums[-1], "(BODY.PEEK[HEADER])")
            assert typ == "OK", fetched
            part = fetched[0]
            assert isinstance(part, tuple), fetched
            return part[1]
        assert time.monotonic() < deadline, f"{subject!r} did not arrive within {timeout} s"
        time.sleep(0.05)
        conn.noop()


def test_fixture_attributes(mailserver: MailServer, mailserver_notls: MailServer) -> None:
    assert mailserver.host == mailserver_notls.host == "127.0.0.1"
    assert mailserver.tls and not mailserver_notls.tls
    assert mailserver.users == {"alice": "pw", "bob": "pw"}
    assert mailserver.domain == "example.test"
    assert mailserver.ca_file is not None and mailserver.ca_file.is_file()
    assert mailserver.imaps_port == mailserver.port_base + 993
    assert mailserver.smtps_port == mailserver.port_base + 465
    assert mailserver_notls.ca_file is None
    assert mailserver_notls.imaps_port is None and mailserver_notls.smtps_port is None
    assert mailserver.port_base != mailserver_notls.port_base
    for server in (mailserver, mailserver_notls):
        assert server.imap_port == server.port_base + 143
        assert server.smtp_port == server.port_base + 25
        assert 20000 <= server.port_base <= 60000
        assert len(str(server.dir)) <= 70  # unix socket path limit
        assert server.dir.stat().st_mode & 0o777 == 0o711


def test_imap_login_and_status(mailserver: MailServer) -> None:
    with login(mailserver, "alice") as conn:
        assert "STARTTLS" in conn.capabilities
        st = status(conn)
        assert set(st) == {"MESSAGES", "UNSEEN", "UIDNEXT"}
        assert st["MESSAGES"] >= 0 and st["UIDNEXT"] >= 1


def test_populate_25_then_clear(mailserver: MailServer) -> None:
    mailserver.clear_mailbox("bob")
    mailserver.populate("bob", 25)
    mailserver.populate("bob", 3, "Archive")
    with login(mailserver, "bob") as conn:
        st = status(conn)
        assert st["MESSAGES"] == 25
        assert st["UNSEEN"] == 25
        assert status(conn, "Archive")["MESSAGES"] == 3
        conn.select("INBOX", readonly=True)
        typ, data = conn.fetch("1,25", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        subjects = [part[1] for part in data if isinstance(part, tuple)]
        assert subjects == [
            b"Subject: Test message 1 of 25\r\n\r\n",
            b"Subject: Test message 25 of 25\r\n\r\n",
        ]
    assert mailserver.message_count("bob") == 25
    mailserver.clear_mailbox("bob")
    mailserver.clear_mailbox("bob", "Archive")
    with login(mailserver, "bob") as conn:
        assert status(conn)["MESSAGES"] == 0
        assert status(conn, "Archive")["MESSAGES"] == 0


def test_smtp_delivery_arrives(mailserver: MailServer) -> None:
    subject = f"fixture-smtp-{uuid.uuid4().hex}"
    with login(mailserver, "alice") as conn:
        before = status(conn)["MESSAGES"]
        mailserver.deliver("alice", subject, "a body\n")
        header = wait_for_subject(conn, subject, timeout=10)
        assert b"Delivered-To: alice@example.test" in header
        assert status(conn)["MESSAGES"] == before + 1
    # wait=True returns only once Dovecot has stored it
    n = mailserver.message_count("alice")
    mailserver.deliver("alice", f"fixture-wait-{uuid.uuid4().hex}", wait=True)
    assert mailserver.message_count("alice") == n + 1


def test_smtp_refuses_unknown_recipient_and_relay(mailserver: MailServer) -> None:
    with smtplib.SMTP(mailserver.host, mailserver.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("tester@example.org")
        code, _ = smtp.rcpt("nobody@example.test")
        assert code == 550
        code, _ = smtp.rcpt("someone@elsewhere.example.com")
        assert code in (550, 554)  # no relaying anywhere


def test_wrong_password_refused(mailserver: MailServer) -> None:
    with (
        imaplib.IMAP4(mailserver.host, mailserver.imap_port, timeout=10) as conn,
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        conn.login("alice", "wrong")
    with smtplib.SMTP(mailserver.host, mailserver.smtp_port, timeout=10) as smtp:
        smtp.starttls(context=mailserver.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("alice", "wrong")
    # no auth penalty (anvil) for the good login that follows
    t0 = time.monotonic()
    login(mailserver, "alice").logout()
    assert time.monotonic() - t0 < 1.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_starttls_verified_against_test_ca(mailserver: MailServer, host: str) -> None:
    assert mailserver.ca_file is not None
    ctx = ssl.create_default_context(cafile=str(mailserver.ca_file))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with imaplib.IMAP4(host, mailserver.imap_port, timeout=10) as conn:
        conn.starttls(ssl_context=ctx)
        assert isinstance(conn.sock, ssl.SSLSocket)
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.sock.getpeercert() is not None  # verified, not just encrypted
        conn.login("alice", "pw")
    assert mailserver.imaps_port is not None
    with imaplib.IMAP4_SSL(host, mailserver.imaps_port, ssl_context=ctx, timeout=10) as conn:
        conn.login("alice", "pw")
    subject = f"fixture-starttls-{uuid.uuid4().hex}"
    with smtplib.SMTP(host, mailserver.smtp_port, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.login("bob", "pw")
        smtp.sendmail(
            "bob@example.test", ["alice@example.test"], f"Subject: {subject}\r\n\r\nover TLS\r\n"
        )
    with login(mailserver, "alice") as conn:
        wait_for_subject(conn, subject)


def test_tls_fails_without_test_ca(mailserver: MailServer) -> None:
    assert mailserver.imaps_port is not None
    ctx = ssl.create_default_context()  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(mailserver.host, mailserver.imaps_port, ssl_context=ctx, timeout=10)


def test_notls_instance_offers_no_starttls(mailserver_notls: MailServer) -> None:
    server = mailserver_notls
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as conn:
        assert "STARTTLS" not in conn.capabilities
        assert "LOGINDISABLED" not in conn.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            conn.starttls(ssl_context=ssl.create_default_context())
        conn.login("alice", "pw")  # the server would take a password in clear
    with smtplib.SMTP(server.host, server.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
    # no IMAPS either: base+993 is not listening
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port_base + 993), timeout=5).close()
    subject = f"fixture-notls-{uuid.uuid4().hex}"
    server.deliver("bob", subject)
    with login(server, "bob") as conn:
        wait_for_subject(conn, subject)


@pytest.mark.timeout(60)
def test_kill_then_start_dovecot(mailserver: MailServer) -> None:
    pid_file = mailserver.dir / "run" / "dovecot.id"
    old_pid = int(pid_file.read_text().split()[0])
    subject = f"fixture-crash-{uuid.uuid4().hex}"
    assert mailserver.dovecot_running()
    mailserver.kill_dovecot()
    assert not mailserver.dovecot_running()
    try:
        with pytest.raises(ConnectionRefusedError):
            imaplib.IMAP4(mailserver.host, mailserver.imap_port, timeout=5)
        assert _pids_in_group(old_pid) == []  # no leftover log/auth/stats processes
        mailserver.deliver("alice", subject)  # Postfix queues it while Dovecot is down
    finally:
        mailserver.start_dovecot()
    assert mailserver.dovecot_running()
    assert int(pid_file.read_text().split()[0]) != old_pid
    with login(mailserver, "alice") as conn:
        assert status(conn)["MESSAGES"] >= 1
        wait_for_subject(conn, subject, timeout=10)  # the deferred message was flushed


@pytest.mark.timeout(60)
def test_stop_then_start_dovecot(mailserver: MailServer) -> None:
    mailserver.stop_dovecot()
    try:
        with pytest.raises(ConnectionRefusedError):
            imaplib.IMAP4(mailserver.host, mailserver.imap_port, timeout=5)
    finally:
        mailserver.start_dovecot()
    with login(mailserver, "bob") as conn:
        assert status(conn)["MESSAGES"] >= 0


@pytest.mark.timeout(60)
def test_stop_then_start_postfix(mailserver: MailServer) -> None:
    """For the long run (benchmarks/long_run.py): SMTP refused while Postfix is stopped, and
    delivering again once it is started."""
    mailserver.stop_postfix()
    try:
        with pytest.raises(ConnectionRefusedError):
            smtplib.SMTP(mailserver.host, mailserver.smtp_port, timeout=5)
    finally:
        mailserver.start_postfix()
    n = mailserver.message_count("bob")
    mailserver.deliver("bob", f"fixture-postfix-{uuid.uuid4().hex}", wait=True)
    assert mailserver.message_count("bob") == n + 1


def test_dovecot_left_down_by_a_test(mailserver: MailServer) -> None:
    # no restart here: the conftest's safety net must start Dovecot after this test
    mailserver.kill_dovecot()
    assert not mailserver.dovecot_running()


def test_dovecot_was_restarted_by_the_safety_net(mailserver: MailServer) -> None:
    assert mailserver.dovecot_running()
    with login(mailserver, "alice") as conn:
        assert status(conn)["MESSAGES"] >= 0


def _pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.timeout(60)
def test_start_stop_leaves_nothing_behind(mailserver: MailServer) -> None:
    server = start_free_mailserver(tls=False)
    try:
        assert server.port_base != mailserver.port_base
        groups = [
            int((server.dir / "run" / f"{name}.id").read_text().split()[0])
            for name in ("dovecot", "postfix")
        ]
        assert all(_pids_in_group(pg) for pg in groups)
        out = subprocess.run(
            [str(Path(__file__).with_name("mailserver.sh")), "status", str(server.dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "dovecot: running" in out.stdout and "postfix: running" in out.stdout
    finally:
        server.stop()
    assert not server.dir.exists()
    assert [pid for pg in groups for pid in _pids_in_group(pg)] == []
    for port in (server.imap_port, server.smtp_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.host, port), timeout=5).close()
    server.stop()  # idempotent


def test_free_port_base() -> None:
    base = free_port_base()
    assert 20000 <= base <= 60000 and base % 100 == 0
    assert free_port_base() != base  # never handed out twice in one process
    for off in (25, 143, 465, 993):
        with socket.socket() as s:
            s.bind(("127.0.0.1", base + off))
