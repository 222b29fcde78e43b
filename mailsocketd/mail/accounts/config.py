"""``[accounts.NAME]`` tables -> AccountConfig: the mail accounts kept under watch.

Parsing is pure: nothing is read from disk or run here, so a configuration can be checked
anywhere.  The password itself is never part of the configuration: an account names where the
password comes from (a file, a command, an environment variable), and ``secrets`` fetches it when
a connection is about to log in.  Every problem is a ConfigError naming the full dotted key.

``auth`` says how the account logs in: ``password`` (the default), or ``xoauth2`` /
``oauthbearer`` with an OAuth2 access token, which comes from exactly one source: a password
source (the token itself, asked again for each login) or an ``[accounts.NAME.oauth2]`` table
(the daemon refreshes tokens itself, ``mail.oauth``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailsocketd.mail.address import ServerAddress, parse_server
from mailsocketd.mail.oauth.config import OAuth2Config, parse_oauth2
from mailsocketd.mail.secrets import PasswordSource
from mailsocketd.mail.tls import TlsPolicy
from mailsocketd.table import ConfigError, Table

__all__ = [
    "AccountConfig",
    "parse_accounts",
]

ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
PASSWORD_KEYS = ("password_file", "password_command", "password_env")
AUTH_METHODS = ("password", "xoauth2", "oauthbearer")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class AccountConfig:
    """One configured account: which server, who, which mailboxes, how often, what to run."""

    name: str
    server: str
    address: ServerAddress
    user: str
    password: PasswordSource | None  # the password, or the access token; None with oauth2
    auth: str = "password"  # one of AUTH_METHODS
    oauth2: OAuth2Config | None = None  # the daemon refreshes the access tokens
    ca_file: str | None = None
    mailboxes: tuple[str, ...] = ("INBOX",)
    interval: float = 300.0
    idle: bool = True
    keepalive: float = 240.0
    timeout: float = 30.0
    allow_cleartext: bool = False
    on_new_mail: tuple[str, ...] | None = None
    on_new_mail_delay: float = 2.0

    @property
    def scheme(self) -> str:
        return self.address.scheme

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def tls(self) -> TlsPolicy:
        """How connections to the server are protected (``ca_file``, ``allow_cleartext``)."""
        return TlsPolicy(self.ca_file, self.allow_cleartext)


def parse_password(table: Table) -> PasswordSource:
    """Exactly one of ``password_file``, ``password_command``, ``password_env``."""
    given = [k for k in PASSWORD_KEYS if table.has(k)]
    if len(given) != 1:
        problem = "is missing" if not given else "conflicts with " + ", ".join(given[1:])
        name = given[0] if given else "password_file"
        raise ConfigError(table.key(name), f"{problem}: give exactly one of "
                          + ", ".join(PASSWORD_KEYS))
    if given[0] == "password_file":
        return PasswordSource("file", file=table.string("password_file", ""))
    if given[0] == "password_command":
        argv = table.string_list("password_command", (), allow_empty=False)
        return PasswordSource("command", command=argv)
    name = table.string("password_env", "")
    if not ENV_NAME.match(name):
        # The value is not repeated: a password pasted here by mistake must not reach a log.
        raise ConfigError(table.key("password_env"),
                          "not an environment variable name (letters, digits, _)")
    return PasswordSource("env", env=name)


def parse_credentials(table: Table) -> tuple[str, PasswordSource | None, OAuth2Config | None]:
    """``auth`` and its one source: a password source, or for an OAuth2 ``auth`` a password
    source (the token) or an ``oauth2`` table, not both."""
    auth = table.choice("auth", "password", AUTH_METHODS)
    if auth == "password":
        if table.has("oauth2"):
            raise ConfigError(table.key("oauth2"), 'is for auth = "xoauth2" or "oauthbearer", '
                              'and auth is "password" (the default)')
        table.table("oauth2")  # mark it read
        return auth, parse_password(table), None
    given = [k for k in PASSWORD_KEYS if table.has(k)]
    if table.has("oauth2"):
        if given:
            raise ConfigError(table.key(given[0]), f'conflicts with {table.key("oauth2")}: '
                              f'auth = "{auth}" takes exactly one token source')
        return auth, None, parse_oauth2(table.table("oauth2"))
    if not given:
        raise ConfigError(table.key("auth"), f'"{auth}" needs a token source: an [oauth2] '
                          "table, or one of " + ", ".join(PASSWORD_KEYS) + " giving the token")
    return auth, parse_password(table), None


def parse_mailboxes(table: Table) -> tuple[str, ...]:
    mailboxes = table.string_list("mailboxes", AccountConfig.mailboxes, allow_empty=False)
    for box in mailboxes:
        _refuse_control_characters(table, "mailboxes", box)
    if len(set(mailboxes)) != len(mailboxes):
        raise ConfigError(table.key("mailboxes"), "a mailbox is listed twice")
    return mailboxes


def _refuse_control_characters(table: Table, name: str, value: str) -> None:
    """Names go into IMAP commands and status lines: no CR, LF or other control characters."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ConfigError(table.key(name), f"control character in {value!r}")


def _required_string(table: Table, name: str, example: str) -> str:
    if not table.has(name):
        raise ConfigError(table.key(name), f"is missing (e.g. {example})")
    value = table.string(name, "")
    _refuse_control_characters(table, name, value)
    return value


def parse_account(key: str, name: str, table: Table) -> AccountConfig:
    """Validate one ``[accounts.NAME]`` table; ``key`` is its dotted name for messages."""
    if not ACCOUNT_NAME.match(name):
        raise ConfigError(key, "account names are 1-64 letters, digits, '.', '_' or '-' "
                          "(they appear in status lines and logs)")
    server = _required_string(table, "server", '"tls:imap.example.org:993"')
    address = parse_server(server, table.key("server"))
    user = _required_string(table, "user", '"alice"')
    auth, password, oauth2 = parse_credentials(table)
    a = AccountConfig
    account = AccountConfig(
        name=name,
        server=server,
        address=address,
        user=user,
        password=password,
        auth=auth,
        oauth2=oauth2,
        ca_file=table.optional_string("ca_file"),
        mailboxes=parse_mailboxes(table),
        interval=table.number("interval", a.interval, 5.0, 86400.0),
        idle=table.boolean("idle", a.idle),
        keepalive=table.number("keepalive", a.keepalive, 10.0, 1740.0),  # RFC 2177: 29 min
        timeout=table.number("timeout", a.timeout, 1.0, 600.0),
        allow_cleartext=table.boolean("allow_cleartext", a.allow_cleartext),
        on_new_mail=_optional_argv(table, "on_new_mail"),
        on_new_mail_delay=table.number("on_new_mail_delay", a.on_new_mail_delay, 0.0, 3600.0),
    )
    table.finish()
    return account


def _optional_argv(table: Table, name: str) -> tuple[str, ...] | None:
    if not table.has(name):
        table.string_list(name, ())  # mark the key as read
        return None
    return table.string_list(name, (), allow_empty=False)


def parse_accounts(table: Table) -> tuple[AccountConfig, ...]:
    """Validate every ``[accounts.NAME]`` table, in the order of the file."""
    return tuple(parse_account(table.key(name), name, sub)
                 for name, sub in table.tables().items())
