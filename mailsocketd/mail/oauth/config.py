"""``[accounts.NAME.oauth2]`` -> OAuth2Config: where the daemon refreshes an account's tokens.

Parsing is pure, like the rest of the account configuration: no file is read here.  The
configuration names where the secrets are (``client_secret_file``, ``refresh_token_file``),
never the secrets themselves.  Every problem is a ConfigError naming the full dotted key.

The device authorization endpoint (RFC 8628) and the authorization endpoint (the browser
sign-in, RFC 6749 4.1), used only by ``mailsocketd-oauth2`` to enrol, are known for Google's
and Microsoft's token endpoints, so those need only ``token_url``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailsocketd.mail.address import HOST_NAME
from mailsocketd.table import ConfigError, Table

__all__ = ["GOOGLE_TOKEN_URL", "OAuth2Config", "default_authorization_url", "default_device_url",
           "parse_oauth2"]

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
GOOGLE_DEVICE_URL = "https://oauth2.googleapis.com/device/code"
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"
# https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token -> .../devicecode
MICROSOFT_TOKEN_URL = re.compile(
    r"(https://login\.microsoftonline\.com/[A-Za-z0-9.-]+/oauth2/v2\.0/)token\Z")
# RFC 6749 A.1 / A.6: client_id and scope are printable ASCII (scope tokens split by spaces)
VSCHAR = re.compile(r"[\x20-\x7e]+\Z")
URL = re.compile(r"[\x21-\x7e]+\Z")  # RFC 3986: no spaces, no controls, ASCII
SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*\Z")
MAX_URL = 2048


@dataclass(frozen=True)
class OAuth2Config:
    """One account's OAuth2 client: the token endpoint, the client, where the refresh token
    lives, and the scope asked for."""

    token_url: str
    client_id: str
    refresh_token_file: str
    client_secret_file: str | None = None
    scope: str | None = None
    device_authorization_url: str | None = None
    authorization_url: str | None = None
    ca_file: str | None = None
    timeout: float = 30.0

    @property
    def token_host(self) -> str:
        """The token endpoint's host name, for messages (``oauth2.googleapis.com``)."""
        return urlsplit(self.token_url).hostname or self.token_url


def default_device_url(token_url: str) -> str | None:
    """The device authorization endpoint that goes with a well-known token endpoint."""
    if token_url == GOOGLE_TOKEN_URL:
        return GOOGLE_DEVICE_URL
    match = MICROSOFT_TOKEN_URL.match(token_url)
    return match.group(1) + "devicecode" if match else None


def default_authorization_url(token_url: str) -> str | None:
    """The authorization endpoint (browser sign-in) of a well-known token endpoint."""
    if token_url == GOOGLE_TOKEN_URL:
        return GOOGLE_AUTHORIZATION_URL
    match = MICROSOFT_TOKEN_URL.match(token_url)
    return match.group(1) + "authorize" if match else None


def _require(table: Table, name: str, example: str) -> None:
    if not table.has(name):
        raise ConfigError(table.key(name), f"is missing (e.g. {example})")


def _https_url(table: Table, name: str) -> str | None:
    url = table.optional_string(name)
    if url is None:
        return None
    if len(url) > MAX_URL or not URL.match(url):
        raise ConfigError(table.key(name), "not a URL (printable ASCII without spaces, at most "
                          f"{MAX_URL} characters)")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ConfigError(table.key(name), f"expected an https:// URL, got {url!r} "
                          "(tokens are never fetched without TLS)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(table.key(name), f"bad port in {url!r}") from None
    host = parts.hostname or ""
    if not HOST_NAME.match(host) and not _is_ip(host):
        raise ConfigError(table.key(name), f"bad host name in {url!r}")
    if parts.username is not None or parts.fragment or port == 0:
        raise ConfigError(table.key(name), f"unexpected user, fragment or port in {url!r}")
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _file(table: Table, name: str, absolute: bool) -> str | None:
    path = table.optional_string(name)
    if path is None:
        return None
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ConfigError(table.key(name), "control character in the path")
    if absolute and not os.path.isabs(path):
        raise ConfigError(table.key(name), f"expected an absolute path, got {path!r} "
                          "(the daemon writes a rotated refresh token back to it)")
    return path


def _client_id(table: Table) -> str:
    _require(table, "client_id", "the client ID of the application you registered")
    value = table.string("client_id", "")
    if len(value) > 1024 or not VSCHAR.match(value):
        raise ConfigError(table.key("client_id"), "expected printable ASCII (at most 1024 "
                          "characters)")
    return value


def _scope(table: Table) -> str | None:
    value = table.optional_string("scope")
    if value is not None and (len(value) > 4096 or not SCOPE.match(value)):
        raise ConfigError(table.key("scope"), "expected scope names separated by single "
                          "spaces (printable ASCII, no quotes or backslashes)")
    return value


def parse_oauth2(table: Table) -> OAuth2Config:
    """Validate an ``[accounts.NAME.oauth2]`` table (and refuse keys nobody reads)."""
    _require(table, "token_url", f'"{GOOGLE_TOKEN_URL}"')
    _require(table, "refresh_token_file", '"/etc/mailsocketd/work.refresh-token"')
    token_url = _https_url(table, "token_url") or ""
    device_url = _https_url(table, "device_authorization_url")
    authorization_url = _https_url(table, "authorization_url")
    config = OAuth2Config(
        token_url=token_url,
        client_id=_client_id(table),
        refresh_token_file=_file(table, "refresh_token_file", absolute=True) or "",
        client_secret_file=_file(table, "client_secret_file", absolute=False),
        scope=_scope(table),
        device_authorization_url=device_url or default_device_url(token_url),
        authorization_url=authorization_url or default_authorization_url(token_url),
        ca_file=table.optional_string("ca_file"),
        timeout=table.number("timeout", OAuth2Config.timeout, 1.0, 600.0),
    )
    table.finish()
    return config
