"""``[accounts.NAME]`` parsing: defaults, every key, and errors that name the full key."""
# ruff: noqa: S105, S106 - the password_* keys name password sources, not passwords

from __future__ import annotations

import pytest

from mailsocketd.config import load_config
from mailsocketd.mail.accounts.config import AccountConfig, parse_accounts
from mailsocketd.mail.address import ServerAddress, parse_server
from mailsocketd.mail.secrets import PasswordSource
from mailsocketd.table import ConfigError, Table


def parse(**tables):
    return parse_accounts(Table(tables, "accounts"))


def one(**keys):
    keys.setdefault("server", "tls:imap.example.org:993")
    keys.setdefault("user", "alice")
    if not any(k.startswith("password_") for k in keys):
        keys["password_file"] = "/etc/mailsocketd/work.pw"
    return parse(work=keys)[0]


def error_of(**keys):
    with pytest.raises(ConfigError) as e:
        one(**keys)
    return str(e.value)


def test_defaults():
    a = one()
    assert a == AccountConfig(
        name="work", server="tls:imap.example.org:993",
        address=ServerAddress("tls", "imap.example.org", 993), user="alice",
        password=PasswordSource("file", file="/etc/mailsocketd/work.pw"))
    assert (a.scheme, a.host, a.port) == ("tls", "imap.example.org", 993)
    assert a.mailboxes == ("INBOX",) and a.interval == 300 and a.idle is True
    assert a.allow_cleartext is False and a.on_new_mail is None and a.ca_file is None
    assert a.keepalive == 240


def test_every_key():
    a = one(server="tcp:mail.example.test", password_command=["pass", "show", "work"],
            ca_file="/etc/ca.pem", mailboxes=["INBOX", "Lists/Twisted"], interval=60,
            idle=False, keepalive=120, timeout=10, allow_cleartext=True,
            on_new_mail=["/usr/local/bin/notify", "--quiet"], on_new_mail_delay=0.5)
    assert a.address == ServerAddress("tcp", "mail.example.test", 143)
    assert a.password == PasswordSource("command", command=("pass", "show", "work"))
    assert a.mailboxes == ("INBOX", "Lists/Twisted") and a.interval == 60.0
    assert (a.idle, a.keepalive, a.timeout, a.allow_cleartext) == (False, 120.0, 10.0, True)
    assert a.on_new_mail == ("/usr/local/bin/notify", "--quiet")
    assert a.on_new_mail_delay == 0.5 and a.ca_file == "/etc/ca.pem"


@pytest.mark.parametrize(("text", "expected"), [
    ("tls:imap.example.org:993", ("tls", "imap.example.org", 993)),
    ("tls:imap.example.org", ("tls", "imap.example.org", 993)),
    ("tcp:127.0.0.1:10143", ("tcp", "127.0.0.1", 10143)),
    ("tcp:[::1]:143", ("tcp", "::1", 143)),
    ("tls:[::1]", ("tls", "::1", 993)),
    ("tcp:\\:\\:1:1143", ("tcp", "::1", 1143)),
])
def test_server_forms(text, expected):
    assert parse_server(text, "k") == ServerAddress(*expected)


@pytest.mark.parametrize(("text", "problem"), [
    ("imap.example.org:993", "expected tls:HOST:PORT or tcp:HOST:PORT"),
    ("ssl:imap.example.org:993", "expected tls:HOST:PORT"),
    ("tls:imap.example.org:99999", "bad port"),
    ("tls:imap.example.org:x", "bad port"),
    ("tls::993", "bad host name"),
    ("tls:imap|x:993", "bad host name"),
    ("tls:imap example.org", "bad host name"),
    ("tcp:::1:143", "too many ':'"),
    ("tls:host:993:timeout=5", "too many ':'"),
    ("tcp:[::1:143", "bad bracketed address"),
])
def test_bad_server_names_the_key(text, problem):
    message = error_of(server=text)
    assert message.startswith("accounts.work.server: ") and problem in message


def test_password_sources_exactly_one():
    with pytest.raises(ConfigError, match=r"^accounts\.work\.password_file: is missing"):
        parse(work={"server": "tls:h", "user": "u"})
    message = error_of(password_file="/x", password_env="PW")
    assert message.startswith("accounts.work.password_file: conflicts with password_env")
    assert one(password_env="WORK_PASSWORD").password == PasswordSource("env", env="WORK_PASSWORD")
    assert error_of(password_env="NOT-A-NAME").startswith("accounts.work.password_env: ")
    assert error_of(password_command=[]).startswith("accounts.work.password_command: ")


@pytest.mark.parametrize(("keys", "key"), [
    ({"server": 993}, "server"),
    ({"user": ""}, "user"),
    ({"user": "al\r\nice"}, "user"),
    ({"mailboxes": []}, "mailboxes"),
    ({"mailboxes": ["INBOX", "INBOX"]}, "mailboxes"),
    ({"mailboxes": ["a\nb"]}, "mailboxes"),
    ({"interval": 1}, "interval"),
    ({"keepalive": 1800}, "keepalive"),
    ({"timeout": 0}, "timeout"),
    ({"idle": "yes"}, "idle"),
    ({"on_new_mail": "notify-send"}, "on_new_mail"),
    ({"on_new_mail": []}, "on_new_mail"),
    ({"allow_cleartext": 1}, "allow_cleartext"),
    ({"pasword_file": "/x"}, "pasword_file"),
])
def test_bad_values_name_the_key(keys, key):
    assert error_of(**keys).startswith(f"accounts.work.{key}: ")


