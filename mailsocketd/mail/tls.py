"""Reaching a mail server safely, the same way for IMAP and SMTP.

* ``server_endpoint``: ``HostnameEndpoint`` (IPv4 and IPv6, the given name kept for TLS),
  wrapped in verifying TLS for ``tls:`` servers.  ``tcp:`` servers get TLS later, by STARTTLS,
  with the options of ``tls_options``.
* ``tls_options``: verifying client options for a host name (the chain and the name), against
  the system CAs or a ``ca_file``.  The file is read at each call, that is at each connection
  attempt, so a renewed private CA is picked up without a restart.
* ``mechanism_order`` / ``choose_mechanism``: which SASL mechanism to prefer.  Over TLS PLAIN is
  the plainest (and carries UTF-8); in clear CRAM-MD5 at least keeps the password itself off
  the wire.  Whether the password may go in clear at all is ``TlsPolicy.allow_cleartext``,
  decided by each protocol (SMTP also allows it to a loopback server).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IConnector,
    IDelayedCall,
    IHostnameResolver,
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates

from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.errors import MailError

__all__ = ["CaFileError", "ConnectReactor", "ReactorClock", "TlsPolicy", "choose_mechanism",
           "load_trust_root", "mechanism_order", "server_endpoint", "tls_options"]

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
MAX_CA_FILE = 1 << 20
OVER_TLS = (b"PLAIN", b"LOGIN", b"CRAM-MD5")
IN_CLEAR = (b"CRAM-MD5", b"PLAIN", b"LOGIN")


class ReactorClock(Protocol):
    """The part of IReactorTime the mail clients use (a reactor, task.Clock, or any
    IReactorTime provides it)."""

    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> IDelayedCall: ...


class ConnectReactor(ReactorClock, Protocol):
    """What connecting needs of the reactor: the clock of the timeouts, and for HostnameEndpoint
    IReactorTCP and IReactorPluggableNameResolver."""

    @property
    def nameResolver(self) -> IHostnameResolver: ...
    def connectTCP(self, host: str, port: int, factory: ClientFactory, timeout: float = 30.0,
                   bindAddress: tuple[str, int] | None = None) -> IConnector: ...


@dataclass(frozen=True)
class TlsPolicy:
    """How a connection to a server is protected: whose CAs are trusted (the system's unless
    ``ca_file``) and whether the password may be sent without TLS."""

    ca_file: str | None = None
    allow_cleartext: bool = False

    def options(self, host: str) -> IOpenSSLClientConnectionCreator:
        """Verifying TLS options for ``host`` (the CA file read now)."""
        return tls_options(host, self.ca_file)


class CaFileError(MailError):
    """A ``ca_file`` that cannot be used (missing, unreadable, empty, not PEM): the operator's
    to fix.  Its text names the file, so it is for the log and status, not for line users."""


def load_trust_root(ca_file: str) -> Any:
    """The certificates of a PEM file as a trust root (an IOpenSSLTrustRoot, an interface
    Twisted exports only from a private module); MailError naming the file if unusable."""
    try:
        with open(ca_file, "rb") as f:
            data = f.read(MAX_CA_FILE)
    except OSError as e:
        raise CaFileError(f"ca_file {ca_file}: cannot read: {e.strerror}") from None
    blocks = [PEM_BEGIN + part for part in data.split(PEM_BEGIN)[1:]]
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except Exception:  # pyOpenSSL raises its own error types
        raise CaFileError(f"ca_file {ca_file}: not a PEM certificate file") from None
    if not certificates:
        raise CaFileError(f"ca_file {ca_file}: no certificate in it")
    return trustRootFromCertificates(certificates)


def tls_options(host: str, ca_file: str | None) -> IOpenSSLClientConnectionCreator:
    """Verifying client TLS options for ``host`` (system CAs unless ``ca_file``)."""
    if ca_file is None:
        return optionsForClientTLS(host)
    return optionsForClientTLS(host, trustRoot=load_trust_root(ca_file))


def server_endpoint(reactor: ConnectReactor, address: ServerAddress, tls: TlsPolicy,
                    timeout: float) -> IStreamClientEndpoint:
    """The endpoint of ``address``: TCP for ``tcp:``, verified TLS for ``tls:`` (the CA file
    read now; MailError if it is unusable)."""
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, address.host, address.port,
                                                       timeout=timeout)
    if address.scheme == "tls":
        endpoint = wrapClientTLS(tls.options(address.host), endpoint)
    return endpoint


def mechanism_order(encrypted: bool) -> tuple[bytes, ...]:
    """The SASL mechanisms we speak, best first, over TLS or in clear (see the module doc)."""
    return OVER_TLS if encrypted else IN_CLEAR


def choose_mechanism(offered: Iterable[bytes], encrypted: bool) -> bytes | None:
    """The mechanism to use among those the server offers (any case), or None."""
    names = {m.upper() for m in offered if isinstance(m, bytes)}
    return next((m for m in mechanism_order(encrypted) if m in names), None)
