"""Listeners behind a proxy that speaks the PROXY protocol (HAProxy's v1 text or v2 binary
header): the line service sees each connection only once the header has named the client.

Twisted's own wrapper (``haproxy:`` endpoints) hands the connection to the wrapped factory at
once, with the proxy's address, and only answers ``getPeer()`` with the client's after the
header has arrived: the line service would admit, count, log and throttle every client as the
proxy.  ``ProxyHeaderFactory`` builds the wrapped protocol later instead, with the client's
address from the header, so the per-address limit, the login lock-out, the loopback rule for a
cleartext ``login`` and the logs all see the client.  The header must come within
``HEADER_TIMEOUT`` seconds and be valid, else the connection is closed (and logged) without the
line service ever seeing it.

A header that names no address (v1 ``UNKNOWN``, a v2 ``LOCAL`` health check) leaves the proxy's
own address.  Half-closes are passed on, so a client's EOF ends its connection behind the proxy
as it does without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from mailsocketd.line.protocol import describe_peer

__all__ = ["HEADER_TIMEOUT", "ProxiedConnection", "ProxyHeaderFactory"]

HEADER_TIMEOUT = 10.0  # seconds a new connection may take to send its PROXY header


class _HeaderPending(Protocol):
    """Stands in for the line protocol until the header is read: keeps what followed it."""

    def __init__(self) -> None:
        self.held = b""

    def dataReceived(self, data: bytes) -> None:
        self.held += data


@implementer(IHalfCloseableProtocol)
class ProxiedConnection(HAProxyProtocolWrapper):
    """One connection from the proxy: reads the header (Twisted's parser), then builds the
    wrapped factory's protocol for the client the header names."""

    factory: ProxyHeaderFactory
    log = Logger()

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        self._pending = _HeaderPending()
        super().__init__(factory, self._pending)  # type: ignore[arg-type]
        self._client: IProtocol | None = None
        self._header_timer: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        """As ProtocolWrapper's, but the wrapped protocol waits for the header."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)  # type: ignore[no-untyped-call]
        self._header_timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._refuse,
                                                          "no PROXY header in time")

    def dataReceived(self, data: bytes) -> None:
        client = self._client
        if client is not None:
            client.dataReceived(data)
            return
        if self.disconnecting:
            return
        super().dataReceived(data)  # parses; what follows the header goes to _pending
        if self._proxyInfo is not None:
            self._header_read()
        elif self.disconnecting:
            self._refuse("invalid PROXY header")

    def _header_read(self) -> None:
        self._cancel_timer()
        client = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if client is None:
            self.loseConnection()  # type: ignore[no-untyped-call]
            return
        self._client = self.wrappedProtocol = client
        client.makeConnection(self)
        held, self._pending.held = self._pending.held, b""
        if held and self._client is not None and not self.disconnecting:
            client.dataReceived(held)

    def _refuse(self, why: str) -> None:
        self._cancel_timer()
        peer, _ = describe_peer(self.transport.getPeer() if self.transport else None)
        self.factory.refused += 1
        if self.factory.on_refused is not None:
            self.factory.on_refused()
        self.log.warn("connection from proxy {peer} closed: {why}", peer=peer, why=why,
                      event="proxy_header_refused")
        if not self.disconnecting:
            self.loseConnection()  # type: ignore[no-untyped-call]

    def _cancel_timer(self) -> None:
        timer, self._header_timer = self._header_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    @property
    def socket_transport(self) -> ITransport | None:
        """The connection's own transport, under this wrapper (LineProtocol closes it
        directly when the client has gone and nothing is left to send)."""
        return self.transport

    def readConnectionLost(self) -> None:
        client = self._client
        if client is not None and IHalfCloseableProtocol.providedBy(client):
            client.readConnectionLost()
        elif not self.disconnecting:  # before the header, or a protocol that cannot half-close
            self._cancel_timer()
            self.loseConnection()  # type: ignore[no-untyped-call]

    def writeConnectionLost(self) -> None:
        client = self._client
        if client is not None and IHalfCloseableProtocol.providedBy(client):
            client.writeConnectionLost()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel_timer()
        if self._client is None:  # the line service never saw it
            self.factory.unregisterProtocol(self)  # type: ignore[no-untyped-call]
            return
        self._client = None
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class ProxyHeaderFactory(HAProxyWrappingFactory):
    """Wraps a factory so that its protocols are built for the client a PROXY header names
    (see the module docstring).  ``refused`` counts connections closed for a missing or
    invalid header."""

    noisy = False

    def __init__(self, wrapped: Factory, clock: IReactorTime,
                 on_refused: Callable[[], None] | None = None) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.clock = clock
        self.refused = 0
        self.on_refused = on_refused  # told of each (the line server counts it)

    def buildProtocol(self, addr: IAddress | None) -> Any:
        return ProxiedConnection(self)
