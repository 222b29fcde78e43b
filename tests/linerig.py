"""Socket-free scaffolding for line-service tests: a server, a factory and connected protocols."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsocketd.line.commands import Command, command_table, core_commands
from mailsocketd.line.config import LineConfig
from mailsocketd.line.factory import LineFactory
from mailsocketd.line.protocol import LineProtocol
from mailsocketd.line.server import LineServer

# A fixed local time for replies: 2026-11-25 14:03:07 wherever the test runs is not
# guaranteed (time zones), so tests compare against server.time_text() or a regex.
START = 1_795_000_000.0


class HalfClosingTransport(StringTransport):
    """A StringTransport that, like TCP, can shut its sending side only."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Rig:
    def __init__(self, extra: list[Command] | None = None, **line: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        config = replace(LineConfig(), **line)
        self.server = LineServer(config, command_table(core_commands() + (extra or [])),
                                 self.clock)
        self.factory = LineFactory(self.server, self.clock)

    def connect(self, host: str = "127.0.0.1", port: int = 40000) -> tuple[Any, StringTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = HalfClosingTransport(peerAddress=IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        return proto, transport


def take(transport: StringTransport) -> bytes:
    data = transport.value()
    transport.clear()
    return data


def lose(proto: LineProtocol, transport: StringTransport) -> None:
    """Finish a connection the way a reactor would after loseConnection."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionDone()))
