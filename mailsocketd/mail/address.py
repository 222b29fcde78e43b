"""Where a mail server is: ``tls:HOST[:PORT]`` (implicit TLS) or ``tcp:HOST[:PORT]`` (STARTTLS).

Shared by ``[accounts.NAME]``, ``[imap]`` and ``[smtp]``; parsing is pure and every problem is a
ConfigError naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mailsocketd.table import ConfigError, Table

__all__ = ["IMAP_PORTS", "SMTP_PORTS", "ServerAddress", "parse_server", "server_key"]

IMAP_PORTS = {"tls": 993, "tcp": 143}
SMTP_PORTS = {"tls": 465, "tcp": 587}
HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9._-]{0,252})\Z")


@dataclass(frozen=True)
class ServerAddress:
    """Where an account's IMAP server is: ``tls`` (implicit TLS) or ``tcp`` (STARTTLS)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host} port {self.port}"


def parse_server(text: str, key: str,
                 default_ports: Mapping[str, int] = IMAP_PORTS) -> ServerAddress:
    """``tls:HOST[:PORT]`` or ``tcp:HOST[:PORT]``; an IPv6 HOST is ``[::1]`` or ``\\:``-escaped."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in default_ports:
        raise ConfigError(key, f"expected tls:HOST:PORT or tcp:HOST:PORT, got {text!r}")
    host, port_text = _split_host_port(rest, key, text)
    if not (HOST_NAME.match(host) or _is_ip_address(host)):
        raise ConfigError(key, f"bad host name in {text!r} (letters, digits, '.', '-', or an "
                          "IP address)")
    if not port_text:
        return ServerAddress(scheme, host, default_ports[scheme])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(key, f"bad port {port_text!r} in {text!r}")
    return ServerAddress(scheme, host, int(port_text))


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_host_port(rest: str, key: str, text: str) -> tuple[str, str]:
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise ConfigError(key, f"bad bracketed address in {text!r}")
        return host, tail[1:]
    parts = [p.replace("\x00", ":") for p in rest.replace("\\:", "\x00").split(":")]
    if len(parts) > 2:
        raise ConfigError(key, f"too many ':' in {text!r} (write an IPv6 address as [::1]:993; "
                          "endpoint options are not supported here)")
    return parts[0], parts[1] if len(parts) == 2 else ""


def server_key(table: Table, default_ports: Mapping[str, int],
               example: str) -> tuple[str, ServerAddress]:
    """The required ``server`` key of ``table``: its text and the parsed address."""
    text = table.string("server", "")
    if not text:
        raise ConfigError(table.key("server"), f"is missing (e.g. {example})")
    return text, parse_server(text, table.key("server"), default_ports)
