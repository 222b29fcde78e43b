"""XOAUTH2 and OAUTHBEARER without sockets: the encoding, SASL-IR, the error challenge and its
acknowledgement, the one retry with a fresh token, TLS only, and no token in any error."""

from __future__ import annotations

import base64
import json

import pytest
from mailrig import Rig, StartTLSTransport, TLSTransport, Transport, account
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed

from mailsocketd.mail.errors import (
    AuthFailed,
    CleartextRefused,
    MailError,
    ProtocolViolation,
    TokenError,
)
from mailsocketd.mail.imap.login import TokenLogin, log_in
from mailsocketd.mail.imap.sasl import (
    TokenRejected,
    describe_error_challenge,
    oauth_initial_response,
)
from mailsocketd.mail.secrets import Secret

FIRST, SECOND = "eyJhbGciOiJIUzI1NiJ9.first.c2lnMQ", "eyJhbGciOiJIUzI1NiJ9.second.c2lnMg"
CAPS = "IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER"
XOAUTH2_ERROR = {"status": "401", "schemes": "bearer", "scope": "mail"}


class Tokens:
    """A TokenProvider handing out ``tokens`` in turn, recording what it was told."""

    def __init__(self, *tokens: str | Exception) -> None:
        self.tokens = list(tokens)
        self.calls: list[str] = []

    def token(self) -> Deferred[Secret]:
        self.calls.append("token")
        value = self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        if isinstance(value, Exception):
            return fail(value)
        return succeed(Secret(value.encode()))

    def refused(self) -> None:
        self.calls.append("refused")


def start(tokens, mechanism=b"XOAUTH2", transport=TLSTransport, **keys):
    acct = account(**keys)
    rig = Rig(transport).connect()
    login = TokenLogin(mechanism, tokens)
    d = ensureDeferred(log_in(rig.client, acct.address, acct.tls, acct.user, login))
    return rig, d


def outcome(d):
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "log_in has not finished"
    return results[0]


def xoauth2(token: str, user: str = "alice") -> bytes:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


def sent_raw(rig: Rig) -> bytes:
    """What the client sent since the last look, empty lines included."""
    data: bytes = rig.transport.value()
    rig.transport.clear()
    return data


def error_challenge(value: object) -> bytes:
    return b"+ " + base64.b64encode(json.dumps(value).encode())


def test_the_initial_responses():
    token = Secret(b"abc.def")
    assert oauth_initial_response(b"XOAUTH2", "alice@example.org", token, "imap.example.org",
                                  993).reveal() == (
        b"user=alice@example.org\x01auth=Bearer abc.def\x01\x01")
    assert oauth_initial_response(b"OAUTHBEARER", "a,b=c", token, "imap.example.org",
                                  993).reveal() == (
        b"n,a=a=2Cb=3Dc,\x01host=imap.example.org\x01port=993\x01auth=Bearer abc.def\x01\x01")
    assert "abc" not in repr(oauth_initial_response(b"XOAUTH2", "a", token, "h", 1))


@pytest.mark.parametrize(("data", "text"), [
    (json.dumps(XOAUTH2_ERROR).encode(), "status 401, schemes bearer, scope mail"),
    (b'{"status":"invalid_token"}', "status invalid_token"),
    (b'{"status":"401\\r\\nX","other":1}', "status 401  X"),
    (b'{"nothing":"here"}', "an error challenge without a status"),
    (b"[1,2]", "an unreadable error challenge"),
    (b"\xff{", "an unreadable error challenge"),
])
def test_the_error_challenge_described(data, text):
    assert describe_error_challenge(data) == text


def test_long_challenge_fields_are_bounded():
    assert len(describe_error_challenge(json.dumps({"scope": "x" * 5000}).encode())) < 120


def test_sasl_ir_puts_the_token_on_the_command_line():
    tokens = Tokens(FIRST)
    rig, d = start(tokens)
    rig.greet(CAPS)
    assert rig.expect(b"AUTHENTICATE") == b"XOAUTH2 " + xoauth2(FIRST)
    rig.reply()
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1 IDLE")
    assert b"IDLE" in outcome(d)
    assert tokens.calls == ["token"]


def test_without_sasl_ir_the_token_follows_the_empty_challenge():
    rig, d = start(Tokens(FIRST), b"OAUTHBEARER")
    rig.greet("IMAP4rev1 AUTH=OAUTHBEARER")
    assert rig.expect(b"AUTHENTICATE") == b"OAUTHBEARER"
    rig.server("+ ")
    assert rig.sent() == [base64.b64encode(
        f"n,a=alice,\x01host=mail.example.test\x01port=993\x01auth=Bearer {FIRST}\x01\x01"
        .encode())]
    rig.reply()
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1")
    assert isinstance(outcome(d), dict)


@pytest.mark.parametrize(("mechanism", "challenge", "ack"), [
    (b"XOAUTH2", XOAUTH2_ERROR, b""),
    (b"OAUTHBEARER", {"status": "invalid_token"}, b"AQ=="),
])
def test_a_refused_token_is_acknowledged_and_a_fresh_one_tried(mechanism, challenge, ack):
    tokens = Tokens(FIRST, SECOND)
    rig, d = start(tokens, mechanism)
    rig.greet(CAPS)
    assert rig.expect(b"AUTHENTICATE").startswith(mechanism + b" ")
    rig.server(error_challenge(challenge))
    assert sent_raw(rig) == ack + b"\r\n"  # OAUTHBEARER: the kvsep (RFC 7628 3.2.3)
    assert tokens.calls == ["token"]
    rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")
    assert tokens.calls == ["token", "refused", "token"]
    args = rig.expect(b"AUTHENTICATE")
    assert SECOND.encode() in base64.b64decode(args.split(b" ")[1])
    rig.reply()
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1")
    assert isinstance(outcome(d), dict)


