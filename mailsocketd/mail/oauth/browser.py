"""Enrolment in a browser: the authorization code grant with PKCE and a loopback redirect.

For providers that do not allow their mail scope in the device grant (Google does not allow
``https://mail.google.com/`` there), ``mailsocketd-oauth2 --browser`` does what RFC 8252 says a
native application should: it listens on ``127.0.0.1`` (a port of the system's choosing, or
``--port`` for an SSH tunnel), prints the authorization URL, and waits for the browser to be
sent back to ``http://127.0.0.1:PORT/`` with the code.  The code is worth nothing without the
PKCE verifier (RFC 7636, S256) that never left this process, and a request whose ``state``
does not match is answered 400 and ignored.  The code is then exchanged at the token endpoint
and the refresh token written to ``refresh_token_file`` (0600, atomically).

The wait is bounded (``wait`` seconds), the listener is closed whatever happens, and the
redirect's URL (it holds the code) is never logged.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import error as neterror
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mailsocketd.clean import clean
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.device import Poster, default_poster
from mailsocketd.mail.oauth.messages import (
    ErrorReply,
    GrantError,
    authorization_code_form,
    authorization_request_url,
    parse_token_reply,
    pkce_pair,
    refresh_token_of,
)
from mailsocketd.mail.oauth.store import read_client_secret, write_refresh_token
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor

__all__ = ["WAIT", "browser_grant"]

WAIT = 600.0
FLUSH = 0.2  # seconds for the last page to reach the browser before the command may end
MAX_CODE = 4096
DONE_PAGE = b"mailsocketd: signed in. You may close this window.\n"
FAILED_PAGE = b"mailsocketd: the sign-in failed; the terminal says why.\n"


class _Redirect(Resource):
    """The redirect URI: takes the first request with the right ``state``."""

    isLeaf = True

    def __init__(self, state: str, result: Deferred[Secret]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.state = state
        self.result = result
        self.answered = False

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Connection", b"close")
        args = {key.decode("ascii", "replace"): values[0]
                for key, values in (request.args or {}).items() if values}
        state = args.get("state", b"")
        if self.answered or not hmac.compare_digest(state, self.state.encode("ascii")):
            request.setResponseCode(400)
            return b"mailsocketd: not the sign-in this port waits for.\n"
        if "error" in args:
            error = clean(args["error"], replacement=" ", layout="fold", limit=64)
            text = clean(args.get("error_description", b""), replacement=" ", layout="fold",
                         limit=160)
            self._answered(request, GrantError(
                "the sign-in failed: " + (f"{error} ({text})" if text else error)))
            return FAILED_PAGE
        code = args.get("code", b"")
        if not code or len(code) > MAX_CODE:
            request.setResponseCode(400)
            return b"mailsocketd: no code in the redirect.\n"
        self._answered(request, Secret(code))
        return DONE_PAGE

    def _answered(self, request: Request, outcome: Secret | GrantError) -> None:
        """Fire the result once the page is written (not before: the command may end then)."""
        self.answered = True

        def fire(_: object) -> None:
            if self.result.called:
                return
            if isinstance(outcome, GrantError):
                self.result.errback(outcome)
            else:
                self.result.callback(outcome)
        request.notifyFinish().addBoth(fire)


class _QuietSite(Site):
    """A Site that logs no request: the redirect's URL holds the authorization code."""

    def log(self, request: Any) -> None:
        pass


async def browser_grant(config: OAuth2Config, reactor: ConnectReactor,
                        show: Callable[[str, int], None], *, port: int = 0,
                        wait: float = WAIT, environ: Mapping[str, str] | None = None,
                        poster: Poster | None = None) -> Secret:
    """Run the grant (see the module docstring); the refresh token, already written.
    ``show(url, port)`` tells the user where to sign in.  Fails with GrantError, TokenError or
    SecretError, one line without a secret."""
    post = poster or default_poster(reactor, config)
    client_secret = None
    if config.client_secret_file is not None:
        client_secret = read_client_secret(config.client_secret_file,
                                           os.environ if environ is None else environ)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    if config.authorization_url is None:  # before listening: the same error as the URL's
        authorization_request_url(config, "", state, challenge)
    def url_for(redirect_uri: str) -> str:
        return authorization_request_url(config, redirect_uri, state, challenge)

    redirect_uri, code_secret = await _wait_for_code(reactor, state, url_for, show, port=port,
                                                     wait=wait)
    what = f"token endpoint {config.token_host}"
    form = authorization_code_form(config, code_secret, redirect_uri, verifier, client_secret)
    http = await post(config.token_url, form, what)
    sent = [code_secret, verifier] + ([client_secret] if client_secret is not None else [])
    reply = parse_token_reply(http.status, http.body, what, sent)
    if isinstance(reply, ErrorReply):
        raise GrantError(f"{what}: {reply.line()}")
    refresh_token = refresh_token_of(reply, what)
    write_refresh_token(config.refresh_token_file, refresh_token)
    return refresh_token


async def _wait_for_code(reactor: ConnectReactor, state: str, url_for: Callable[[str], str],
                         show: Callable[[str, int], None], *, port: int,
                         wait: float) -> tuple[str, Secret]:
    """Listen on 127.0.0.1, show the URL, and wait for the redirect; (redirect URI, code)."""
    result: Deferred[Secret] = Deferred()
    site = _QuietSite(_Redirect(state, result))  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    endpoint = TCP4ServerEndpoint(IReactorTCP(reactor), port, interface="127.0.0.1")
    try:
        listener = await endpoint.listen(site)
    except neterror.CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
        raise GrantError(f"cannot listen on 127.0.0.1 port {port}: "
                         f"{clean(reason, replacement=' ', limit=80)}") from None
    try:
        listening = listener.getHost().port
        redirect_uri = f"http://127.0.0.1:{listening}/"
        show(url_for(redirect_uri), listening)
        result.addTimeout(wait, IReactorTime(reactor))
        try:
            code = await result
        except TimeoutError:
            raise GrantError(f"no sign-in within {wait / 60:g} minutes; run the command "
                             "again") from None
        return redirect_uri, code
    finally:
        await listener.stopListening()
        await deferLater(IReactorTime(reactor), FLUSH)  # the browser's page leaves
