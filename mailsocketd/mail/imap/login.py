"""Reaching an account's server and logging in without ever leaking the password.

* ``client_endpoint``: ``HostnameEndpoint`` (IPv4 and IPv6, the given name kept for TLS), wrapped
  in verifying TLS for ``tls:`` servers.  The CA file is read at each connection attempt, so a
  renewed private CA is picked up without a restart.
* ``log_in``: greeting, STARTTLS (verified: the host name and the chain) on ``tcp:`` servers,
  then AUTHENTICATE with a mechanism the server offers, or LOGIN.  Without TLS the password is
  sent only when the account says ``allow_cleartext = true``; otherwise CleartextRefused is
  raised before the password is even fetched.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.errors import (
    AuthFailed,
    CleartextRefused,
    MailError,
    ProtocolViolation,
    ServerRefused,
    clean_text,
)
from mailsocketd.mail.imap.client import ImapClient, command
from mailsocketd.mail.secrets import COMMAND_TIMEOUT, Secret

__all__ = ["AUTHENTICATORS", "TRANSIENT_CODES", "authenticate_with", "choose_mechanism",
           "client_endpoint", "log_in", "tls_options"]

log = Logger()
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
MAX_CA_FILE = 1 << 20
AUTHENTICATORS: dict[bytes, Callable[[bytes], Any]] = {
    b"PLAIN": imap4.PLAINAuthenticator,
    b"LOGIN": imap4.LOGINAuthenticator,
    b"CRAM-MD5": imap4.CramMD5ClientAuthenticator,
}
MAX_AUTH_ROUNDS = 4
# Response codes (RFC 5530) that mean "not now" rather than "wrong credentials".
TRANSIENT_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[INUSE]", b"[LIMIT]")


def load_trust_root(ca_file: str) -> Any:
    """The certificates of a PEM file as a trust root; MailError naming the file if unusable."""
    try:
        with open(ca_file, "rb") as f:
            data = f.read(MAX_CA_FILE)
    except OSError as e:
        raise MailError(f"ca_file {ca_file}: cannot read: {e.strerror}") from None
    blocks = [PEM_BEGIN + part for part in data.split(PEM_BEGIN)[1:]]
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except Exception:  # pyOpenSSL raises its own error types
        raise MailError(f"ca_file {ca_file}: not a PEM certificate file") from None
    if not certificates:
        raise MailError(f"ca_file {ca_file}: no certificate in it")
    return trustRootFromCertificates(certificates)


def tls_options(account: AccountConfig) -> Any:
    """Verifying client TLS options for the account's host (system CAs unless ``ca_file``)."""
    if account.ca_file is None:
        return optionsForClientTLS(account.host)
    return optionsForClientTLS(account.host, trustRoot=load_trust_root(account.ca_file))


@implementer(IStreamClientEndpoint)
class _AccountEndpoint:
    """Builds the real endpoint at each attempt (TLS options read the CA file afresh)."""

    def __init__(self, reactor: Any, account: AccountConfig,
                 on_attempt: Callable[[], None] | None,
                 on_failure: Callable[[Failure], None] | None) -> None:
        self._reactor = reactor
        self._account = account
        self._on_attempt = on_attempt
        self._on_failure = on_failure

    def _failed(self, failure: Failure) -> Failure:
        if self._on_failure is not None:
            self._on_failure(failure)
        return failure

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        if self._on_attempt is not None:
            self._on_attempt()
        account = self._account
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, account.host, account.port, timeout=account.timeout)
        d: Deferred[Any]
        try:
            if account.scheme == "tls":
                endpoint = wrapClientTLS(tls_options(account), endpoint)
        except MailError as e:
            d = fail(e)
        else:
            d = endpoint.connect(protocolFactory)
        return d.addErrback(self._failed)

    def __repr__(self) -> str:
        return f"<{self._account.scheme} endpoint of account {self._account.name}>"


def client_endpoint(reactor: Any, account: AccountConfig,
                    on_attempt: Callable[[], None] | None = None,
                    on_failure: Callable[[Failure], None] | None = None
                    ) -> IStreamClientEndpoint:
    """The endpoint for ``account``'s server; told of each attempt and each failure to connect."""
    return _AccountEndpoint(reactor, account, on_attempt, on_failure)


def choose_mechanism(caps: dict[bytes, Any], encrypted: bool) -> bytes | None:
    """The SASL mechanism to use among those offered.

    Over TLS PLAIN is the plainest (and carries UTF-8); in clear, CRAM-MD5 at least keeps the
    password itself off the wire.
    """
    offered = {m.upper() for m in (caps.get(b"AUTH") or ()) if isinstance(m, bytes)}
    order = ((b"PLAIN", b"LOGIN", b"CRAM-MD5") if encrypted
             else (b"CRAM-MD5", b"PLAIN", b"LOGIN"))
    return next((m for m in order if m in offered), None)


async def secure(client: ImapClient, account: AccountConfig,
                 caps: dict[bytes, Any]) -> dict[bytes, Any]:
    """Make the connection TLS when it is not; refuse cleartext unless allowed."""
    if client.encrypted:
        return caps
    if b"STARTTLS" in caps:
        return await client.start_tls(tls_options(account))
    if not account.allow_cleartext:
        raise CleartextRefused(
            "the server offers no STARTTLS: refusing to send the password in clear "
            "(use a tls: server, or set allow_cleartext = true for this account)")
    log.warn("{account}: logging in without TLS (allow_cleartext = true)",
             account=account.name, event="cleartext_login")
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


async def authenticate(client: ImapClient, account: AccountConfig, caps: dict[bytes, Any],
                       secret: Secret) -> None:
    """AUTHENTICATE with the best offered mechanism, else LOGIN; AuthFailed if refused."""
    user = account.user.encode("utf-8")
    mechanism = choose_mechanism(caps, client.encrypted)
    try:
        if mechanism is not None:
            await authenticate_with(client, mechanism, user, secret)
        elif b"LOGINDISABLED" in caps:
            raise AuthFailed("the server offers no login method this client supports "
                             "(LOGINDISABLED and no AUTH=PLAIN, LOGIN or CRAM-MD5)")
        else:
            await client.login_command(user, secret)
    except ServerRefused as e:
        # The server's words, cleaned, and never the password even if a server echoes it.
        # Masked before cleaning: cleaning may cut it or turn its tabs into spaces.
        password = secret.reveal().decode("utf-8", "replace")
        text = clean_text(e.text.replace(password, "***") if password else e.text)
        if any(code in e.text.encode("utf-8", "replace").upper() for code in TRANSIENT_CODES):
            raise MailError(f"login temporarily refused: {e.status} {text}") from None
        raise AuthFailed(f"login refused for user {clean_text(account.user, 100)}: "
                         f"{e.status} {text}".rstrip()) from None


async def log_in(client: ImapClient, account: AccountConfig,
                 password: Callable[[], Deferred[Secret]]) -> dict[bytes, Any]:
    """Greeting, TLS, authentication; returns the capabilities after login."""
    await client.wait_for_greeting()
    caps = await client.capabilities(cached=True)
    caps = await secure(client, account, caps)
    secret = await client.within(password(), "the password source", COMMAND_TIMEOUT)
    await authenticate(client, account, caps, secret)
    return await client.capabilities()
