"""Logging in to an IMAP server without ever leaking the password.

``log_in``: greeting, STARTTLS (verified: the host name and the chain, see ``mail.tls``) on
``tcp:`` servers, then AUTHENTICATE with a mechanism the server offers (the preference of
``mail.tls.choose_mechanism``, shared with SMTP), or LOGIN.  Without TLS the password is sent
only when the policy says ``allow_cleartext``; otherwise CleartextRefused is raised before the
password is even fetched.  Connecting is ``connect.py``'s job.

An account with OAuth2 (``TokenLogin``) authenticates with XOAUTH2 or OAUTHBEARER
(``sasl.py``), over verified TLS only, whatever ``allow_cleartext`` says.  A refused token is
reported to its provider and a fresh one tried at once, on the same connection; only a second
refusal is the account's AuthFailed (and its long backoff).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.mail import imap4

from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.errors import (
    AuthFailed,
    CleartextRefused,
    MailError,
    ProtocolViolation,
    ServerRefused,
    clean_text,
)
from mailsocketd.mail.imap.client import ImapClient, command
from mailsocketd.mail.imap.sasl import (
    TokenRejected,
    authenticate_with_token,
    oauth_initial_response,
)
from mailsocketd.mail.oauth.tokens import TokenProvider
from mailsocketd.mail.secrets import COMMAND_TIMEOUT, Secret
from mailsocketd.mail.tls import TlsPolicy, choose_mechanism

__all__ = ["AUTHENTICATORS", "TRANSIENT_CODES", "Credentials", "TokenLogin", "authenticate_with",
           "log_in", "offered_mechanisms"]

log = Logger()
AUTHENTICATORS: dict[bytes, Callable[[bytes], Any]] = {
    b"PLAIN": imap4.PLAINAuthenticator,
    b"LOGIN": imap4.LOGINAuthenticator,
    b"CRAM-MD5": imap4.CramMD5ClientAuthenticator,
}
MAX_AUTH_ROUNDS = 4
# Response codes (RFC 5530) that mean "not now" rather than "wrong credentials".
TRANSIENT_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[INUSE]", b"[LIMIT]")


@dataclass(frozen=True)
class TokenLogin:
    """Log in with OAuth2 access tokens from ``tokens``, by ``mechanism`` (b"XOAUTH2" or
    b"OAUTHBEARER")."""

    mechanism: bytes
    tokens: TokenProvider


# How an account logs in: a password fetched when needed, or access tokens.
Credentials = Callable[[], Deferred[Secret]] | TokenLogin


def offered_mechanisms(caps: dict[bytes, Any]) -> list[bytes]:
    """The SASL mechanisms of the capabilities' ``AUTH=`` entries."""
    return [m for m in (caps.get(b"AUTH") or ()) if isinstance(m, bytes)]


async def _tls_if_offered(client: ImapClient, address: ServerAddress, tls: TlsPolicy,
                          caps: dict[bytes, Any]) -> dict[bytes, Any] | None:
    """The capabilities over TLS (already, or after STARTTLS), or None: no TLS on offer."""
    if client.encrypted:
        return caps
    if b"STARTTLS" in caps:
        return await client.start_tls(tls.options(address.host))
    return None


async def secure(client: ImapClient, address: ServerAddress, tls: TlsPolicy,
                 caps: dict[bytes, Any]) -> dict[bytes, Any]:
    """Make the connection TLS when it is not; refuse cleartext unless allowed."""
    secured = await _tls_if_offered(client, address, tls, caps)
    if secured is not None:
        return secured
    if not tls.allow_cleartext:
        raise CleartextRefused(
            "the server offers no STARTTLS: refusing to send the password in clear "
            "(use a tls: server, or set allow_cleartext = true for this account)")
    log.warn("{account}: logging in without TLS (allow_cleartext = true)",
             account=client.label, event="cleartext_login")
    return caps