@pytest.mark.parametrize(("mechanism", "challenge", "described"), [
    (b"XOAUTH2", XOAUTH2_ERROR, "XOAUTH2: status 401, schemes bearer, scope mail"),
    (b"OAUTHBEARER", {"status": "invalid_token"}, "OAUTHBEARER: status invalid_token"),
])
def test_a_token_refused_twice_is_auth_failed(mechanism, challenge, described):
    tokens = Tokens(FIRST, SECOND)
    rig, d = start(tokens, mechanism)
    rig.greet(CAPS)
    for _ in range(2):
        rig.expect(b"AUTHENTICATE")
        rig.server(error_challenge(challenge))
        rig.sent()
        rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")
    failure = outcome(d)
    assert failure.check(TokenRejected) and isinstance(failure.value, AuthFailed)
    assert str(failure.value) == (f"access token refused for user alice, a fresh one too "
                                  f"({described}): NO [AUTHENTICATIONFAILED] Authentication "
                                  "failed.")
    assert tokens.calls == ["token", "refused", "token", "refused"]  # one retry, no loop
    assert rig.sent() == []


def test_a_plain_no_without_challenge_is_a_refusal_too():
    tokens = Tokens(FIRST)
    rig, d = start(tokens)
    rig.greet(CAPS)
    for _ in range(2):
        rig.expect(b"AUTHENTICATE")
        rig.reply(status="NO", text=f"invalid credentials for {SECOND} and {FIRST}")
    failure = outcome(d)
    assert str(failure.value) == ("access token refused for user alice, a fresh one too "
                                  f"(XOAUTH2): NO invalid credentials for {SECOND} and ***")


@pytest.mark.parametrize(("status", "text", "error", "not_error"), [
    ("BAD", "Invalid SASL", AuthFailed, TokenRejected),  # BAD is not retried
    # a temporary refusal is not a token problem
    ("NO", "[UNAVAILABLE] Temporary authentication failure.", MailError, AuthFailed)])
def test_refusals_that_no_fresh_token_would_mend_are_not_retried(status, text, error,
                                                                  not_error):
    tokens = Tokens(FIRST, SECOND)
    rig, d = start(tokens)
    rig.greet(CAPS)
    rig.expect(b"AUTHENTICATE")
    rig.reply(status=status, text=text)
    failure = outcome(d)
    assert failure.check(error) and not failure.check(not_error)
    assert tokens.calls == ["token"]


@pytest.mark.parametrize("second", [b"+ not base64!", error_challenge({"status": "again"})])
def test_an_unexpected_challenge_is_cancelled_and_dropped(second):
    rig, d = start(Tokens(FIRST))
    rig.greet(CAPS)
    rig.expect(b"AUTHENTICATE")
    if second.startswith(b"+ ey"):
        rig.server(error_challenge(XOAUTH2_ERROR))
        assert sent_raw(rig) == b"\r\n"
    rig.server(second)
    assert rig.sent() == [b"*"]
    rig.clock.advance(0)
    assert outcome(d).check(ProtocolViolation)


def test_an_unoffered_mechanism_is_named():
    tokens = Tokens(FIRST)
    rig, d = start(tokens, b"OAUTHBEARER")
    rig.greet("IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2")
    failure = outcome(d)
    assert failure.check(AuthFailed)
    assert str(failure.value) == ("the server does not offer AUTHENTICATE OAUTHBEARER "
                                  "(it offers PLAIN XOAUTH2)")
    assert tokens.calls == [] and rig.sent() == []


def test_never_in_clear_whatever_allow_cleartext_says():
    tokens = Tokens(FIRST)
    rig, d = start(tokens, transport=Transport, server="tcp:mail.example.test:143",
                   allow_cleartext=True)
    rig.greet(CAPS)
    failure = outcome(d)
    assert failure.check(CleartextRefused)
    assert "an access token is never sent in clear" in str(failure.value)
    assert tokens.calls == [] and rig.sent() == []


def test_starttls_first_then_the_token():
    tokens = Tokens(FIRST)
    rig, d = start(tokens, transport=StartTLSTransport, server="tcp:mail.example.test:143")
    rig.greet("IMAP4rev1 STARTTLS LOGINDISABLED")
    rig.answer(b"STARTTLS")
    assert rig.transport.tls_started_with is not None and tokens.calls == []
    rig.answer(b"CAPABILITY", f"CAPABILITY {CAPS}")
    assert rig.expect(b"AUTHENTICATE") == b"XOAUTH2 " + xoauth2(FIRST)
    rig.reply()
    rig.answer(b"CAPABILITY", "CAPABILITY IMAP4rev1")
    assert isinstance(outcome(d), dict)


def test_a_token_source_failure_is_its_own():
    rig, d = start(Tokens(TokenError("token endpoint idp.example.org: HTTP 503")))
    rig.greet(CAPS)
    failure = outcome(d)
    assert failure.check(TokenError)
    assert str(failure.value) == "token endpoint idp.example.org: HTTP 503"
    assert rig.sent() == []
