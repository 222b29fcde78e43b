"""The OAuth2 messages, pure: forms sent, replies checked, no secret in any error."""
# ruff: noqa: S106 - made-up tokens to look for in messages

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from mailsocketd.mail.errors import TokenError, TokenRefused
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.messages import (
    ErrorReply,
    GrantError,
    TokenReply,
    authorization_code_form,
    authorization_request_url,
    device_authorization_form,
    device_token_form,
    parse_device_authorization,
    parse_token_reply,
    pkce_pair,
    refresh_form,
    s256_challenge,
)
from mailsocketd.mail.secrets import Secret

WHAT = "token endpoint idp.test"
CONFIG = OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                      refresh_token_file="/x", scope="mail offline_access")
REFRESH = Secret(b"rt-Refresh+Token/with=chars")
CLIENT = Secret(b"client&secret=1")


def form(secret):
    return dict(parse_qsl(secret.reveal().decode("ascii"), strict_parsing=True))


def test_the_refresh_form_is_urlencoded():
    assert form(refresh_form(CONFIG, REFRESH, CLIENT)) == {
        "grant_type": "refresh_token", "refresh_token": "rt-Refresh+Token/with=chars",
        "scope": "mail offline_access", "client_id": "cid", "client_secret": "client&secret=1"}
    public = OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                          refresh_token_file="/x")
    assert form(refresh_form(public, REFRESH, None)) == {
        "grant_type": "refresh_token", "refresh_token": "rt-Refresh+Token/with=chars",
        "client_id": "cid"}
    assert "rt-" not in repr(refresh_form(CONFIG, REFRESH, CLIENT))


def test_the_device_forms():
    assert form(device_authorization_form(CONFIG, None)) == {"client_id": "cid",
                                                             "scope": "mail offline_access"}
    assert form(device_token_form(CONFIG, Secret(b"dc-1"), CLIENT)) == {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "dc-1",
        "client_id": "cid", "client_secret": "client&secret=1"}


def reply(status, value):
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return parse_token_reply(status, body, WHAT, [REFRESH, CLIENT])


def test_a_token_reply():
    r = reply(200, {"access_token": "at.x-y_z~+/==", "token_type": "bearer",
                    "expires_in": "3599", "refresh_token": "rt-2", "scope": "mail"})
    assert isinstance(r, TokenReply)
    assert r.access_token.reveal() == b"at.x-y_z~+/=="
    assert r.expires_in == 3599.0
    assert r.refresh_token is not None and r.refresh_token.reveal() == b"rt-2"
    r = reply(200, {"access_token": "at", "token_type": "Bearer"})
    assert isinstance(r, TokenReply) and (r.expires_in, r.refresh_token) == (None, None)


def test_an_error_reply_is_returned_cleaned_and_redacted():
    r = reply(400, {"error": "invalid_grant",
                    "error_description": "bad token rt-Refresh+Token/with=chars\r\nX: y"})
    assert r == ErrorReply(400, "invalid_grant", "bad token <hidden>  X: y")
    assert r.line() == "invalid_grant (bad token <hidden>  X: y)"
    assert reply(200, {"error": "slow_down"}) == ErrorReply(200, "slow_down", "")
    assert reply(403, {"error": "x"}).line() == "HTTP 403: x"
    long = reply(400, {"error": "e", "error_description": "d" * 1000})
    assert isinstance(long, ErrorReply) and len(long.description) <= 160


@pytest.mark.parametrize(("status", "value", "kind", "text"), [
    (500, b"<html>", TokenError, f"{WHAT}: HTTP 500 (the server failed; retried later)"),
    (502, {"error": "invalid_grant"}, TokenError, f"{WHAT}: HTTP 502"),
    (200, b"{", TokenError, f"{WHAT}: the reply is not JSON"),
    (200, b"[" * 100000, TokenError, f"{WHAT}: the reply is not JSON"),
    (404, b"nope", TokenError, f"{WHAT}: HTTP 404, not an OAuth2 reply"),
    (401, {"detail": "no"}, TokenError, f"{WHAT}: HTTP 401 without an OAuth2 error code"),
    (200, "str", TokenError, f"{WHAT}: the reply is not a JSON object"),
    (200, {"error": 5, "access_token": 1}, TokenError, f"{WHAT}: no access_token"),
    (200, {"access_token": "t"}, TokenError, f"{WHAT}: the token is not a bearer token "
                                              "(token_type 'None')"),
    (200, {"access_token": "t\u00e9", "token_type": "Bearer"}, TokenError,
     f"{WHAT}: the access token is not ASCII"),
    (200, {"access_token": "t t", "token_type": "Bearer"}, TokenError,
     f"{WHAT} gave something that is not an access token"),
    (200, {"access_token": "t", "token_type": "Bearer", "expires_in": True}, TokenError,
     f"{WHAT}: expires_in is not a number of seconds"),
    (200, {"access_token": "t", "token_type": "Bearer", "refresh_token": 5}, TokenError,
     f"{WHAT}: refresh_token is not a string"),
    (200, {"access_token": "t", "token_type": "Bearer", "refresh_token": "a b"}, TokenError,
     f"{WHAT}: not a usable refresh token"),
])
def test_bad_replies(status, value, kind, text):
    with pytest.raises(kind) as info:
        reply(status, value)
    assert type(info.value) is kind  # an endpoint's fault: it backs off (not a SecretError)
    assert str(info.value).startswith(text)


