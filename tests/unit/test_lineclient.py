"""tests/lineclient.py, the line client shared by the integration tests and the benchmarks,
against a scripted peer on a socketpair: framing, pushed lines, multi-line replies, limits."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import lineclient
import pytest
from lineclient import LineClient, ProtocolError, ReplyError


@pytest.fixture
def pair() -> Iterator[tuple[LineClient, socket.socket]]:
    """A client and the server's end of its connection."""
    mine, theirs = socket.socketpair()
    client = LineClient(mine, timeout=5.0)
    try:
        yield client, theirs
    finally:
        client.close()
        theirs.close()


def test_one_line_reply_and_the_request_sent(pair):
    client, server = pair
    server.sendall(b"ok logged in as alice\r\n")
    assert client.ask("login alice pw") == "ok logged in as alice"
    assert server.recv(100) == b"login alice pw\r\n"


def test_error_lines_are_text_or_reply_errors(pair):
    client, server = pair
    server.sendall(b"error: login first\r\nerror: login first\r\n")
    assert client.ask("check") == "error: login first"
    with pytest.raises(ReplyError, match="login first") as raised:
        client.ask("check", check=True)
    assert raised.value.line == "error: login first"


def test_pushed_lines_between_replies_are_kept_aside(pair):
    client, server = pair
    server.sendall(b"* new mail: INBOX messages=2 unseen=1\r\n2026/12/07 14:00:00\r\n")
    assert client.ask("time") == "2026/12/07 14:00:00"
    assert list(client.pushed) == ["* new mail: INBOX messages=2 unseen=1"]
    assert client.wait_push("* new mail", timeout=1) == (
        "* new mail: INBOX messages=2 unseen=1", 0.0)
    assert not client.pushed


def test_multi_line_reply_undoes_dot_stuffing(pair):
    client, server = pair
    server.sendall(b"ok 4 lines\r\nSubject: x\r\n\r\n..\r\n..stuffed\r\n* not pushed\r\n.\r\n")
    reply = client.ask_multi("read 7")
    assert reply.head == "ok 4 lines"
    assert reply.body == ["Subject: x", "", ".", ".stuffed", "* not pushed"]
    assert reply.lines == ["ok 4 lines", *reply.body]


def test_multi_line_error_has_no_body(pair):
    client, server = pair
    server.sendall(b"error: no message with UID 9 in INBOX\r\n" * 2)
    assert client.ask_multi("read 9").body == []
    with pytest.raises(ReplyError):
        client.ask_multi("read 9", check=True)


def test_wait_push_for_a_line_still_to_come_keeps_replies_unread(pair):
    client, server = pair

    def later() -> None:
        time.sleep(0.1)
        server.sendall(b"ok watching INBOX\r\n* watch ended: gone\r\n* new mail: INBOX x\r\n")

    thread = threading.Thread(target=later)
    thread.start()
    line, waited = client.wait_push("* new mail", timeout=5)
    thread.join()
    assert line == "* new mail: INBOX x" and 0.05 < waited < 5
    assert list(client.pushed) == ["* watch ended: gone"]
    assert client.line() == "ok watching INBOX"  # the reply read on the way


def test_every_read_has_a_deadline(pair):
    client, server = pair
    server.sendall(b"half a li")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="unread: b'half a li'"):
        client.raw_line(timeout=0.2)
    with pytest.raises(TimeoutError, match="no pushed"):
        client.wait_push("* new mail", timeout=0.2)
    assert time.monotonic() - started < 2


def test_closed_connection(pair):
    client, server = pair
    server.sendall(b"quit\r\n")
    server.close()
    assert client.line() == "quit"
    with pytest.raises(ConnectionError, match="closed"):
        client.line()


def test_bounded_buffer_and_reply(pair, monkeypatch):
    client, server = pair
    monkeypatch.setattr(lineclient, "MAX_BUFFER", 1000)
    server.sendall(b"x" * 2000)
    with pytest.raises(ProtocolError, match="longer than"):
        client.line()


def test_bounded_multi_line_reply(pair, monkeypatch):
    client, server = pair
    monkeypatch.setattr(lineclient, "MAX_BUFFER", 1000)
    server.sendall(b"ok big\r\n" + (b"y" * 300 + b"\r\n") * 4)
    with pytest.raises(ProtocolError, match="larger than"):
        client.multi()


def test_not_utf8_is_a_protocol_error(pair):
    client, server = pair
    server.sendall(b"ok \xff\r\n")
    with pytest.raises(ProtocolError, match="not UTF-8"):
        client.line()
    assert issubclass(ProtocolError, OSError)  # the benchmarks count it as a failed client


def test_connect_over_loopback():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with LineClient.connect(port, timeout=5) as client:
            peer, _ = listener.accept()
            with peer:
                assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                peer.sendall("ok Grüße\r\n".encode())
                assert client.line() == "ok Grüße"
