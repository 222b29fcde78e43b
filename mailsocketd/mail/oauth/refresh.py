"""The daemon's own access tokens: the RFC 6749 refresh grant, cached, rotated, never looping.

``RefreshTokens`` is a ``TokenProvider`` for an account with an ``[oauth2]`` table:

* ``token()`` hands out the cached access token while it has more than a margin of its life
  left (``expires_in``: the margin is 5 minutes, or a quarter of a short lifetime), and
  otherwise runs the refresh grant: it reads ``refresh_token_file`` (and ``client_secret_file``)
  again, so a re-enrolment or a hand-edited file is picked up without a restart, and POSTs to
  ``token_url``.  Callers that ask while a refresh is under way share it: one request at a time;
  a caller that gives up (cancels its Deferred) leaves the request to finish for the others.
  A refresh is due only when a token is asked for (at login), so an idle account costs nothing.
* A rotated refresh token in the reply replaces the file atomically, mode 0600 (``store``).
  Should that fail, the new access token is still used and the failure logged as an error:
  the old refresh token may have stopped working, and the operator must know.
* ``refused()`` forgets the cached access token: the next ``token()`` refreshes.
* A failure is never retried at once.  After one, ``token()`` fails at once with the same text
  (and when the next try is) until a jittered, growing delay has passed: from 5 s up to 10
  minutes for an endpoint that is down, times out or answers nonsense (``TokenError``, the
  ordinary backoff), from 5 minutes up to an hour when the endpoint refused the refresh token
  or the client for good (``TokenRefused``: ``invalid_grant``...; re-enrol with
  ``mailsocketd-oauth2``).  A refresh token file that changed since it was refused is tried at
  once.  A success forgets the failures.

No text here holds a token or a secret; log lines name the account and the endpoint's host.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Mapping

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.mail.errors import TokenError, TokenRefused
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.http import HttpReply, post_form
from mailsocketd.mail.oauth.messages import (
    REFUSING_ERRORS,
    ErrorReply,
    TokenReply,
    parse_token_reply,
    refresh_form,
)
from mailsocketd.mail.oauth.store import (
    read_client_secret,
    read_refresh_token,
    write_refresh_token,
)
from mailsocketd.mail.oauth.tokens import TokenProvider
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor

__all__ = ["RefreshTokens", "refreshing_provider"]

MARGIN = 300.0            # refresh this long before the token expires...
MARGIN_SHARE = 0.25       # ...or this share of a shorter lifetime
DEFAULT_LIFETIME = 3600.0  # when the reply does not say (it is then refreshed after 55 minutes)
RETRY = (5.0, 600.0)       # first and longest delay after a TokenError
REFUSED_RETRY = (300.0, 3600.0)  # after a TokenRefused

Poster = Callable[[OAuth2Config, Secret, str], Deferred[HttpReply]]


def _fingerprint(token: Secret) -> bytes:
    return hashlib.sha256(token.reveal()).digest()


class RefreshTokens:
    """Access tokens by the refresh grant (see the module docstring)."""

    log = Logger()

    def __init__(self, config: OAuth2Config, reactor: ConnectReactor, *, label: str,
                 environ: Mapping[str, str] | None = None,
                 jitter: Callable[[], float] = random.random,
                 poster: Poster | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.label = label
        self.environ = os.environ if environ is None else environ
        self.jitter = jitter
        self.what = f"token endpoint {config.token_host}"
        self._post = poster or self._post_https
        self._token: Secret | None = None
        self._fresh_until = 0.0
        self._waiters: list[Deferred[Secret]] | None = None  # a refresh under way
        self._failures = 0
        self._error: TokenError | None = None
        self._retry_at = 0.0
        self._refused_token: bytes | None = None  # the fingerprint of a refused refresh token

    # -- the TokenProvider interface -----------------------------------------------------------

    def token(self) -> Deferred[Secret]:
        now = self.reactor.seconds()
        if self._token is not None and now < self._fresh_until:
            return succeed(self._token)
        if self._waiters is None and self._error is not None and now < self._retry_at \
                and not self._file_changed():
            return fail(type(self._error)(f"{self._error}; next try in "
                                          f"{self._retry_at - now:.0f} s"))
        # Each caller gets a Deferred of its own: one that gives up (a login timing out or
        # its connection lost) cancels only its wait, never the request the others share.
        waiter: Deferred[Secret] = Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        ensureDeferred(self._refresh()).addBoth(self._done)
        return waiter

    def refused(self) -> None:
        """The server refused the cached token: forget it, the next token() refreshes."""
        self._token = None

    # -- refreshing -----------------------------------------------------------------------------

    async def _refresh(self) -> Secret:
        refresh_token = read_refresh_token(self.config.refresh_token_file)
        client_secret = None
        if self.config.client_secret_file is not None:
            client_secret = read_client_secret(self.config.client_secret_file, self.environ)
        sent = [refresh_token] + ([client_secret] if client_secret else [])
        asked_at = self.reactor.seconds()
        http = await self._post(self.config, refresh_form(self.config, refresh_token,
                                                           client_secret), self.what)
        reply = parse_token_reply(http.status, http.body, self.what, sent)
        if isinstance(reply, ErrorReply):
            if reply.error not in REFUSING_ERRORS:  # temporarily_unavailable, slow_down...
                raise TokenError(f"{self.what}: {reply.line()}")
            self._refused_token = _fingerprint(refresh_token)
            hint = "; get a new refresh token with mailsocketd-oauth2" \
                if reply.error == "invalid_grant" else ""
            raise TokenRefused(f"{self.what}: {reply.line()}{hint}")
        self._keep(reply, asked_at)
        if reply.refresh_token is not None and \
                reply.refresh_token.reveal() != refresh_token.reveal():
            self._save(reply.refresh_token)
        return reply.access_token

    def _keep(self, reply: TokenReply, asked_at: float) -> None:
        lifetime = reply.expires_in or DEFAULT_LIFETIME
        self._token = reply.access_token
        self._fresh_until = asked_at + lifetime - min(MARGIN, lifetime * MARGIN_SHARE)
        self.log.info("account {account}: new access token from {endpoint}, valid "
                      "{lifetime:.0f} s", account=self.label, endpoint=self.config.token_host,
                      lifetime=lifetime, event="oauth2_token")

    def _save(self, token: Secret) -> None:
        try:
            write_refresh_token(self.config.refresh_token_file, token)
        except Exception as e:  # the access token is still good: use it, but say so loudly
            self.log.error("account {account}: the rotated refresh token could not be saved: "
                           "{error}", account=self.label, error=str(e),
                           event="oauth2_refresh_token_unsaved")
            return
        self.log.info("account {account}: the rotated refresh token was saved to {file}",
                      account=self.label, file=self.config.refresh_token_file,
                      event="oauth2_refresh_token_saved")

    def _done(self, result: Secret | Failure) -> None:
        waiters, self._waiters = self._waiters or [], None
        if isinstance(result, Failure):
            self._failed(result)
        else:
            self._failures, self._error, self._refused_token = 0, None, None
        for waiter in waiters:
            if waiter.called:  # its caller gave up (cancelled it)
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _failed(self, failure: Failure) -> None:
        error = failure.value
        if not isinstance(error, TokenError):  # a file that cannot be read: no request was made
            return
        self._failures += 1
        first, longest = REFUSED_RETRY if isinstance(error, TokenRefused) else RETRY
        delay = min(longest, first * 2 ** (self._failures - 1)) * (0.75 + 0.5 * self.jitter())
        self._error = error
        self._retry_at = self.reactor.seconds() + delay
        self.log.warn("account {account}: {error}", account=self.label, error=str(error),
                      event="oauth2_refresh_failed")

    def _file_changed(self) -> bool:
        """After a refusal: does the file now hold another refresh token (re-enrolled)?"""
        if self._refused_token is None:
            return False
        try:
            return _fingerprint(read_refresh_token(self.config.refresh_token_file)) \
                != self._refused_token
        except Exception:
            return False

    def _post_https(self, config: OAuth2Config, form: Secret, what: str) -> Deferred[HttpReply]:
        return post_form(self.reactor, config.token_url, form, ca_file=config.ca_file,
                         timeout=config.timeout, what=what)


def refreshing_provider(config: OAuth2Config, reactor: ConnectReactor, *, label: str,
                        environ: Mapping[str, str] | None = None) -> TokenProvider:
    """An account's RefreshTokens, as the IMAP side sees it."""
    return RefreshTokens(config, reactor, label=label, environ=environ)
