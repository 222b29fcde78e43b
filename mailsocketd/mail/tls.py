"""Reaching a mail server safely, the same way for IMAP and SMTP.

* ``server_endpoint``: ``HostnameEndpoint`` (IPv4 and IPv6, the given name kept for TLS),
  wrapped in verifying TLS for ``tls:`` servers.  ``tcp:`` servers get TLS later, by STARTTLS,
  with the options of ``tls_options``.
* ``tls_options``: verifying client options for a host name (the chain and the name), against
  the system CAs or a ``ca_file``.  Built once per host and CA file and kept (``TlsOptionsCache``):
  each set holds an OpenSSL context, whose making costs a CA file read and parse (or the
  system store's: milliseconds) and whose freeing waits for Python's cycle collector (the
  options and their context refer to each other), so that one per connection left native
  memory churning under mail load (issue 16).  The file is still checked at each call, that
  is at each connection attempt, and read again when it changed, so a renewed private CA is
  picked up without a restart.
* ``mechanism_order`` / ``choose_mechanism``: which SASL mechanism to prefer.  Over TLS PLAIN is
  the plainest (and carries UTF-8); in clear CRAM-MD5 at least keeps the password itself off
  the wire.  Whether the password may go in clear at all is ``TlsPolicy.allow_cleartext``,
  decided by each protocol (SMTP also allows it to a loopback server).
"""

from __future__ import annotations

import os
from collections import OrderedDict
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

__all__ = ["CaFileError", "ConnectReactor", "ReactorClock", "TlsOptionsCache", "TlsPolicy",
           "choose_mechanism", "load_trust_root", "mechanism_order", "server_endpoint",
           "tls_options"]

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


def make_tls_options(host: str, ca_file: str | None) -> IOpenSSLClientConnectionCreator:
    """New verifying client TLS options for ``host`` (system CAs unless ``ca_file``): a new
    OpenSSL context, the CA file read now."""
    if ca_file is None:
        return optionsForClientTLS(host)
    return optionsForClientTLS(host, trustRoot=load_trust_root(ca_file))


FileIdentity = tuple[int, int, int, int]  # device, inode, size, modification time (ns)


def ca_file_identity(ca_file: str) -> FileIdentity:
    """What tells a CA file's contents apart over time, from one stat; CaFileError if it is
    gone or cannot be looked at."""
    try:
        st = os.stat(ca_file)
    except OSError as e:
        raise CaFileError(f"ca_file {ca_file}: cannot read: {e.strerror}") from None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class TlsOptionsCache:
    """Client TLS options kept per (host, CA file), so that connections share one OpenSSL
    context instead of making one each (see the module docstring).  A CA file is stat'ed at
    each ``get`` and read again when it changed (another inode, size or modification time);
    one that became unusable fails the ``get`` as before.  At most ``size`` sets are kept
    (hosts and CA files come from the configuration: a handful), the least recently used
    dropped first."""

    def __init__(self, size: int = 64,
                 make: Callable[[str, str | None], IOpenSSLClientConnectionCreator]
                 = make_tls_options) -> None:
        self._size = size
        self._make = make
        self._kept: OrderedDict[tuple[str, str | None],
                                tuple[FileIdentity | None, IOpenSSLClientConnectionCreator]]
        self._kept = OrderedDict()

    def get(self, host: str, ca_file: str | None) -> IOpenSSLClientConnectionCreator:
        key = (host, ca_file)
        identity = None if ca_file is None else ca_file_identity(ca_file)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == identity:
            self._kept.move_to_end(key)
            return kept[1]
        self._kept.pop(key, None)  # changed (or unusable now: dropped, and the error raised)
        options = self._make(host, ca_file)
        self._kept[key] = (identity, options)
        if len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return options

    def __len__(self) -> int:
        return len(self._kept)


_shared_options = TlsOptionsCache()


def tls_options(host: str, ca_file: str | None) -> IOpenSSLClientConnectionCreator:
    """Verifying client TLS options for ``host`` (system CAs unless ``ca_file``), shared by
    every connection to that host with that CA file (``TlsOptionsCache``)."""
    return _shared_options.get(host, ca_file)


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
