"""The line client's address reaches the IMAP server with ID (RFC 2971), before the login.

Issue 11 item 8: Dovecot takes ``x-originating-ip`` from a client in
``login_trusted_networks``, so its own penalties and fail2ban see the line client's address, not
the daemon's.  Scripted server, no sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from userrig import CAPS, UserRig, error_of, result_of

from mailsocketd.mail.errors import AuthFailed
from mailsocketd.mail.imap.commands import id_arguments
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.users.session import start_user_session


def log_in(client_ip: str | None, greeting: str) -> tuple[UserRig, Deferred[Any]]:
    rig = UserRig().connect()
    d = ensureDeferred(start_user_session(rig.client, rig.imap, "alice", Secret(b"pw"),
                                          clock=rig.clock, client_ip=client_ip))
    rig.greet(greeting)
    return rig, d


def test_id_with_the_client_address_comes_before_authentication():
    rig, d = log_in("192.0.2.44", "IMAP4rev1 ID AUTH=PLAIN")
    assert rig.expect(b"ID") == b'("x-originating-ip" "192.0.2.44")'
    rig.reply('ID ("name" "Dovecot")')
    rig.plain_login(caps_after=CAPS)
    rig.select()
    assert result_of(d).alive


def test_a_refused_id_does_not_stop_the_login():
    rig, d = log_in("2001:db8::7", "IMAP4rev1 ID AUTH=PLAIN")
    assert rig.expect(b"ID") == b'("x-originating-ip" "2001:db8::7")'
    rig.reply(status="BAD", text="no ID here")
    rig.plain_login(caps_after=CAPS)
    rig.select()
    assert result_of(d).alive


def test_no_id_without_the_capability_or_without_an_address():
    for client_ip, greeting in (("192.0.2.44", "IMAP4rev1 AUTH=PLAIN"),
                                (None, "IMAP4rev1 ID AUTH=PLAIN")):
        rig, d = log_in(client_ip, greeting)
        rig.plain_login(caps_after=CAPS)  # AUTHENTICATE is the first command
        rig.select()
        assert result_of(d).alive


def test_a_failed_login_after_id_is_still_auth_failed():
    rig, d = log_in("192.0.2.44", "IMAP4rev1 ID AUTH=PLAIN")
    rig.answer(b"ID", "ID NIL")
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")
    rig.clock.advance(0)
    assert isinstance(error_of(d), AuthFailed)


def test_only_ip_addresses_are_sent_and_mapped_ipv4_as_ipv4():
    assert id_arguments("::ffff:192.0.2.1") == b'("x-originating-ip" "192.0.2.1")'
    assert id_arguments("fe80::1%eth0") == b'("x-originating-ip" "fe80::1")'
    assert id_arguments('1.2.3.4" "x-proxy-ttl" "9') is None
    assert id_arguments("unix") is None
