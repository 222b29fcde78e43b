"""Sending through the REAL Postfix of the test mail server, checked in the INBOX over IMAP.

Every message is composed with ``compose`` and submitted with ``send.submit`` in this reactor,
exactly as the line service's ``send`` does; arrival is checked with imaplib (in a thread)
by Message-ID.  The sendmail path runs Postfix's own /usr/sbin/sendmail pointed at the test
instance's configuration with MAIL_CONFIG (which Postfix honours for root), set by a
wrapper script: sendmail gets the scrubbed environment, never the test's own.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import socket
import time
from email.utils import parsedate_to_datetime

import pytest
import pytest_twisted
from checkrig import make_unrelated_ca
from mailrig import global_reactor
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import parse_smtp
from mailsocketd.mail.smtp.submit import RecipientsRefused, SendError, submit
from mailsocketd.mail.text.compose import build_message, parse_typed, sender_address
from mailsocketd.table import Table

SENDMAIL = "/usr/sbin/sendmail"
BODY = ["Grüße aus Köln \N{EN DASH} ünïcödé ✓", ".", "From here on a line mbox would mangle",
        "x" * 1200, "", "-- ", "alice"]


def smtp_config(**keys):
    """An SmtpConfig through the real parser (so the tests use the documented keys)."""
    keys.setdefault("from_domain", "example.test")
    return parse_smtp(Table(keys, "smtp"), True)


def server_config(server, scheme="tcp", **keys):
    port = server.smtp_port if scheme == "tcp" else server.smtps_port
    if server.ca_file is not None:
        keys.setdefault("ca_file", str(server.ca_file))
    return smtp_config(server=f"{scheme}:127.0.0.1:{port}", **keys)


def compose(to, lines):
    draft = parse_typed(to, lines)
    message_id, message = build_message(draft, sender=sender_address("alice", "example.test"),
                                        now=time.time(), domain="example.test")
    return draft, message_id, message


async def send(smtp, draft, message, log_in_with="pw"):
    await submit(global_reactor(), smtp, user="alice", password=Secret(log_in_with.encode()),
                 sender="alice@example.test", recipients=draft.recipients, message=message)


def _fetch(server, user, message_id):
    with imaplib.IMAP4(server.host, server.imap_port, timeout=10) as imap:
        if server.tls:
            imap.starttls(server.ssl_context())
        imap.login(user, server.users[user])
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "HEADER", "Message-ID", message_id)
        numbers = found[0].split()
        if not numbers:
            return None
        _, data = imap.fetch(numbers[-1], "(BODY.PEEK[])")
        fetched = data[0]
        assert isinstance(fetched, tuple)  # (b"1 (BODY[] {n}", the message)
        return fetched[1]


async def arrived(server, user, message_id, timeout=10.0):
    """The raw message with ``message_id`` in ``user``'s INBOX, waiting for delivery."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await threads.deferToThread(_fetch, server, user, message_id)
        if raw is not None:
            return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} not in {user}'s INBOX after {timeout} s"
                                 + server.log_tail())
        await deferLater(reactor, 0.05)


def postfix_log_size(server):
    return server.postfix_log.stat().st_size if server.postfix_log.exists() else 0


