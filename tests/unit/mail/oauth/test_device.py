"""The device grant's polling without sockets: a task.Clock and a scripted endpoint (the real
exchange, and the command, are tests/integration/test_oauth_device.py)."""
# ruff: noqa: S106 - made-up tokens

from __future__ import annotations

import json
import stat
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mailsocketd.mail.errors import TokenError
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.device import device_grant
from mailsocketd.mail.oauth.http import HttpReply
from mailsocketd.mail.oauth.messages import DeviceAuthorization, GrantError
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor

PENDING = (400, {"error": "authorization_pending"})
TOKENS = (200, {"access_token": "at", "token_type": "Bearer", "refresh_token": "rt-new"})


class Endpoint:
    def __init__(self, clock: Clock, polls: list[Any], expires_in: int = 600,
                 interval: int | None = None) -> None:
        self.clock = clock
        self.polls = polls
        self.device = {"device_code": "dc-1", "user_code": "ABCD-EFGH",
                       "verification_uri": "https://idp.test/device", "expires_in": expires_in}
        if interval is not None:
            self.device["interval"] = interval
        self.times: list[float] = []
        self.urls: list[str] = []

    def __call__(self, url: str, form: Secret, what: str) -> Deferred[HttpReply]:
        self.urls.append(url)
        if url.endswith("/device"):
            return succeed(HttpReply(200, json.dumps(self.device).encode()))
        self.times.append(self.clock.seconds())
        step = self.polls.pop(0) if self.polls else PENDING
        if isinstance(step, Exception):
            d: Deferred[HttpReply] = Deferred()
            d.errback(step)
            return d
        return succeed(HttpReply(step[0], json.dumps(step[1]).encode()))


@pytest.fixture
def config(tmp_path):
    return OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                        refresh_token_file=str(tmp_path / "rt"),
                        device_authorization_url="https://idp.test/device")


def run(config, endpoint, clock, seconds=4000):
    shown: list[DeviceAuthorization] = []
    d = ensureDeferred(device_grant(config, cast(ConnectReactor, clock), shown.append,
                                    environ={}, poster=endpoint))
    out: list[Any] = []
    d.addBoth(out.append)
    for _ in range(int(seconds)):
        if out:
            break
        clock.advance(1)
    assert out, "the grant ended"
    assert [s.user_code for s in shown] == ["ABCD-EFGH"]
    return out[0].value if isinstance(out[0], Failure) else out[0]


def test_polls_every_interval_until_approved(config, tmp_path):
    clock = Clock()
    endpoint = Endpoint(clock, [PENDING, PENDING, TOKENS])
    token = run(config, endpoint, clock)
    assert token.reveal() == b"rt-new"
    assert endpoint.times == [5, 10, 15]  # RFC 8628: 5 s when the server does not say
    assert (tmp_path / "rt").read_text() == "rt-new\n"
    assert stat.S_IMODE((tmp_path / "rt").stat().st_mode) == 0o600


def test_slow_down_adds_5_seconds_and_the_server_interval_is_kept(config):
    clock = Clock()
    endpoint = Endpoint(clock, [PENDING, (400, {"error": "slow_down"}), PENDING, TOKENS],
                        interval=2)
    run(config, endpoint, clock)
    assert endpoint.times == [2, 4, 11, 18]


def test_failed_requests_double_the_wait_and_five_in_a_row_give_up(config):
    clock = Clock()
    down = TokenError("token endpoint idp.test: no complete reply within 30 s")
    endpoint = Endpoint(clock, [down, (503, {}), TOKENS], interval=1)
    assert run(config, endpoint, clock).reveal() == b"rt-new"
    assert endpoint.times == [1, 3, 7]
    clock = Clock()
    endpoint = Endpoint(clock, [down] * 10, interval=1)
    error = run(config, endpoint, clock)
    assert error is down and len(endpoint.times) == 5


@pytest.mark.parametrize(("step", "text"), [
    ((400, {"error": "access_denied"}), "access was denied at the verification page"),
    ((400, {"error": "expired_token"}), "the code expired before it was approved"),
    ((400, {"error": "invalid_grant"}), "token endpoint idp.test: invalid_grant"),
    ((200, {"access_token": "at", "token_type": "Bearer"}),
     "token endpoint idp.test gave an access token but no refresh token"),
])
def test_the_grant_ends(config, tmp_path, step, text):
    clock = Clock()
    error = run(config, Endpoint(clock, [PENDING, step]), clock)
    assert isinstance(error, GrantError)
    assert str(error).startswith(text)
    assert not (tmp_path / "rt").exists()


def test_polling_never_outlives_the_code(config):
    clock = Clock()
    endpoint = Endpoint(clock, [], expires_in=30, interval=5)
    error = run(config, endpoint, clock)
    assert str(error) == "the code expired before it was approved; run the command again"
    assert endpoint.times == [5, 10, 15, 20, 25]
    assert clock.seconds() == 25


def test_no_device_endpoint(tmp_path):
    config = OAuth2Config(token_url="https://idp.test/token", client_id="cid",
                          refresh_token_file=str(tmp_path / "rt"))
    clock = Clock()
    d = ensureDeferred(device_grant(config, cast(ConnectReactor, clock), print, environ={},
                                    poster=Endpoint(clock, [])))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert "no device_authorization_url" in str(failures[0].value)
