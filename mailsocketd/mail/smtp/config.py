"""``[smtp]``: where ``send`` hands a message: an SMTP submission server, or the local sendmail.

Optional: without it ``send`` answers that sending is not configured.  Parsing is pure, and
every problem is a ConfigError naming the key.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from mailsocketd.mail.address import SMTP_PORTS, ServerAddress, server_key
from mailsocketd.mail.text.compose import address_problem
from mailsocketd.table import ConfigError, Table

__all__ = ["SmtpConfig", "host_domain", "parse_smtp"]

MIB = 1 << 20
# Names a host has for itself that are no domain anyone can reply to.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "localhost6",
                         "localhost6.localdomain6", "ip6-localhost", "ip6-loopback"})


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
    # Bytes of messages being typed (and then sent) that one user, and all users, may hold:
    # by default twice and ten times max_message_size.
    max_unsent_per_user: int = 20 * MIB
    max_unsent_total: int = 100 * MIB
    from_domain: str = ""  # the login name's local part at this domain is the From address
    # (login name as typed, address): explicit From addresses that replace the rule above
    senders: tuple[tuple[str, str], ...] = ()


def host_domain() -> str:
    """This host's name for ``from_domain``: ``getfqdn()``, else ``gethostname()`` when that
    says only ``localhost`` (as it does where /etc/hosts maps the host name to 127.0.0.1
    under ``localhost`` first); "" when both do."""
    for found in (socket.getfqdn(), socket.gethostname()):
        name = found.strip().rstrip(".")
        if name and name.lower() not in LOCAL_NAMES:
            return name
    return ""


def _senders(table: Table) -> tuple[tuple[str, str], ...]:
    """``[smtp.senders]``: login name -> the plain ``local@domain`` it sends as."""
    senders = []
    for login in table.names():
        address = table.string(login, "")
        problem = address_problem(address)
        if problem is not None:
            raise ConfigError(table.key(login), f"not a plain local@domain address: {problem}")
        senders.append((login, address))
    table.finish()
    return tuple(senders)


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
    from_domain = table.string("from_domain", "") or host_domain()
    if not from_domain:
        raise ConfigError(table.key("from_domain"), "this host has no name but localhost; "
                          'give the mail domain (e.g. from_domain = "example.org")')
    if any(c.isspace() or c in "@<>" for c in from_domain):
        raise ConfigError(table.key("from_domain"), f"not a domain name: {from_domain!r}")
    max_size = table.integer("max_message_size", d.max_message_size, 1024, 1024 * MIB)
    # A user must be able to type one message of the largest size, and all users one user's.
    per_user = table.integer("max_unsent_per_user", 2 * max_size, max_size, 64 * 1024 * MIB)
    total = table.integer("max_unsent_total", 10 * max_size, per_user, 64 * 1024 * MIB)
    smtp = SmtpConfig(
        server=server,
        address=address,
        sendmail=sendmail,
        ca_file=table.optional_string("ca_file"),
        timeout=table.number("timeout", d.timeout, 1.0, 600.0),
        allow_cleartext=table.boolean("allow_cleartext", d.allow_cleartext),
        max_message_size=max_size,
        max_unsent_per_user=per_user,
        max_unsent_total=total,
        from_domain=from_domain,
        senders=_senders(table.table("senders")),
    )
    table.finish()
    return smtp
