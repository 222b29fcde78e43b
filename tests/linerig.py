"""Socket-free scaffolding for line-service tests: a server, a factory and connected protocols."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsocketd.line.commands import Command
from mailsocketd.line.config import LineConfig
from mailsocketd.line.factory import LineFactory
from mailsocketd.line.protocol import LineProtocol
from mailsocketd.line.server import LineServer

# A fixed local time for replies: 2026-11-25 14:03:07 wherever the test runs is not
# guaranteed (time zones), so tests compare against server.time_text() or a regex.
START = 1_795_000_000.0


@dataclass
class User:
    """A logged-in user as the line service sees one (the mail bridge's MailUser is another)."""

    name: str


class HalfClosingTransport(StringTransport):
    """A StringTransport that, like TCP, can shut its sending side only."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()  # type: ignore[no-untyped-call]


class Rig:
    def __init__(self, extra: list[Command] | None = None, clock: Clock | None = None,
                 **line: Any) -> None:
        self.clock = clock if clock is not None else Clock()
        if self.clock.seconds() < START:
            self.clock.advance(START - self.clock.seconds())
        config = replace(LineConfig(), **line)
        self.server = LineServer(config, extra or [], self.clock)
        self.factory = LineFactory(self.server, self.clock)

    def connect(self, host: str = "127.0.0.1",
                port: int = 40000) -> tuple[Any, HalfClosingTransport]:
        """A connection from host:port: the LineProtocol, or past the connection limits the
        protocol that refuses it (so Any), and its transport."""
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = HalfClosingTransport(  # type: ignore[no-untyped-call]
            peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        return proto, transport


def take(transport: StringTransport) -> bytes:
    data: bytes = transport.value()
    transport.clear()
    return data


def lose(proto: LineProtocol, transport: StringTransport) -> None:
    """Finish a connection the way a reactor would after loseConnection."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionDone()))
