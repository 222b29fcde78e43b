"""Access tokens from a password source: asked again for every token, checked to be one."""
# ruff: noqa: S105 - a made-up token

from __future__ import annotations

import pytest
from twisted.internet import reactor
from twisted.python.failure import Failure

from mailsocketd.mail.errors import SecretError, TokenError, TokenRefused, failure_kind
from mailsocketd.mail.oauth.tokens import SourceTokens, check_bearer_token
from mailsocketd.mail.secrets import PasswordSource, Secret

TOKEN = "ya29.a0AfB_byC-x~y+z/0=="


def result_of(d):
    results: list[object] = []
    d.addBoth(results.append)
    assert results
    return results[0]


def test_a_token_from_a_file_is_read_again_each_time(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    tokens = SourceTokens(PasswordSource("file", file=str(path)), reactor, {})
    assert result_of(tokens.token()).reveal() == TOKEN.encode()
    path.write_text("fresh.token\n")  # a helper rewrote it
    tokens.refused()
    assert result_of(tokens.token()).reveal() == b"fresh.token"


@pytest.mark.parametrize(("value", "problem"), [
    ("Bearer abc", "something that is not an access token"),
    ("abc\x01def", "control characters"),
    ("a" * 9000, "longer than"),
])
def test_what_is_no_token_is_refused_without_showing_it(value, problem):
    tokens = SourceTokens(PasswordSource("env", env="TOKEN"), reactor, {"TOKEN": value})
    failure = result_of(tokens.token())
    assert failure.check(SecretError) and problem in str(failure.value)
    assert str(failure.value).startswith("password_env TOKEN gave ")
    assert value[:8] not in str(failure.value)


def test_check_bearer_token_passes_a_token_through():
    token = Secret(TOKEN.encode())
    assert check_bearer_token(token, "x") is token


def test_token_errors_back_off_like_a_server_down_or_a_wrong_password():
    assert failure_kind(Failure(TokenError("token endpoint x: HTTP 503"))) == "token"
    assert failure_kind(Failure(TokenRefused("token endpoint x: invalid_grant"))) == "auth"
