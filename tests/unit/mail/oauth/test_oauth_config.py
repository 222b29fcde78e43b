"""[accounts.NAME.oauth2]: every key checked, every error naming it."""
# ruff: noqa: S105, S106 - URLs and paths, not secrets

from __future__ import annotations

import pytest

from mailsocketd.mail.oauth.config import (
    OAuth2Config,
    default_authorization_url,
    default_device_url,
    parse_oauth2,
)
from mailsocketd.table import ConfigError, Table

KEY = "accounts.work.oauth2"
MINIMAL = {"token_url": "https://oauth2.googleapis.com/token", "client_id": "123.apps",
           "refresh_token_file": "/etc/mailsocketd/work.refresh-token"}


def parse(**keys):
    return parse_oauth2(Table({**MINIMAL, **keys}, KEY))


def error(**keys):
    raw = {k: v for k, v in {**MINIMAL, **keys}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_oauth2(Table(raw, KEY))
    return str(info.value)


def test_the_minimal_table_and_its_defaults():
    assert parse() == OAuth2Config(
        token_url="https://oauth2.googleapis.com/token", client_id="123.apps",
        refresh_token_file="/etc/mailsocketd/work.refresh-token", client_secret_file=None,
        scope=None, device_authorization_url="https://oauth2.googleapis.com/device/code",
        authorization_url="https://accounts.google.com/o/oauth2/v2/auth", ca_file=None,
        timeout=30.0)
    assert parse().token_host == "oauth2.googleapis.com"


def test_every_key():
    config = parse(token_url="https://idp.example.org:8443/realms/x/token",
                   client_secret_file="work.client-secret", scope="mail offline_access",
                   device_authorization_url="https://idp.example.org/device",
                   ca_file="/etc/ssl/idp.pem", timeout=5)
    assert config.client_secret_file == "work.client-secret"  # relative: $CREDENTIALS_DIRECTORY
    assert config.scope == "mail offline_access"
    assert config.device_authorization_url == "https://idp.example.org/device"
    assert (config.ca_file, config.timeout) == ("/etc/ssl/idp.pem", 5.0)
    assert config.token_host == "idp.example.org"


@pytest.mark.parametrize(("token_url", "device_url"), [
    ("https://oauth2.googleapis.com/token", "https://oauth2.googleapis.com/device/code"),
    ("https://login.microsoftonline.com/common/oauth2/v2.0/token",
     "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"),
    ("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"),
    ("https://idp.example.org/token", None),
    ("https://login.microsoftonline.com/common/oauth2/token", None),  # v1: no default
])
def test_device_urls_known_for_google_and_microsoft(token_url, device_url):
    assert default_device_url(token_url) == device_url


def test_authorization_urls_known_for_google_and_microsoft():
    assert default_authorization_url("https://oauth2.googleapis.com/token") \
        == "https://accounts.google.com/o/oauth2/v2/auth"
    assert default_authorization_url(
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token") \
        == "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
    assert default_authorization_url("https://idp.example.org/token") is None
    assert parse(token_url="https://idp.example.org/token",
                 authorization_url="https://idp.example.org/auth").authorization_url \
        == "https://idp.example.org/auth"


@pytest.mark.parametrize(("keys", "message"), [
    ({"token_url": None}, f"{KEY}.token_url: is missing (e.g. "
                          '"https://oauth2.googleapis.com/token")'),
    ({"client_id": None}, f"{KEY}.client_id: is missing (e.g. the client ID of the "
                          "application you registered)"),
    ({"refresh_token_file": None}, f"{KEY}.refresh_token_file: is missing (e.g. "
                                   '"/etc/mailsocketd/work.refresh-token")'),
    ({"token_url": "http://idp.example.org/token"},
     f"{KEY}.token_url: expected an https:// URL, got 'http://idp.example.org/token' "
     "(tokens are never fetched without TLS)"),
    ({"device_authorization_url": "ftp://x/y"}, f"{KEY}.device_authorization_url: expected "
                                                "an https:// URL"),
    ({"authorization_url": "http://x/y"}, f"{KEY}.authorization_url: expected an https:// URL"),
    ({"token_url": "https://idp.example.org:99999/token"}, f"{KEY}.token_url: bad port"),
    ({"token_url": "https://user@idp.example.org/token"}, f"{KEY}.token_url: unexpected user"),
    ({"token_url": "https://bad host/token"}, f"{KEY}.token_url: not a URL"),
    ({"token_url": "https://idp.example.org/t\u00e9"}, f"{KEY}.token_url: not a URL"),
    ({"token_url": 5}, f"{KEY}.token_url: expected a non-empty string, got int 5"),
    ({"refresh_token_file": "work.refresh-token"},
     f"{KEY}.refresh_token_file: expected an absolute path, got 'work.refresh-token'"),
    ({"client_secret_file": "/x\n"}, f"{KEY}.client_secret_file: control character"),
    ({"client_id": "a\tb"}, f"{KEY}.client_id: expected printable ASCII"),
    ({"scope": "mail  offline_access"}, f"{KEY}.scope: expected scope names separated by "
                                        "single spaces"),
    ({"scope": 'mail"'}, f"{KEY}.scope: expected scope names"),
    ({"timeout": 0}, f"{KEY}.timeout: expected a number >= 1"),
    ({"client_secret": "abc"}, f"{KEY}.client_secret: unknown key"),
])
def test_errors_name_the_key(keys, message):
    assert error(**keys).startswith(message)


def test_a_secret_pasted_as_a_client_id_is_not_repeated():
    assert "s3cret\x01" not in error(client_id="s3cret\x01")