def authenticate_with(client: ImapClient, mechanism: bytes, user: bytes,
                      secret: Secret) -> Deferred[Any]:
    """AUTHENTICATE with one SASL mechanism.

    Our own continuation, not IMAP4Client.authenticate: that one base64-encodes with line
    breaks every 76 characters (a long PLAIN response breaks) and tries STARTTLS on its own.
    """
    authenticator = AUTHENTICATORS[mechanism](user)
    rounds = [0]

    def answer(challenge: bytes) -> None:
        rounds[0] += 1
        try:
            decoded = base64.b64decode(challenge, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
        if decoded is None or rounds[0] > MAX_AUTH_ROUNDS:
            client.send_line(b"*")
            client.drop(ProtocolViolation("unexpected authentication challenge"))
            return
        client.send_line(base64.b64encode(authenticator.challengeResponse(secret.reveal(),
                                                                          decoded)))

    return client.run(command(b"AUTHENTICATE", mechanism, answer),
                      "the reply to AUTHENTICATE")


async def authenticate(client: ImapClient, user: str, caps: dict[bytes, Any],
                       secret: Secret) -> None:
    """AUTHENTICATE with the best offered mechanism, else LOGIN; AuthFailed if refused."""
    name = user.encode("utf-8")
    mechanism = choose_mechanism(offered_mechanisms(caps), client.encrypted)
    try:
        if mechanism is not None:
            await authenticate_with(client, mechanism, name, secret)
        elif b"LOGINDISABLED" in caps:
            raise AuthFailed("the server offers no login method this client supports "
                             "(LOGINDISABLED and no AUTH=PLAIN, LOGIN or CRAM-MD5)")
        else:
            await client.login_command(name, secret)
    except ServerRefused as e:
        # The server's words, cleaned, and never the password even if a server echoes it.
        text = _masked(e.text, secret)
        if any(code in e.text.encode("utf-8", "replace").upper() for code in TRANSIENT_CODES):
            raise MailError(f"login temporarily refused: {e.status} {text}") from None
        raise AuthFailed(f"login refused for user {clean_text(user, 100)}: "
                         f"{e.status} {text}".rstrip()) from None


def _masked(text: str, secret: Secret) -> str:
    """Server text, cleaned, with the secret masked should a server echo it (masked before
    cleaning: cleaning may cut it or turn its tabs into spaces)."""
    value = secret.reveal().decode("utf-8", "replace")
    return clean_text(text.replace(value, "***") if value else text)


async def secure_for_token(client: ImapClient, address: ServerAddress, tls: TlsPolicy,
                           caps: dict[bytes, Any]) -> dict[bytes, Any]:
    """TLS (STARTTLS when not yet), or CleartextRefused: a token never goes in clear."""
    secured = await _tls_if_offered(client, address, tls, caps)
    if secured is not None:
        return secured
    raise CleartextRefused("the server offers no STARTTLS: an access token is never sent in "
                           "clear, whatever allow_cleartext says (use a tls: server)")


async def try_token(client: ImapClient, address: ServerAddress, user: str, mechanism: bytes,
                    token: Secret, *, sasl_ir: bool, again: bool = False) -> None:
    """One AUTHENTICATE with ``token``; TokenRejected if the server refuses it."""
    response = oauth_initial_response(mechanism, user, token, address.host, address.port)
    d, challenges = authenticate_with_token(client, mechanism, response, sasl_ir)
    try:
        await d
    except ServerRefused as e:
        text = _masked(e.text, token)
        if any(code in e.text.encode("utf-8", "replace").upper() for code in TRANSIENT_CODES):
            raise MailError(f"login temporarily refused: {e.status} {text}") from None
        what = f"{mechanism.decode()}: {challenges[0]}" if challenges else mechanism.decode()
        fresh = ", a fresh one too" if again else ""
        error = TokenRejected if e.status.upper() == "NO" else AuthFailed
        raise error(f"access token refused for user {clean_text(user, 100)}{fresh} "
                    f"({what}): {e.status} {text}".rstrip()) from None


async def log_in_with_token(client: ImapClient, address: ServerAddress, user: str,
                            caps: dict[bytes, Any], login: TokenLogin) -> None:
    """AUTHENTICATE with a token; after a refusal once more with a fresh one."""
    offered = {m.upper() for m in offered_mechanisms(caps)}
    name = login.mechanism.decode()
    if login.mechanism not in offered:
        others = " ".join(sorted(m.decode("ascii", "replace") for m in offered))
        raise AuthFailed(f"the server does not offer AUTHENTICATE {name} "
                         f"(it offers {clean_text(others) or 'no SASL mechanism'})")
    sasl_ir = b"SASL-IR" in caps
    token = await client.within(login.tokens.token(), "the access token", COMMAND_TIMEOUT)
    try:
        await try_token(client, address, user, login.mechanism, token, sasl_ir=sasl_ir)
        return
    except TokenRejected as e:
        log.info("{account}: {error}; trying a fresh token", account=client.label,
                 error=str(e), event="token_refused")
    login.tokens.refused()
    token = await client.within(login.tokens.token(), "a fresh access token", COMMAND_TIMEOUT)
    try:
        await try_token(client, address, user, login.mechanism, token, sasl_ir=sasl_ir,
                        again=True)
    except TokenRejected:
        login.tokens.refused()  # so that the next connection, after the backoff, starts afresh
        raise


async def log_in(client: ImapClient, address: ServerAddress, tls: TlsPolicy, user: str,
                 password: Credentials) -> dict[bytes, Any]:
    """Greeting, TLS (STARTTLS to ``address.host`` per ``tls``), authentication as ``user``
    with the ``password()`` fetched only then, or with access tokens; returns the
    capabilities after login."""
    await client.wait_for_greeting()
    caps = await client.capabilities(cached=True)
    if isinstance(password, TokenLogin):
        caps = await secure_for_token(client, address, tls, caps)
        await log_in_with_token(client, address, user, caps, password)
        return await client.capabilities()
    caps = await secure(client, address, tls, caps)
    secret = await client.within(password(), "the password source", COMMAND_TIMEOUT)
    await authenticate(client, user, caps, secret)
    return await client.capabilities()
