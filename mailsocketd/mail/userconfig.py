"""``[imap]`` and ``[smtp]``: the servers behind the line service's mail commands.

``[imap]`` is the server line users log in to with their own credentials (``login USER
PASSWORD``); ``[smtp]`` is where ``send`` submits, or the local sendmail program.  Both are
optional: without ``[imap]`` the mail commands answer that mail is not configured; without
``[smtp]`` ``send`` does.  Parsing is pure, and every problem is a ConfigError naming the key.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mailsocketd.mail.accounts import ServerAddress, parse_server
from mailsocketd.table import ConfigError, Table

__all__ = ["SMTP_PORTS", "ImapConfig", "SmtpConfig", "parse_imap", "parse_smtp"]

SMTP_PORTS = {"tls": 465, "tcp": 587}
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


def _server(table: Table, default_ports: dict[str, int], example: str) -> tuple[str, ServerAddress]:
    text = table.string("server", "")
    if not text:
        raise ConfigError(table.key("server"), f"is missing (e.g. {example})")
    return text, parse_server(text, table.key("server"), default_ports)


def parse_imap(table: Table, present: bool) -> ImapConfig | None:
    """``[imap]``, or None when the file has no such table (mail commands then say so)."""
    if not present:
        table.finish()
        return None
    server, address = _server(table, {"tls": 993, "tcp": 143}, '"tls:imap.example.org:993"')
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
        server, address = _server(table, SMTP_PORTS, '"tcp:smtp.example.org:587"')
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
