"""The factory of the line service: one LineProtocol per admitted connection, a one-line
refusal for the rest, and the set of open clients, which shutdown closes and one timer watches
for idle ones."""

from __future__ import annotations

import socket
import struct
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol

from mailsocketd.line.protocol import LineProtocol, StreamTransport, describe_peer
from mailsocketd.line.replies import Reply, error
from mailsocketd.line.server import LineServer
from mailsocketd.line.session import Session


def peer_uid(transport: object) -> int | None:
    """The user id of a UNIX socket's peer (SO_PEERCRED, Linux), or None where unknown: the
    login throttle counts UNIX clients by it, not all as one."""
    sock = getattr(transport, "socket", None)
    option = getattr(socket, "SO_PEERCRED", None)
    if not isinstance(sock, socket.socket) or option is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option,
                                                              struct.calcsize("3i")))
    except (OSError, struct.error):
        return None
    return int(uid)


class RefusedProtocol(Protocol):
    """Says why a connection over the limits is refused, and closes it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        out = cast(StreamTransport, self.transport)
        out.write(error(self.reason).encode())
        out.loseConnection()


class LineFactory(Factory):
    """Builds a LineProtocol per admitted connection and remembers them for shutdown and the
    idle limit.

    Idle clients are found by one timer for all of them, not one per connection: a client
    only notes when its last packet came, and the timer wakes at the earliest moment one of
    them can have been quiet for the limit (at most once a second), closes those that have,
    and sleeps again until the next such moment, or until a client comes when there are none.
    """

    noisy = False

    def __init__(self, server: LineServer, clock: IReactorTime) -> None:
        self.server = server
        self.clock = clock
        self.clients: set[LineProtocol] = set()
        self._all_closed: Deferred[None] | None = None
        self._idle_limit = server.config.idle_timeout
        self._idle_check: IDelayedCall | None = None

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        peer, host = describe_peer(addr)
        session = Session(peer=peer, host=host)
        refusal = self.server.admit(session)
        if refusal is not None:
            return RefusedProtocol(refusal)
        proto = LineProtocol(self.server, self.clock, session, clients=self)
        proto.factory = self
        return proto

    def reconfigure(self) -> None:
        """The server's ``[line]`` was reloaded: the idle limit applies from now on, to every
        client (0: off)."""
        self._idle_limit = self.server.config.idle_timeout
        for proto in self.clients:
            proto.set_idle_limit(self._idle_limit)
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        if self._idle_limit > 0 and self.clients:
            self._idle_check = self.clock.callLater(1.0, self._close_idle)

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
        if proto.session.host == "unix":
            proto.session.uid = peer_uid(proto.transport)
        if self._idle_check is None and self._idle_limit > 0:
            self._idle_check = self.clock.callLater(self._idle_limit, self._close_idle)

    def closed(self, proto: LineProtocol) -> None:
        clients = self.clients
        clients.discard(proto)
        if not clients:
            if self._idle_check is not None:
                self._idle_check.cancel()
                self._idle_check = None
            self._check_all_closed()

    def _close_idle(self) -> None:
        """Close the clients quiet for the limit; wake again when the next one can be."""
        self._idle_check = None
        now, limit = self.clock.seconds(), self._idle_limit
        earliest: float | None = None  # the oldest last packet of those left open
        for proto in list(self.clients):
            if proto.closing:
                continue
            since = proto.last_activity
            if now - since >= limit:
                proto.idle_timeout()
                if proto.closing:
                    continue
                since = proto.last_activity  # kept open (it waits for pushed lines)
            if earliest is None or since < earliest:
                earliest = since
        if earliest is not None:
            self._idle_check = self.clock.callLater(max(earliest + limit - now, 1.0),
                                                    self._close_idle)

    def _check_all_closed(self) -> None:
        if self._all_closed is not None and not self.clients:
            done, self._all_closed = self._all_closed, None
            done.callback(None)
