"""Enrolment: the first refresh token, by the device authorization grant (RFC 8628).

``device_grant`` asks the device authorization endpoint for a code, has ``show`` tell the
user where to enter it, and polls the token endpoint until the user has approved (or denied,
or the code expired), then writes the refresh token to ``refresh_token_file`` (atomically,
mode 0600: ``store``).  The polling follows RFC 8628 3.5: it waits ``interval`` seconds
(5 unless the server says otherwise) between requests, 5 seconds more after each
``slow_down``, twice as long after a failed request (at most ``MAX_FAILURES`` in a row), and
never past the code's ``expires_in``, so it is bounded in time and in count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from mailsocketd.mail.errors import TokenError
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.http import HttpReply, post_form
from mailsocketd.mail.oauth.messages import (
    DeviceAuthorization,
    ErrorReply,
    GrantError,
    device_authorization_form,
    device_token_form,
    parse_device_authorization,
    parse_token_reply,
    refresh_token_of,
)
from mailsocketd.mail.oauth.store import read_client_secret, write_refresh_token
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor

__all__ = ["Poster", "default_poster", "device_grant"]

SLOW_DOWN = 5.0
MIN_INTERVAL = 1.0
MAX_FAILURES = 5
MAX_INTERVAL = 60.0

Poster = Callable[[str, Secret, str], Deferred[HttpReply]]


def default_poster(reactor: ConnectReactor, config: OAuth2Config) -> Poster:
    """POST to one of the configured endpoints (its ca_file, its timeout)."""
    def post(url: str, form: Secret, what: str) -> Deferred[HttpReply]:
        return post_form(reactor, url, form, ca_file=config.ca_file, timeout=config.timeout,
                         what=what)
    return post


async def device_grant(config: OAuth2Config, reactor: ConnectReactor,
                       show: Callable[[DeviceAuthorization], None], *,
                       environ: Mapping[str, str] | None = None,
                       poster: Poster | None = None) -> Secret:
    """Run the grant (see the module docstring); the refresh token, already written.

    Fails with TokenError (the endpoint failed), GrantError (denied, expired, refused)
    or SecretError (a file); their text is one line without a secret.
    """
    post = poster or default_poster(reactor, config)
    device_url = config.device_authorization_url
    if device_url is None:
        raise GrantError("no device_authorization_url in the [oauth2] table, and none "
                               "is known for this token_url")
    client_secret = None
    if config.client_secret_file is not None:
        client_secret = read_client_secret(config.client_secret_file,
                                           os.environ if environ is None else environ)
    sent = [client_secret] if client_secret is not None else []
    what = f"device authorization endpoint {_host(device_url)}"
    reply = await post(device_url, device_authorization_form(config, client_secret), what)
    authorization = parse_device_authorization(reply.status, reply.body, what, sent)
    show(authorization)
    refresh_token = await _poll(config, reactor, post, authorization, sent)
    write_refresh_token(config.refresh_token_file, refresh_token)
    return refresh_token


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


async def _poll(config: OAuth2Config, reactor: ConnectReactor, post: Poster,
                authorization: DeviceAuthorization, sent: list[Secret]) -> Secret:
    clock = IReactorTime(reactor)
    deadline = clock.seconds() + authorization.expires_in
    interval = max(MIN_INTERVAL, authorization.interval)
    failures = 0
    what = f"token endpoint {config.token_host}"
    client_secret = sent[0] if sent else None
    form = device_token_form(config, authorization.device_code, client_secret)
    secrets = [*sent, authorization.device_code]
    while True:
        wait = min(interval * 2 ** failures, MAX_INTERVAL)
        if clock.seconds() + wait >= deadline:
            raise GrantError("the code expired before it was approved; run the "
                                   "command again")
        await deferLater(clock, wait)
        try:
            http = await post(config.token_url, form, what)
            reply = parse_token_reply(http.status, http.body, what, secrets)
        except TokenError:
            failures += 1
            if failures >= MAX_FAILURES:
                raise
            continue
        failures = 0
        if not isinstance(reply, ErrorReply):
            return refresh_token_of(reply, what)
        if reply.error == "authorization_pending":
            continue
        if reply.error == "slow_down":
            interval = min(interval + SLOW_DOWN, MAX_INTERVAL)
            continue
        if reply.error == "access_denied":
            raise GrantError("access was denied at the verification page")
        if reply.error == "expired_token":
            raise GrantError("the code expired before it was approved; run the "
                                   "command again")
        raise GrantError(f"{what}: {reply.line()}")
