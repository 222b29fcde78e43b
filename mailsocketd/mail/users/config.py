"""``[imap]``: the IMAP server line users log in to with their own credentials (``login USER
PASSWORD``), and the limits of what the mail commands fetch.

Optional: without it the mail commands answer that mail is not configured.  Parsing is pure,
and every problem is a ConfigError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailsocketd.mail.address import IMAP_PORTS, ServerAddress, server_key
from mailsocketd.table import Table

__all__ = ["MIB", "ImapConfig", "parse_imap"]

MIB = 1 << 20


@dataclass(frozen=True)
class ImapConfig:
    """The IMAP server users log in to, and the limits of what the mail commands fetch."""

    server: str
    address: ServerAddress
    ca_file: str | None = None
    timeout: float = 30.0
    allow_cleartext: bool = False  # send passwords without TLS (a loopback server, say)
    list_max: int = 500  # the largest COUNT ``list`` accepts
    read_limit: int = 4 * MIB  # bytes of a message ``read`` fetches at most
    text_limit: int = 256 * 1024  # characters of body text ``read`` shows at most
    idle_restart: float = 1500.0  # re-issue IDLE (watch) this often; RFC 2177 asks < 29 min


def parse_imap(table: Table, present: bool) -> ImapConfig | None:
    """``[imap]``, or None when the file has no such table (mail commands then say so)."""
    if not present:
        table.finish()
        return None
    server, address = server_key(table, IMAP_PORTS, '"tls:imap.example.org:993"')
    d = ImapConfig
    imap = ImapConfig(
        server=server,
        address=address,
        ca_file=table.optional_string("ca_file"),
        timeout=table.number("timeout", d.timeout, 1.0, 600.0),
        allow_cleartext=table.boolean("allow_cleartext", d.allow_cleartext),
        list_max=table.integer("list_max", d.list_max, 1, 10000),
        read_limit=table.integer("read_limit", d.read_limit, 4096, 256 * MIB),
        text_limit=table.integer("text_limit", d.text_limit, 1024, 64 * MIB),
        idle_restart=table.number("idle_restart", d.idle_restart, 10.0, 1740.0),
    )
    table.finish()
    return imap
