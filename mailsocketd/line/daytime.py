"""RFC 867 daytime: on connect, write the time line and close, as the original first server did."""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from mailsocketd.line.protocol import StreamTransport, describe_peer
from mailsocketd.line.server import LineServer


class DaytimeProtocol(Protocol):
    """Writes ``YYYY/MM/DD HH:MM:SS`` and hangs up."""

    def __init__(self, server: LineServer) -> None:
        self.server = server

    def connectionMade(self) -> None:
        out = cast(StreamTransport, self.transport)
        out.write((self.server.time_text() + "\r\n").encode("ascii"))
        out.loseConnection()


class DaytimeFactory(Factory):
    """One DaytimeProtocol per connection, logged like the line service's connections."""

    noisy = False
    log = Logger()

    def __init__(self, server: LineServer) -> None:
        self.server = server

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        peer, _ = describe_peer(addr)
        self.log.info("daytime served to {peer}", peer=peer, event="daytime")
        return DaytimeProtocol(self.server)
