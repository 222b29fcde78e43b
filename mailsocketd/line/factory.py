"""The factory of the line service: one LineProtocol per admitted connection, a one-line
refusal for the rest, and the set of open clients that shutdown closes."""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol

from mailsocketd.line.protocol import LineProtocol, StreamTransport, describe_peer
from mailsocketd.line.replies import Reply, error
from mailsocketd.line.server import LineServer, Session


class RefusedProtocol(Protocol):
    """Says why a connection over the limits is refused, and closes it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        out = cast(StreamTransport, self.transport)
        out.write(error(self.reason).encode())
        out.loseConnection()


class LineFactory(Factory):
    """Builds a LineProtocol per admitted connection and remembers them for shutdown."""

    noisy = False

    def __init__(self, server: LineServer, clock: IReactorTime) -> None:
        self.server = server
        self.clock = clock
        self.clients: set[LineProtocol] = set()
        self._all_closed: Deferred[None] | None = None

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        peer, host = describe_peer(addr)
        refusal = self.server.admit(host)
        if refusal is not None:
            return RefusedProtocol(refusal)
        proto = LineProtocol(self.server, self.clock, Session(peer=peer, host=host))
        proto.factory = self
        return proto

    def close_all(self, reply: Reply) -> Deferred[None]:
        """Tell every client ``reply`` and close them; fires when all are gone."""
        self._all_closed = Deferred()
        done = self._all_closed
        for proto in list(self.clients):
            proto.close_with(reply)
        self._check_all_closed()
        return done

    def opened(self, proto: LineProtocol) -> None:
        self.clients.add(proto)

    def closed(self, proto: LineProtocol) -> None:
        self.clients.discard(proto)
        self._check_all_closed()

    def _check_all_closed(self) -> None:
        if self._all_closed is not None and not self.clients:
            done, self._all_closed = self._all_closed, None
            done.callback(None)
