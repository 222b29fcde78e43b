"""RefreshTokens without sockets: a task.Clock and a scripted poster stand for the reactor and
the token endpoint (the real HTTPS exchange is tests/integration/test_oauth_refresh.py)."""
# ruff: noqa: S106 - made-up tokens to look for in messages

from __future__ import annotations

import json
import shutil
import stat
from typing import Any, cast

import pytest
from logrig import global_log_events
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mailsocketd.mail.errors import SecretError, TokenError, TokenRefused
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.http import HttpReply
from mailsocketd.mail.oauth.refresh import RefreshTokens
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor


class Endpoint:
    """A scripted token endpoint: each request gets the next reply (or a Deferred)."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.forms: list[str] = []

    def __call__(self, config: OAuth2Config, form: Secret, what: str) -> Deferred[HttpReply]:
        self.forms.append(form.reveal().decode())
        step = self.replies.pop(0) if self.replies else (200, {"access_token": "at",
                                                              "token_type": "Bearer"})
        if isinstance(step, Deferred):
            return step
        if isinstance(step, Exception):
            d: Deferred[HttpReply] = Deferred()
            d.errback(step)
            return d
        status, value = step
        return succeed(HttpReply(status, json.dumps(value).encode()))


def token(n, expires_in=3600, **more):
    return (200, {"access_token": f"at{n}", "token_type": "Bearer", "expires_in": expires_in,
                  **more})


@pytest.fixture
def rig(tmp_path):
    refresh = tmp_path / "rt"
    refresh.write_text("rt-1\n")
    refresh.chmod(0o600)
    config = OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                          refresh_token_file=str(refresh))
    clock, endpoint = Clock(), Endpoint()
    tokens = RefreshTokens(config, cast(ConnectReactor, clock), label="work", environ={},
                           jitter=lambda: 0.5, poster=endpoint)
    return tokens, clock, endpoint, refresh


def result(d):
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has fired"
    if isinstance(out[0], Failure):
        return out[0].value
    return out[0].reveal().decode()


def test_cached_until_the_margin_then_refreshed(rig):
    tokens, clock, endpoint, _ = rig
    endpoint.replies[:] = [token(1, 3600), token(2, 60), token(3, None), token(4)]
    assert result(tokens.token()) == "at1"
    clock.advance(3299)
    assert result(tokens.token()) == "at1" and len(endpoint.forms) == 1
    clock.advance(1)  # 5 minutes before it expires
    assert result(tokens.token()) == "at2"
    clock.advance(44)  # a short lifetime: a quarter of it is the margin (15 s)
    assert result(tokens.token()) == "at2"
    clock.advance(1)
    assert result(tokens.token()) == "at3"  # no expires_in: taken as an hour
    clock.advance(3299)
    assert result(tokens.token()) == "at3"
    clock.advance(1)
    assert result(tokens.token()) == "at4"
    assert len(endpoint.forms) == 4
    assert "refresh_token=rt-1" in endpoint.forms[0]


def test_refused_forgets_the_cached_token(rig):
    tokens, _, endpoint, _ = rig
    endpoint.replies[:] = [token(1), token(2)]
    assert result(tokens.token()) == "at1"
    tokens.refused()
    assert result(tokens.token()) == "at2"


def test_callers_during_a_refresh_share_it_success_and_failure(rig):
    tokens, _, endpoint, _ = rig
    pending: Deferred[HttpReply] = Deferred()
    endpoint.replies[:] = [pending]
    first, second = tokens.token(), tokens.token()
    assert len(endpoint.forms) == 1 and not first.called and not second.called
    pending.callback(HttpReply(200, b'{"access_token": "at1", "token_type": "Bearer"}'))
    assert result(first) == result(second) == "at1"
    tokens.refused()
    failing: Deferred[HttpReply] = Deferred()
    endpoint.replies[:] = [failing]
    first, second = tokens.token(), tokens.token()
    failing.errback(TokenError("token endpoint idp.test: down"))
    assert str(result(first)) == str(result(second)) == "token endpoint idp.test: down"


def test_a_caller_that_gives_up_does_not_cancel_the_request(rig):
    """A login that times out (or loses its connection) cancels its own wait only: the
    request goes on, its token is kept for the next login, and nothing backs off."""
    tokens, _, endpoint, _ = rig
    pending: Deferred[HttpReply] = Deferred()
    endpoint.replies[:] = [pending]
    first, second = tokens.token(), tokens.token()
    first.cancel()
    assert isinstance(result(first), CancelledError)
    assert not pending.called and not second.called
    pending.callback(HttpReply(200, b'{"access_token": "at1", "token_type": "Bearer"}'))
    assert result(second) == "at1"
    assert result(tokens.token()) == "at1"  # cached
    assert len(endpoint.forms) == 1 and tokens._failures == 0


def delays(tokens, clock, endpoint, failing, count):
    """The waits after ``count`` failures in a row (jitter 0.5: exactly the base delay)."""
    seen = []
    for _ in range(count):
        endpoint.replies[:] = [failing]
        tokens.token().addErrback(lambda f: None)
        seen.append(round(tokens._retry_at - clock.seconds(), 3))
        before = len(endpoint.forms)
        clock.advance(seen[-1] - 0.01)
        again = result(tokens.token())  # still waiting: fails at once, no request
        assert "next try in" in str(again) and len(endpoint.forms) == before
        clock.advance(0.02)
    return seen


def test_an_endpoint_that_is_down_backs_off_5s_to_10min(rig):
    tokens, clock, endpoint, _ = rig
    assert delays(tokens, clock, endpoint, (500, {}), 9) == [5, 10, 20, 40, 80, 160, 320, 600,
                                                             600]
    endpoint.replies[:] = [token(1)]
    assert result(tokens.token()) == "at1"  # a success forgets the failures
    tokens.refused()
    assert delays(tokens, clock, endpoint, (500, {}), 1) == [5]


def test_a_refused_refresh_token_backs_off_5min_to_1h(rig):
    tokens, clock, endpoint, _ = rig
    assert delays(tokens, clock, endpoint, (400, {"error": "invalid_grant"}), 5) == [
        300, 600, 1200, 2400, 3600]


def test_the_jitter_spreads_the_delay(rig):
    tokens, clock, endpoint, _ = rig
    for jitter, delay in [(0.0, 3.75), (1.0, 6.25)]:
        tokens.jitter = lambda j=jitter: j
        tokens._failures = 0
        endpoint.replies[:] = [(503, {})]
        tokens.token().addErrback(lambda f: None)
        assert tokens._retry_at - clock.seconds() == pytest.approx(delay)
        clock.advance(10)


@pytest.mark.parametrize(("code", "kind"), [
    ("invalid_grant", TokenRefused), ("invalid_client", TokenRefused),
    ("unauthorized_client", TokenRefused), ("invalid_scope", TokenRefused),
    ("temporarily_unavailable", TokenError), ("server_error", TokenError)])
def test_which_errors_are_for_good(rig, code, kind):
    tokens, _, endpoint, _ = rig
    endpoint.replies[:] = [(400, {"error": code})]
    error = result(tokens.token())
    assert type(error) is kind
    assert str(error).startswith(f"token endpoint idp.test: {code}")


def test_a_rotated_refresh_token_is_saved(rig):
    tokens, _, endpoint, refresh = rig
    endpoint.replies[:] = [token(1, refresh_token="rt-2"), token(2, refresh_token="rt-2")]
    with global_log_events() as events:
        assert result(tokens.token()) == "at1"
    assert refresh.read_text() == "rt-2\n"
    assert stat.S_IMODE(refresh.stat().st_mode) == 0o600
    assert [e["event"] for e in events if "event" in e] == ["oauth2_token",
                                                           "oauth2_refresh_token_saved"]
    tokens.refused()
    mtime = refresh.stat().st_mtime_ns
    assert result(tokens.token()) == "at2"
    assert "refresh_token=rt-2" in endpoint.forms[1]
    assert refresh.stat().st_mtime_ns == mtime  # the same token is not written again


def test_a_rotated_token_that_cannot_be_saved_is_logged_and_the_access_token_used(rig):
    tokens, _, endpoint, refresh = rig
    pending: Deferred[HttpReply] = Deferred()
    endpoint.replies[:] = [pending]
    d = tokens.token()
    shutil.rmtree(refresh.parent)  # the directory is gone when the reply comes
    with global_log_events() as events:
        pending.callback(HttpReply(200, json.dumps({
            "access_token": "at1", "token_type": "Bearer", "refresh_token": "rt-2"}).encode()))
    assert result(d) == "at1"
    [unsaved] = [e for e in events if e.get("event") == "oauth2_refresh_token_unsaved"]
    assert unsaved["log_level"].name == "error"
    assert "rt-2" not in unsaved["error"]
    assert unsaved["error"].startswith(f"refresh_token_file {refresh}: cannot write a new file "
                                       "beside it: No such file or directory")


def test_a_reenrolled_refresh_token_is_tried_at_once(rig):
    tokens, _, endpoint, refresh = rig
    endpoint.replies[:] = [(400, {"error": "invalid_grant"}), token(1)]
    assert isinstance(result(tokens.token()), TokenRefused)
    assert "next try in 300 s" in str(result(tokens.token()))
    refresh.write_text("rt-new\n")
    assert result(tokens.token()) == "at1"
    assert "refresh_token=rt-new" in endpoint.forms[-1]


def test_file_problems_fail_without_a_request_or_a_backoff(rig):
    tokens, _, endpoint, refresh = rig
    refresh.chmod(0o640)
    assert isinstance(result(tokens.token()), SecretError)
    refresh.write_text("\n")
    refresh.chmod(0o600)
    assert str(result(tokens.token())) == f"refresh_token_file {refresh}: empty (no refresh " \
                                          "token in it)"
    assert endpoint.forms == []
    refresh.write_text("rt-1\n")
    assert result(tokens.token()) == "at"


def test_no_secret_in_any_error_or_log(rig, tmp_path):
    tokens, _, endpoint, refresh = rig
    secret = tmp_path / "cs"
    secret.write_text("cs-Secret\n")
    secret.chmod(0o600)
    tokens.config = OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                                 refresh_token_file=str(refresh), client_secret_file=str(secret))
    endpoint.replies[:] = [(400, {"error": "invalid_grant",
                                  "error_description": "rt-1 and cs-Secret are no good"})]
    with global_log_events() as events:
        error = str(result(tokens.token()))
    assert "cs-Secret" in endpoint.forms[0]
    assert error == ("token endpoint idp.test: invalid_grant (<hidden> and <hidden> are no good)"
                     "; get a new refresh token with mailsocketd-oauth2")
    text = repr(events)
    assert "rt-1" not in text and "cs-Secret" not in text
