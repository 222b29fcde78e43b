"""Logging in: verified STARTTLS, no password in clear unless allowed, mechanisms, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from mailrig import Rig, StartTLSTransport, TLSTransport, Transport, account
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import CertificateOptions

from mailsocketd.mail.errors import AuthFailed, CleartextRefused, MailError
from mailsocketd.mail.imap.login import log_in
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import choose_mechanism

PASSWORD = b"correct horse"


class Passwords:
    """A password source that counts how often it was asked."""

    def __init__(self):
        self.asked = 0

    def __call__(self):
        self.asked += 1
        return succeed(Secret(PASSWORD))


def start(acct, transport=TLSTransport):
    rig = Rig(transport).connect()
    passwords = Passwords()
    d = ensureDeferred(log_in(rig.client, acct.address, acct.tls, acct.user, passwords))
    return rig, passwords, d


def outcome(d):
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "log_in has not finished"
    return results[0]


def test_no_starttls_offered_means_no_login_and_no_password():
    rig, passwords, d = start(account(server="tcp:mail.example.test:143"), StartTLSTransport)
    rig.greet("IMAP4rev1 AUTH=PLAIN LOGIN")
    failure = outcome(d)
    assert failure.check(CleartextRefused)
    assert "refusing to send the password in clear" in str(failure.value)
    assert rig.sent() == [] and passwords.asked == 0  # not even fetched
    assert rig.client.commands_sent == {}


def test_starttls_is_used_with_verifying_options_for_the_host():
    rig, passwords, d = start(account(server="tcp:mail.example.test:143"), StartTLSTransport)
    rig.greet("IMAP4rev1 STARTTLS LOGINDISABLED")
    rig.answer(b"STARTTLS")
    options = rig.transport.tls_started_with
    assert options is not None and not isinstance(options, CertificateOptions)
    assert options._hostname == "mail.example.test"  # ClientTLSOptions: verifies this name
    assert passwords.asked == 0  # nothing secret before TLS is up
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN")
    rig.plain_login(password=PASSWORD)
    assert outcome(d)[b"IDLE"] is None


def test_cleartext_only_when_allowed_and_then_cram_md5_first():
    acct = account(server="tcp:mail.example.test:143", allow_cleartext=True)
    rig, passwords, d = start(acct, Transport)
    rig.greet("IMAP4rev1 AUTH=PLAIN AUTH=CRAM-MD5")
    assert rig.expect(b"AUTHENTICATE") == b"CRAM-MD5"
    challenge = b"<1896.697170952@mail.example.test>"
    rig.server(b"+ " + base64.b64encode(challenge))
    digest = hmac.new(PASSWORD, challenge, hashlib.md5).hexdigest().encode()
    assert rig.sent() == [base64.b64encode(b"alice " + digest)]
    rig.reply()
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1")
    assert not isinstance(outcome(d), Exception) and passwords.asked == 1


def test_login_command_when_no_mechanism_is_offered():
    rig, _, d = start(account())
    rig.greet("IMAP4rev1")
    assert rig.expect(b"LOGIN") == b'"alice" "correct horse"'
    rig.reply()
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1")
    assert isinstance(outcome(d), dict)


def test_login_disabled_and_nothing_usable():
    rig, _, d = start(account())
    rig.greet("IMAP4rev1 LOGINDISABLED AUTH=GSSAPI")
    assert outcome(d).check(AuthFailed) and rig.sent() == []


def test_wrong_password_is_auth_failed():
    rig, _, d = start(account())
    rig.greet()
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")
    failure = outcome(d)
    assert failure.check(AuthFailed)
    assert str(failure.value) == (
        "login refused for user alice: NO [AUTHENTICATIONFAILED] Authentication failed.")
    assert "correct horse" not in str(failure.value)


def test_a_refusal_that_echoes_the_password_is_cleaned_and_masked():
    rig, _, d = start(account())
    rig.greet()
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="bad password correct horse for\x1b[31m you")
    failure = outcome(d)
    assert failure.check(AuthFailed)
    assert str(failure.value) == "login refused for user alice: NO bad password *** for [31m you"


def test_an_echoed_password_is_masked_even_where_cleaning_cuts_the_text():
    rig, _, d = start(account())
    rig.greet()
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="[" + "x" * 183 + "] bad correct horse")
    message = str(outcome(d).value)
    assert "corr" not in message and message.endswith("] bad ***")


def test_unavailable_is_not_a_wrong_password():
    rig, _, d = start(account())
    rig.greet()
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="[UNAVAILABLE] Temporary authentication failure.")
    failure = outcome(d)
    assert failure.check(MailError) and not failure.check(AuthFailed)


def test_greeting_without_capabilities_asks_for_them():
    rig, _, d = start(account())
    rig.server("* OK hello")
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1 AUTH=PLAIN")
    rig.plain_login(password=PASSWORD)
    assert isinstance(outcome(d), dict)


@pytest.mark.parametrize(("offered", "encrypted", "chosen"), [
    ([b"PLAIN", b"LOGIN", b"CRAM-MD5"], True, b"PLAIN"),
    ([b"cram-md5", b"LOGIN"], True, b"LOGIN"),
    ([b"PLAIN", b"CRAM-MD5"], False, b"CRAM-MD5"),
    ([b"XOAUTH2"], True, None),
    ([], True, None),
])
def test_choose_mechanism(offered, encrypted, chosen):
    assert choose_mechanism(offered, encrypted) == chosen


def test_a_lost_connection_cancels_a_pending_password_command():
    cancelled: list[Deferred[Secret]] = []
    pending: Deferred[Secret] = Deferred(cancelled.append)
    rig = Rig(TLSTransport).connect()
    acct = account()
    d = ensureDeferred(log_in(rig.client, acct.address, acct.tls, acct.user, lambda: pending))
    rig.greet()
    rig.transport.loseConnection()
    rig.clock.advance(0)
    assert cancelled == [pending]  # run_process's canceller kills the command
    assert outcome(d).check(ConnectionDone)
    assert rig.clock.getDelayedCalls() == []
