"""The ``imap_server`` fixtures themselves (imapservers.py, cyrus.sh, courier.sh): each of the
three servers offers the one interface, and the variants lack what they say they lack."""

from __future__ import annotations

import imaplib
import socket
import ssl
import time
from collections.abc import Callable

import pytest
from imapservers import ImapServer, raw_message

pytestmark = pytest.mark.timeout(120)


def capabilities(server: ImapServer, user: str = "alice") -> set[str]:
    with server.session(user) as conn:
        typ, data = conn.capability()
    assert typ == "OK" and isinstance(data[0], bytes)
    return set(data[0].decode().upper().split())


def test_login_namespace_and_mail(imap_server: ImapServer) -> None:
    server = imap_server
    assert server.host == "127.0.0.1" and server.ca_file.is_file()
    with server.session("bob") as conn:
        typ, data = conn.namespace()
        assert typ == "OK" and isinstance(data[0], bytes)
        expected = f'(("{server.prefix}" "{server.delimiter}"))'
        assert data[0].decode().startswith(expected), data
    caps = capabilities(server)
    assert {"IDLE", "UIDPLUS"} <= caps
    box = server.fresh_mailbox("alice", raw_message("one"), raw_message("two"))
    assert box.startswith(server.prefix)
    assert [m.subject for m in server.list_messages("alice", box)] == ["one", "two"]
    assert server.message_count("alice", box) == 2
    server.deliver("alice", "delivered", mailbox=box)
    listed = server.list_messages("alice", box)
    assert [m.subject for m in listed] == ["one", "two", "delivered"]
    assert all("\\Seen" not in m.flags for m in listed)
    server.clear_mailbox("alice", box)
    assert server.message_count("alice", box) == 0
    server.delete_mailbox("alice", box)
    with server.session("alice") as conn:
        assert conn.status(box, "(MESSAGES)")[0] == "NO"


def test_delivery_to_inbox_and_the_usual_folders(imap_server: ImapServer) -> None:
    server = imap_server
    subject = f"inbox {time.monotonic_ns()}"
    server.deliver("bob", subject)
    assert subject in [m.subject for m in server.list_messages("bob")]
    if server.name != "dovecot":  # made by the scripts: the Trash that 'delete' looks for
        with server.session("bob") as conn:
            _, data = conn.list()
        names = {line.decode().rsplit(" ", 1)[1].strip('"') for line in data
                 if isinstance(line, bytes)}
        assert {"INBOX.Trash", "INBOX.Work", "INBOX.Fresh"} <= names, names


def test_tls_is_verified_on_both_ports(imap_server: ImapServer) -> None:
    server = imap_server
    with imaplib.IMAP4_SSL(server.host, server.imaps_port,
                           ssl_context=server.ssl_context(), timeout=30) as conn:
        assert conn.login("alice", server.users["alice"])[0] == "OK"
    if server.other_ca_file is not None:
        other = ssl.create_default_context(cafile=str(server.other_ca_file))
        with pytest.raises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=other, timeout=30)


@pytest.mark.parametrize("imap_server", ["cyrus"], indirect=True)
def test_cyrus_refuses_login_before_starttls(imap_server: ImapServer) -> None:
    """As Debian configures it (allowplaintext: no): mailsocketd must do STARTTLS first."""
    with imaplib.IMAP4(imap_server.host, imap_server.imap_port, timeout=30) as conn:
        assert "LOGINDISABLED" in conn.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            conn.login("alice", imap_server.users["alice"])


def test_kill_and_start_again_keep_the_mail(imap_server: ImapServer) -> None:
    server = imap_server
    box = server.fresh_mailbox("alice", raw_message("survivor"))
    session = imaplib.IMAP4(server.host, server.imap_port, timeout=30)
    session.starttls(server.ssl_context())
    session.login("alice", server.users["alice"])
    try:
        server.kill()
        assert not server.running()
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            session.noop()  # the session died with the server
        with pytest.raises(OSError):
            socket.create_connection((server.host, server.imap_port), timeout=5).close()
    finally:
        session.shutdown()
        server.start()
    assert server.running()
    assert [m.subject for m in server.list_messages("alice", box)] == ["survivor"]
    server.restart()
    assert server.message_count("alice", box) == 1


@pytest.mark.parametrize("name", ["cyrus", "courier"])
def test_variants_without_idle_or_uidplus(
        name: str, imap_server_variant: Callable[..., ImapServer]) -> None:
    plain = imap_server_variant(name, idle=False, uidplus=False)
    assert plain.label == f"{name}-noidle-nouidplus"
    caps = capabilities(plain)
    assert "IDLE" not in caps and "UIDPLUS" not in caps, caps
    box = plain.fresh_mailbox("alice", raw_message("plain"))
    assert [m.subject for m in plain.list_messages("alice", box)] == ["plain"]
