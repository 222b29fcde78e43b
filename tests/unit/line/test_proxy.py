"""A PROXY listener (line/proxy.py): the line service sees the client the header names, never
the proxy, and only once the header is read; no header, or a bad one, never reaches it."""

from __future__ import annotations

import functools
import struct
from typing import Any

from linerig import HalfClosingTransport, Rig
from logrig import global_log_events
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from mailsocketd.line.proxy import HEADER_TIMEOUT, ProxyHeaderFactory

PROXY = IPv4Address("TCP", "127.0.0.1", 50000)  # where the proxy connects from
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    local = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {local} {port} 65000\r\n".encode()


def v2_tcp4(client: str, port: int = 40000) -> bytes:
    addresses = bytes(map(int, client.split("."))) + bytes([127, 0, 0, 1]) + struct.pack(
        "!HH", port, 65000)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(addresses)) + addresses


def connect(rig: Rig) -> tuple[ProxyHeaderFactory, Any, HalfClosingTransport]:
    factory = ProxyHeaderFactory(rig.factory, rig.clock)
    proto = factory.buildProtocol(PROXY)
    transport = HalfClosingTransport(peerAddress=PROXY)
    proto.makeConnection(transport)
    return factory, proto, transport


def test_the_line_service_sees_the_client_of_a_v1_header():
    rig = Rig()
    _, proto, transport = connect(rig)
    assert not rig.server.sessions  # nothing admitted before the header
    proto.dataReceived(v1("127.0.0.2") + b"time\r\n")
    [session] = rig.server.sessions
    assert (session.host, session.peer) == ("127.0.0.2", "127.0.0.2:40000")
    assert transport.value().decode() == rig.server.time_text() + "\r\n"


def test_a_v2_header_split_over_packets_and_the_request_after_it():
    rig = Rig()
    _, proto, transport = connect(rig)
    header = v2_tcp4("127.0.0.3", 41000)
    proto.dataReceived(header[:16])
    proto.dataReceived(header[16:] + b"ti")
    assert [s.host for s in rig.server.sessions] == ["127.0.0.3"]
    proto.dataReceived(b"me\r\n")
    assert transport.value().decode() == rig.server.time_text() + "\r\n"


def test_an_ipv6_client():
    rig = Rig()
    _, proto, _ = connect(rig)
    proto.dataReceived(v1("::1"))
    [session] = rig.server.sessions
    assert session.peer == "[::1]:40000"
    assert isinstance(proto.getPeer(), IPv6Address)


def test_the_per_address_limit_counts_each_client_not_the_proxy():
    rig = Rig(max_connections_per_peer=1)
    _, first, _ = connect(rig)
    first.dataReceived(v1("127.0.0.2"))
    _, second, t2 = connect(rig)
    second.dataReceived(v1("127.0.0.3"))  # another client: admitted though the proxy is one
    _, third, t3 = connect(rig)
    third.dataReceived(v1("127.0.0.2", 40001))  # the first client again: over its limit
    assert sorted(s.host for s in rig.server.sessions) == ["127.0.0.2", "127.0.0.3"]
    assert t3.value() == b"error: too many connections from your address\r\n"
    assert t2.value() == b""


def test_no_header_in_time_closes_without_the_line_service():
    rig = Rig()
    factory, _, transport = connect(rig)
    with global_log_events() as events:
        rig.clock.advance(HEADER_TIMEOUT)
    assert transport.disconnecting
    assert factory.refused == 1
    assert not rig.server.sessions and rig.server.total_connections == 0
    assert [e.get("event") for e in events] == ["proxy_header_refused"]


def test_a_bad_header_closes_and_the_timer_is_gone():
    rig = Rig()
    factory, proto, transport = connect(rig)
    factory.on_refused = functools.partial(rig.server.count_refused, "proxy_header")
    proto.dataReceived(b"time\r\nquit\r\n")  # a client talking straight to the PROXY port
    assert transport.disconnecting and factory.refused == 1
    assert not rig.clock.getDelayedCalls()
    assert rig.server.total_connections == 0 and transport.value() == b""
    assert rig.server.refused["proxy_header"] == rig.server.refused_connections == 1


def test_the_clients_eof_reaches_the_line_protocol():
    """Half-close passes through: a bare 'time' then EOF is served, as without a proxy."""
    rig = Rig()
    _, proto, transport = connect(rig)
    proto.dataReceived(v1("127.0.0.2") + b"time")
    proto.readConnectionLost()
    assert transport.value().decode() == rig.server.time_text() + "\r\n"


def test_a_health_check_that_connects_and_closes_is_not_logged():
    """HAProxy's `check`: connect, then EOF, no header: closed quietly, never refused."""
    rig = Rig()
    factory, proto, transport = connect(rig)
    with global_log_events() as events:
        proto.readConnectionLost()
        proto.connectionLost(Failure(ConnectionDone()))
    assert transport.disconnecting and factory.refused == 0 and events == []
    assert not rig.clock.getDelayedCalls() and rig.server.total_connections == 0
