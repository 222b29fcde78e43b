"""``[imap]``: the IMAP server line users log in to with their own credentials (``login USER
PASSWORD``), and the limits of what the mail commands fetch.

Optional: without it the mail commands answer that mail is not configured.  Parsing is pure,
and every problem is a ConfigError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailsocketd.mail.address import IMAP_PORTS, ServerAddress, server_key
from mailsocketd.mail.tls import TlsPolicy
from mailsocketd.table import ConfigError, Table

__all__ = ["KEEPALIVE_MAX", "KEEPALIVE_MIN", "MIB", "ImapConfig", "parse_imap"]

MIB = 1 << 20
KEEPALIVE_MIN, KEEPALIVE_MAX = 10.0, 1740.0  # RFC 2177: re-issue IDLE at least every 29 min


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
    keepalive: float = 1500.0  # end and re-issue watch's IDLE this often (the heartbeat)
    watch_interval: float = 30.0  # watch: a STATUS this often, while idling or polling
    trash: str | None = None  # where delete without UIDPLUS moves mail; None: look for it

    @property
    def tls(self) -> TlsPolicy:
        """How connections to the server are protected (``ca_file``, ``allow_cleartext``)."""
        return TlsPolicy(self.ca_file, self.allow_cleartext)


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
        keepalive=_keepalive(table),
        watch_interval=table.number("watch_interval", d.watch_interval, 5.0, 3600.0),
        trash=_trash(table),
    )
    table.finish()
    return imap


def _trash(table: Table) -> str | None:
    """``trash``: a mailbox name as the server spells it (``INBOX.Trash``)."""
    name = table.optional_string("trash")
    if name is not None and (len(name) > 1000 or any(
            ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)):
        raise ConfigError(table.key("trash"), "must be a mailbox name: 1 to 1000 characters, "
                          "no control characters")
    return name


def _keepalive(table: Table) -> float:
    """``keepalive``, the name it has in ``[accounts.NAME]`` too, or its old name here,
    ``idle_restart``, which is still read so that existing files keep working."""
    if not table.has("idle_restart"):
        return table.number("keepalive", ImapConfig.keepalive, KEEPALIVE_MIN, KEEPALIVE_MAX)
    if table.has("keepalive"):
        raise ConfigError(table.key("idle_restart"),
                          "is the old name of keepalive: give only keepalive")
    return table.number("idle_restart", ImapConfig.keepalive, KEEPALIVE_MIN, KEEPALIVE_MAX)
