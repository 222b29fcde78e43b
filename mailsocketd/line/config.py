"""``[line]``: the telnet/netcat service's settings, and their parsing (pure: every problem is a
ConfigError naming the key).  Here, not in ``mailsocketd.config``, so that the line service
needs nothing of the mail side to know its own settings."""

from __future__ import annotations

from dataclasses import dataclass

from mailsocketd.table import Table

__all__ = ["DEFAULT_LISTEN", "LineConfig", "parse_line"]

DEFAULT_LISTEN = "tcp:65000:interface=127.0.0.1"


@dataclass(frozen=True)
class LineConfig:
    """``[line]``: the telnet/netcat service."""

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    daytime: tuple[str, ...] = ()
    banner: bool = False
    max_line_length: int = 4096
    idle_timeout: float = 300.0
    line_timeout: float = 30.0  # seconds a line may take from its first byte to its end
    max_connections: int = 10000
    max_connections_per_peer: int = 256
    bare_command_wait: float = 0.05
    close_grace: float = 2.0
    allow_cleartext_login: bool = False  # `login` on a non-loopback listener without TLS
    login_failures: int = 5  # failed logins from one address before it is locked out
    login_lockout: float = 300.0  # seconds an address stays locked out
    login_user_failures: int = 20  # failed logins for one user name, from anywhere; 0: no limit
    login_user_lockout: float = 3600.0  # the window of login_user_failures
    mail_sessions_per_user: int = 8  # IMAP sessions of one user (Dovecot allows 10 per user+IP)
    mail_sessions: int = 500  # IMAP sessions of all users together
    status_users: tuple[str, ...] = ()  # logged-in users shown account lines remotely; "*": all


def parse_line(table: Table) -> LineConfig:
    d = LineConfig()
    line = LineConfig(
        listen=table.string_list("listen", d.listen, allow_empty=False),
        daytime=table.string_list("daytime", d.daytime),
        banner=table.boolean("banner", d.banner),
        max_line_length=table.integer("max_line_length", d.max_line_length, 16, 1 << 20),
        idle_timeout=table.number("idle_timeout", d.idle_timeout),
        line_timeout=table.number("line_timeout", d.line_timeout, 0.0, 3600.0),
        max_connections=table.integer("max_connections", d.max_connections, 1),
        max_connections_per_peer=table.integer(
            "max_connections_per_peer", d.max_connections_per_peer, 1),
        bare_command_wait=table.number("bare_command_wait", d.bare_command_wait, 0.0, 10.0),
        close_grace=table.number("close_grace", d.close_grace, 0.0, 60.0),
        allow_cleartext_login=table.boolean("allow_cleartext_login", d.allow_cleartext_login),
        login_failures=table.integer("login_failures", d.login_failures, 1, 1000),
        login_lockout=table.number("login_lockout", d.login_lockout, 0.0, 86400.0),
        login_user_failures=table.integer("login_user_failures", d.login_user_failures, 0,
                                          100_000),
        login_user_lockout=table.number("login_user_lockout", d.login_user_lockout, 0.0,
                                        7 * 86400.0),
        mail_sessions_per_user=table.integer("mail_sessions_per_user",
                                             d.mail_sessions_per_user, 1, 10_000),
        mail_sessions=table.integer("mail_sessions", d.mail_sessions, 1, 1_000_000),
        status_users=table.string_list("status_users", d.status_users),
    )
    table.finish()
    return line