async def postfix_session_log(server, since):
    """Postfix's log lines since ``since`` up to the end of the next SMTP session."""
    deadline = time.monotonic() + 10
    while True:
        with server.postfix_log.open("rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        if "disconnect from" in text or time.monotonic() > deadline:
            return text
        await deferLater(reactor, 0.05)


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_a_message_arrives_whole_over_starttls_and_implicit_tls(mailserver, scheme):
    since = postfix_log_size(mailserver)
    draft, message_id, message = compose(
        ("bob@example.test",), ["Subject: Grüße ✓ " + scheme, "Bcc: alice@example.test", "",
                                *BODY])
    await send(server_config(mailserver, scheme), draft, message)

    raw = await arrived(mailserver, "bob", message_id)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "alice@example.test"
    assert msg["To"] == "bob@example.test"
    assert msg["Subject"] == "Grüße ✓ " + scheme
    assert msg["Message-ID"] == message_id
    assert msg["MIME-Version"] == "1.0"
    assert msg["Bcc"] is None and b"Bcc" not in raw
    assert msg["Return-Path"] == "<alice@example.test>"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert abs(parsedate_to_datetime(msg["Date"]).timestamp() - time.time()) < 60
    assert msg.get_content().replace("\r\n", "\n") == "\n".join(BODY) + "\n"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    # Bcc reached the envelope only
    assert await arrived(mailserver, "alice", message_id)
    # AUTH was used (as alice), over TLS
    session = await postfix_session_log(mailserver, since)
    assert "sasl_username=alice" in session


@pytest_twisted.ensureDeferred
async def test_a_refused_recipient_is_named_and_the_good_one_still_gets_it(mailserver):
    draft, message_id, message = compose(("nobody@example.test", "bob@example.test"),
                                         ["Subject: partly", "", "hi"])
    with pytest.raises(RecipientsRefused) as e:
        await send(server_config(mailserver), draft, message)
    assert e.value.accepted == ("bob@example.test",)
    [(address, code, text)] = e.value.refused
    assert (address, code) == ("nobody@example.test", 550)
    assert "User unknown" in text
    assert str(e.value).startswith("sent to bob@example.test only; refused: "
                                   "nobody@example.test (550 5.1.1 <nobody@example.test>")
    assert await arrived(mailserver, "bob", message_id)


@pytest_twisted.ensureDeferred
async def test_all_recipients_refused(mailserver):
    draft, _, message = compose(("nobody@example.test", "noone@example.test"), ["hi"])
    with pytest.raises(RecipientsRefused) as e:
        await send(server_config(mailserver), draft, message)
    assert e.value.accepted == ()
    assert [r[:2] for r in e.value.refused] == [("nobody@example.test", 550),
                                                 ("noone@example.test", 550)]
    assert str(e.value).startswith("refused: nobody@example.test (550 ")


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_refused_and_never_shown(mailserver):
    draft, _, message = compose(("bob@example.test",), ["hi"])
    with pytest.raises(SendError) as e:
        await send(server_config(mailserver), draft, message, log_in_with="Wr0ng-Secret")
    text = str(e.value)
    assert re.fullmatch(r"SMTP server 127\.0\.0\.1 port \d+: login refused for user alice: "
                        r"535 5\.7\.8 Error: authentication failed.*", text), text
    assert "Wr0ng-Secret" not in text and "V3Iwbmct" not in text  # nor its base64


@pytest_twisted.ensureDeferred
async def test_a_closed_port_is_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    draft, _, message = compose(("bob@example.test",), ["hi"])
    with pytest.raises(SendError) as e:
        await send(smtp_config(server=f"tcp:127.0.0.1:{port}"), draft, message)
    assert str(e.value) == f"cannot reach SMTP server 127.0.0.1 port {port}: connection refused"


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts; nobody ever speaks
        port = silent.getsockname()[1]
        draft, _, message = compose(("bob@example.test",), ["hi"])
        started = time.monotonic()
        with pytest.raises(SendError) as e:
            await send(smtp_config(server=f"tcp:127.0.0.1:{port}", timeout=1.0), draft,
                       message)
        assert time.monotonic() - started < 5
    assert str(e.value) == (f"SMTP server 127.0.0.1 port {port}: timed out after 1 s waiting "
                            "for the server")


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_a_certificate_from_another_ca_is_refused_before_auth(mailserver, tmp_path,
                                                                     scheme):
    since = postfix_log_size(mailserver)
    smtp = server_config(mailserver, scheme, ca_file=make_unrelated_ca(tmp_path / "other-ca.pem"))
    draft, _, message = compose(("bob@example.test",), ["hi"])
    with pytest.raises(SendError) as e:
        await send(smtp, draft, message)
    assert re.fullmatch(r"SMTP server 127\.0\.0\.1 port \d+: TLS failure: "
                        r"certificate verify failed", str(e.value)), str(e.value)
    session = await postfix_session_log(mailserver, since)
    disconnects = [line for line in session.splitlines() if "disconnect from" in line]
    assert disconnects, session
    assert "auth=" not in disconnects[0] and "sasl_username" not in session
    assert "mail=" not in disconnects[0]


@pytest_twisted.ensureDeferred
async def test_a_loopback_server_without_tls_gets_auth_in_clear(mailserver_notls):
    since = postfix_log_size(mailserver_notls)
    draft, message_id, message = compose(("bob@example.test",), ["Subject: clear", "", "hi"])
    await send(server_config(mailserver_notls), draft, message)
    assert await arrived(mailserver_notls, "bob", message_id)
    assert "sasl_username=alice" in await postfix_session_log(mailserver_notls, since)
    # allow_cleartext changes nothing on loopback; a wrong password shows AUTH is really used
    with pytest.raises(SendError, match="login refused for user alice: 535"):
        await send(server_config(mailserver_notls, allow_cleartext=True), draft, message,
                   log_in_with="wrong")


def sendmail_wrapper(tmp_path, config_dir):
    """Postfix's sendmail for the test instance: sendmail gets the scrubbed environment (no
    MAIL_CONFIG of ours), so a wrapper sets it, as an operator's wrapper would."""
    wrapper = tmp_path / "sendmail"
    wrapper.write_text(f'#!/bin/sh\nMAIL_CONFIG="{config_dir}" exec {SENDMAIL} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest_twisted.ensureDeferred
async def test_postfix_sendmail_delivers(mailserver, tmp_path):
    sendmail = sendmail_wrapper(tmp_path, mailserver.dir / "postfix" / "etc")
    draft, message_id, message = compose(("bob@example.test",),
                                         ["Subject: via sendmail", "", *BODY])
    await send(smtp_config(sendmail=sendmail), draft, message)
    raw = await arrived(mailserver, "bob", message_id)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "via sendmail"
    assert msg["Return-Path"] == "<alice@example.test>"
    assert msg.get_content().replace("\r\n", "\n") == "\n".join(BODY) + "\n"


@pytest_twisted.ensureDeferred
async def test_sendmail_refusing_is_reported(mailserver, tmp_path):
    sendmail = sendmail_wrapper(tmp_path, tmp_path / "no-such-config")
    draft, _, message = compose(("bob@example.test",), ["hi"])
    with pytest.raises(SendError) as e:
        await send(smtp_config(sendmail=sendmail), draft, message)
    assert str(e.value).startswith(f"{sendmail} exited with status ")
    assert "no-such-config" in str(e.value)
    assert "sendmail: fatal:" in str(e.value)
