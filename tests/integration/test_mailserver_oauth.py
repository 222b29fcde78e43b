"""The MAIL_OAUTH=1 test mail server and its token minter, with stdlib clients only: what the
OAuth2 tests of mailsocketd rely on (both mechanisms, the error challenge, passwords too)."""

from __future__ import annotations

import base64
import imaplib
import json

import pytest
from mailserver import MailServer
from tokens import mint, oauthbearer_string, xoauth2_string


def starttls(server: MailServer) -> imaplib.IMAP4:
    conn = imaplib.IMAP4(server.host, server.imap_port, timeout=10)
    conn.starttls(ssl_context=server.ssl_context())
    return conn


def sasl(server: MailServer, mechanism: str, initial: str) -> tuple[list[bytes], str]:
    """AUTHENTICATE with ``initial``; the challenges seen, and "OK" or the error text."""
    challenges: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        challenges.append(challenge)
        return initial.encode() if len(challenges) == 1 else b""

    with starttls(server) as conn:
        try:
            conn.authenticate(mechanism, answer)
        except imaplib.IMAP4.error as e:
            return challenges[1:], str(e)
        return challenges[1:], "OK"


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_minted_token_logs_in(mailserver_oauth: MailServer, mechanism: str) -> None:
    token = mint(mailserver_oauth, "alice")
    initial = (xoauth2_string("alice", token) if mechanism == "XOAUTH2"
               else oauthbearer_string("alice", token, port=mailserver_oauth.imap_port))
    with starttls(mailserver_oauth) as conn:
        assert f"AUTH={mechanism}" in conn.capabilities
        assert "SASL-IR" in conn.capabilities
    assert sasl(mailserver_oauth, mechanism, initial) == ([], "OK")


@pytest.mark.parametrize(("mechanism", "expected"), [
    ("XOAUTH2", {"status": "401", "schemes": "bearer", "scope": "mail"}),
    ("OAUTHBEARER", {"status": "invalid_token"}),
])
def test_an_expired_token_gets_the_error_challenge(mailserver_oauth: MailServer, mechanism: str,
                                                    expected: dict[str, str]) -> None:
    token = mint(mailserver_oauth, "alice", expired=True)
    initial = (xoauth2_string("alice", token) if mechanism == "XOAUTH2"
               else oauthbearer_string("alice", token))
    challenges, result = sasl(mailserver_oauth, mechanism, initial)
    assert [json.loads(c) for c in challenges] == [expected]
    assert "AUTHENTICATIONFAILED" in result


def test_refusals_and_passwords(mailserver_oauth: MailServer) -> None:
    for token in (mint(mailserver_oauth, "alice", wrong_key=True), mint(mailserver_oauth, "bob")):
        challenges, result = sasl(mailserver_oauth, "XOAUTH2", xoauth2_string("alice", token))
        assert challenges and "AUTHENTICATIONFAILED" in result
    with starttls(mailserver_oauth) as conn:  # the password passdb is untouched
        assert conn.login("alice", "pw")[0] == "OK"
    with starttls(mailserver_oauth) as conn, pytest.raises(imaplib.IMAP4.error):
        conn.login("alice", mint(mailserver_oauth, "alice"))  # a token is no password
    log = mailserver_oauth.dovecot_log.read_text(errors="replace")
    assert "Incorrect JWT signature" in log
    assert "did not match 'bob'" in log


def test_the_key_survives_a_dovecot_restart(mailserver_oauth: MailServer) -> None:
    token = mint(mailserver_oauth, "alice")
    mailserver_oauth.stop_dovecot()
    mailserver_oauth.start_dovecot()
    assert sasl(mailserver_oauth, "XOAUTH2", xoauth2_string("alice", token)) == ([], "OK")
    assert base64.b64decode(token.split(".")[1] + "==")  # a JWT, not the key