@pytest.mark.parametrize(("value", "ok"), [(9, False), (10, True), (1740, True), (1741, False)])
def test_keepalive_goes_up_to_rfc_2177s_29_minutes_as_in_imap(value, ok):
    if ok:
        assert one(keepalive=value).keepalive == value
    else:
        assert error_of(keepalive=value) == (
            f"accounts.work.keepalive: expected a number >= 10 and <= 1740, got int {value}")


def test_missing_server_and_user():
    with pytest.raises(ConfigError, match=r"^accounts\.work\.server: is missing"):
        parse(work={"user": "u", "password_env": "PW"})
    with pytest.raises(ConfigError, match=r"^accounts\.work\.user: is missing"):
        parse(work={"server": "tls:h", "password_env": "PW"})


def test_account_names_and_tables():
    with pytest.raises(ConfigError, match=r"^accounts\.my work: account names"):
        parse(**{"my work": {"server": "tls:h", "user": "u", "password_env": "PW"}})
    with pytest.raises(ConfigError, match=r"^accounts\.work: expected a table"):
        parse(work="tls:h")


def test_through_load_config_keeps_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("""
[accounts.work]
server = "tls:imap.example.org:993"
user = "alice"
password_file = "/etc/mailsocketd/work.pw"

[accounts.home]
server = "tcp:127.0.0.1:10143"
user = "bob"
password_env = "HOME_PW"
mailboxes = ["INBOX", "Family"]
""")
    config = load_config(str(path))
    assert [a.name for a in config.accounts] == ["work", "home"]
    assert config.accounts[1].mailboxes == ("INBOX", "Family")


def test_the_config_names_the_password_source_never_a_password():
    assert one(password_env="WORK_PASSWORD").password.describe() == "password_env WORK_PASSWORD"
    assert one(password_command=["pass", "show", "x"]).password.describe() == (
        "password_command pass")


# -- auth: password, or OAuth2 access tokens from exactly one source -----------------------

OAUTH2 = {"token_url": "https://oauth2.googleapis.com/token", "client_id": "123.apps",
          "refresh_token_file": "/etc/mailsocketd/work.refresh-token"}


def oauth(**keys):
    keys.setdefault("server", "tls:imap.example.org:993")
    keys.setdefault("user", "alice")
    return parse(work=keys)[0]


def oauth_error(**keys):
    with pytest.raises(ConfigError) as e:
        oauth(**keys)
    return str(e.value)


def test_auth_defaults_to_password():
    a = one()
    assert (a.auth, a.oauth2) == ("password", None)


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_a_token_from_a_password_source(auth):
    a = oauth(auth=auth, password_command=["oama", "access", "alice@example.org"])
    assert a.auth == auth and a.oauth2 is None
    assert a.password == PasswordSource("command", command=("oama", "access",
                                                            "alice@example.org"))


def test_tokens_refreshed_by_the_daemon():
    a = oauth(auth="oauthbearer", oauth2=dict(OAUTH2))
    assert a.password is None and a.oauth2 is not None
    assert a.oauth2.token_url == OAUTH2["token_url"]
    assert a.oauth2.refresh_token_file == OAUTH2["refresh_token_file"]


@pytest.mark.parametrize(("keys", "message"), [
    ({"auth": "xoauth2"},
     'accounts.work.auth: "xoauth2" needs a token source: an [oauth2] table, or one of '
     "password_file, password_command, password_env giving the token"),
    ({"auth": "xoauth2", "password_env": "TOKEN", "oauth2": OAUTH2},
     "accounts.work.password_env: conflicts with accounts.work.oauth2: "
     'auth = "xoauth2" takes exactly one token source'),
    ({"auth": "oauthbearer", "password_env": "T", "password_file": "/t"},
     "accounts.work.password_file: conflicts with password_env: give exactly one of "
     "password_file, password_command, password_env"),
    ({"password_file": "/pw", "oauth2": OAUTH2},
     'accounts.work.oauth2: is for auth = "xoauth2" or "oauthbearer", and auth is "password" '
     "(the default)"),
    ({"auth": "password", "password_file": "/pw", "oauth2": OAUTH2},
     'accounts.work.oauth2: is for auth = "xoauth2" or "oauthbearer", and auth is "password" '
     "(the default)"),
    ({"auth": "XOAUTH2", "password_file": "/pw"}, "accounts.work.auth: "),
    ({"auth": "oauthbearer", "oauth2": {**OAUTH2, "surprise": 1}},
     "accounts.work.oauth2.surprise: unknown key"),
    ({"auth": "oauthbearer", "oauth2": "yes"}, "accounts.work.oauth2: "),
])
def test_mismatched_sources_name_the_key(keys, message):
    assert oauth_error(**keys).startswith(message)
