"""Behind a proxy (``haproxy:`` listeners): the real daemon counts, limits, locks out and logs
each client by the address its PROXY header (v1 or v2) names, not by the proxy's.

Every header names a loopback address (127.0.0.2, 127.0.0.3, ::1): the test plays the proxy,
and all its traffic goes to the daemon on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct

import pytest
from daemon import Daemon, free_port, read_line, start_daemon
from mailserver import MailServer
from test_mail_commands import mail_config

pytestmark = pytest.mark.timeout(120)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client: str, port: int) -> bytes:
    if ":" in client:
        return f"PROXY TCP6 {client} ::1 {port} 65000\r\n".encode()
    return f"PROXY TCP4 {client} 127.0.0.1 {port} 65000\r\n".encode()


def v2(client: str, port: int) -> bytes:
    body = socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack(
        "!HH", port, 65000)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def proxied(daemon: Daemon, header: bytes) -> socket.socket:
    """A connection as the proxy makes it: the header, then the client's bytes."""
    s = daemon.connect()
    s.sendall(header)
    return s


def ask(s: socket.socket, line: bytes) -> str:
    s.sendall(line + b"\r\n")
    return read_line(s).decode()


def behind_proxy(tmp_path, config: str) -> Daemon:
    port = free_port()
    return start_daemon(tmp_path, config_toml=config, port=port,
                        listen=f"haproxy:tcp:{port}:interface=127.0.0.1")


def test_each_client_is_counted_and_logged_by_its_proxy_header_address(tmp_path):
    daemon = behind_proxy(tmp_path, "[line]\nmax_connections_per_peer = 1\n"
                                    "[log]\ncommands = true\n")
    try:
        with proxied(daemon, v1("127.0.0.2", 40000)) as first, \
                proxied(daemon, v2("127.0.0.3", 41000)) as second, \
                proxied(daemon, v1("::1", 42000)) as third:
            # One proxy, three clients: the limit of one per address admits all three.
            for s in (first, second, third):
                assert ask(s, b"time").startswith("20")
            with proxied(daemon, v2("127.0.0.2", 40001)) as again:  # the first client again
                assert read_line(again) == b"error: too many connections from your address"
        log = daemon.wait_log(r"connection closed: \[::1\]:42000")
        for peer in ("127.0.0.2:40000", "127.0.0.3:41000", "[::1]:42000"):
            assert f"connection opened: {peer}" in log
        assert "connection from 127.0.0.2 refused: too many connections from your address" in log
        assert "connection opened: 127.0.0.1:" not in log  # the proxy is no client
        with proxied(daemon, b"time\r\n") as no_header:  # the proxy's port, without a header
            assert no_header.recv(100) == b""
        daemon.wait_log(r"closed: invalid PROXY header")
    finally:
        daemon.stop()


def test_the_login_lockout_hits_the_guessing_client_only(mailserver: MailServer, tmp_path):
    config = mail_config(mailserver, login_failures=2, login_lockout=60.0)
    daemon = behind_proxy(tmp_path, config)
    try:
        with proxied(daemon, v1("127.0.0.2", 40000)) as guesser:
            for _ in range(2):
                assert ask(guesser, b"login alice wrong") == (
                    "error: login failed: wrong user name or password")
            assert ask(guesser, b"login alice wrong").startswith(
                "error: too many failed logins from your address")
        daemon.wait_log(r"127\.0\.0\.2: 2 failed logins; refusing logins from it")
        password = mailserver.users["alice"].encode()
        with proxied(daemon, v2("127.0.0.3", 41000)) as other:  # same proxy, another client
            assert ask(other, b"login alice " + password) == "ok logged in as alice"
        with proxied(daemon, v1("127.0.0.2", 40001)) as guesser:  # still locked out
            assert ask(guesser, b"login alice " + password).startswith(
                "error: too many failed logins from your address")
    finally:
        daemon.stop()