def device(value, status=200):
    return parse_device_authorization(status, json.dumps(value).encode(), WHAT)


def test_a_device_authorization_reply():
    d = device({"device_code": "dc", "user_code": "ABCD-EFGH",
                "verification_uri": "https://microsoft.com/devicelogin", "expires_in": 900,
                "interval": 5, "message": "To sign in..."})
    assert (d.device_code.reveal(), d.user_code, d.verification_uri, d.expires_in, d.interval,
            d.verification_uri_complete) == (b"dc", "ABCD-EFGH",
                                             "https://microsoft.com/devicelogin", 900.0, 5.0,
                                             None)
    # Google's name for it, and the defaults of RFC 8628
    g = device({"device_code": "dc", "user_code": "ABC-DEF-GHI",
                "verification_url": "https://www.google.com/device"})
    assert (g.verification_uri, g.interval, g.expires_in) == (
        "https://www.google.com/device", 5.0, 1800.0)


@pytest.mark.parametrize(("value", "text"), [
    ({"user_code": "A", "verification_uri": "https://x"}, "no usable device_code"),
    ({"device_code": "d", "verification_uri": "https://x"}, "no usable user_code"),
    ({"device_code": "d", "user_code": "A\nB", "verification_uri": "https://x"},
     "no usable user_code"),
    ({"device_code": "d", "user_code": "A"}, "no verification_uri"),
    ({"device_code": "d", "user_code": "A", "verification_uri": "http://x"},
     "verification_uri is not an https:// URL"),
    ({"device_code": "d", "user_code": "A", "verification_uri": "https://x\u202e"},
     "verification_uri is not an https:// URL"),
])
def test_bad_device_replies(value, text):
    with pytest.raises(TokenError, match=text):
        device(value)


def test_a_refused_device_request():
    with pytest.raises(TokenRefused, match="invalid_client"):
        device({"error": "invalid_client"}, status=401)


def test_pkce_s256_is_rfc_7636s():
    # RFC 7636 appendix B
    assert s256_challenge(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") \
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier.reveal()) <= 128
    assert challenge == s256_challenge(verifier.reveal())
    assert pkce_pair()[1] != challenge


def test_the_authorization_url_and_the_code_exchange():
    config = OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                          refresh_token_file="/x", scope="mail offline_access",
                          authorization_url="https://idp.test/auth?tenant=x")
    url = authorization_request_url(config, "http://127.0.0.1:5000/", "st", "ch")
    base, query = url.split("?", 1)[0], dict(parse_qsl(url.split("?", 1)[1]))
    assert base == "https://idp.test/auth"
    assert query == {"tenant": "x", "response_type": "code", "client_id": "cid",
                     "redirect_uri": "http://127.0.0.1:5000/", "scope": "mail offline_access",
                     "state": "st", "code_challenge": "ch", "code_challenge_method": "S256",
                     "access_type": "offline", "prompt": "consent"}
    assert form(authorization_code_form(config, Secret(b"c0de"), "http://127.0.0.1:5000/",
                                        Secret(b"v" * 43), CLIENT)) == {
        "grant_type": "authorization_code", "code": "c0de",
        "redirect_uri": "http://127.0.0.1:5000/", "code_verifier": "v" * 43,
        "client_id": "cid", "client_secret": "client&secret=1"}
    with pytest.raises(GrantError, match="no authorization_url"):
        authorization_request_url(CONFIG, "http://127.0.0.1:1/", "s", "c")
