"""``[smtp]``: where ``send`` hands a message: an SMTP submission server, or the local sendmail.

Optional: without it ``send`` answers that sending is not configured.  Parsing is pure, and
every problem is a ConfigError naming the key.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mailsocketd.mail.address import SMTP_PORTS, ServerAddress, server_key
from mailsocketd.table import ConfigError, Table

__all__ = ["SmtpConfig", "parse_smtp"]

MIB = 1 << 20


@dataclass(frozen=True)
class SmtpConfig:
    """Where ``send`` hands a message: an SMTP submission server, or a sendmail program."""

    server: str | None = None
    address: ServerAddress | None = None
    sendmail: str | None = None
    ca_file: str | None = None
    timeout: float = 60.0
    allow_cleartext: bool = False  # AUTH without TLS to a non-loopback server
    max_message_size: int = 10 * MIB
    from_domain: str = ""  # appended to a login name without '@' for the From address


def parse_smtp(table: Table, present: bool) -> SmtpConfig | None:
    """``[smtp]``: exactly one of ``server`` and ``sendmail``; None when there is no table."""
    if not present:
        table.finish()
        return None
    has_server, has_sendmail = table.has("server"), table.has("sendmail")
    if has_server == has_sendmail:
        raise ConfigError(table.key("server"), "give exactly one of server "
                          '(e.g. "tcp:smtp.example.org:587") and sendmail '
                          '(e.g. "/usr/sbin/sendmail")')
    d = SmtpConfig
    server: str | None = None
    address: ServerAddress | None = None
    if has_server:
        server, address = server_key(table, SMTP_PORTS, '"tcp:smtp.example.org:587"')
    sendmail = table.optional_string("sendmail")
    if sendmail is not None and not sendmail.startswith("/"):
        raise ConfigError(table.key("sendmail"), "must be an absolute path")
    from_domain = table.string("from_domain", "") or socket.getfqdn()
    if not from_domain or any(c.isspace() or c in "@<>" for c in from_domain):
        raise ConfigError(table.key("from_domain"), f"not a domain name: {from_domain!r}")
    smtp = SmtpConfig(
        server=server,
        address=address,
        sendmail=sendmail,
        ca_file=table.optional_string("ca_file"),
        timeout=table.number("timeout", d.timeout, 1.0, 600.0),
        allow_cleartext=table.boolean("allow_cleartext", d.allow_cleartext),
        max_message_size=table.integer("max_message_size", d.max_message_size, 1024,
                                       1024 * MIB),
        from_domain=from_domain,
    )
    table.finish()
    return smtp
