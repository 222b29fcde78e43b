"""The whole-configuration check (issue 12 item 1): every problem, one line each, by key."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from mailsocketd.config import ConfigError, ConfigErrors, load_config, parse_config
from mailsocketd.preflight import ConfigurationInvalid, check_configuration, check_endpoint


def test_one_reading_reports_every_bad_key():
    with pytest.raises(ConfigErrors) as info:
        parse_config({"line": {"idle_timeout": -1, "banner": "yes", "bogus": 1},
                      "log": {"format": "xml"},
                      "accounts": {"a": {"server": "bad"}, "b": "not a table"},
                      "smtp": {"server": "tcp:h", "sendmail": "/x"}})
    assert sorted(str(e) for e in info.value.errors) == sorted([
        "line.idle_timeout: expected a number >= 0, got int -1",
        "line.banner: expected true or false, got str 'yes'",
        "line.bogus: unknown key (see docs/configuration.md)",
        "log.format: expected one of 'text', 'json', got str 'xml'",
        "accounts.a.server: expected tls:HOST:PORT or tcp:HOST:PORT, got 'bad'",
        "accounts.b: expected a table, got str 'not a table'",  # and not its missing keys
        'smtp.server: give exactly one of server (e.g. "tcp:smtp.example.org:587") and '
        'sendmail (e.g. "/usr/sbin/sendmail")',
    ])
    assert str(info.value) == str(info.value.errors[0])
    assert isinstance(info.value, ConfigError)  # callers that show one line still work
    assert info.value.partial is not None and info.value.partial.line.idle_timeout == 300.0


def test_a_good_configuration_is_unchanged_by_the_collecting():
    config = load_config(None, {"line.idle_timeout": 5.0})
    assert config.line.idle_timeout == 5.0


def test_check_configuration_adds_what_only_the_disk_and_environment_tell(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[line]\nclose_grace = 100\nlisten = ["tcp:x"]\n'
                    '[accounts.w]\nserver = "tls:h"\nuser = "u"\npassword_env = "PW"\n')
    with pytest.raises(ConfigurationInvalid) as info:
        check_configuration(str(path), {}, MemoryReactorClock(), environ={})
    assert info.value.problems == [
        "line.close_grace: expected a number >= 0 and <= 60, got int 100",
        "line.listen: bad endpoint 'tcp:x': invalid literal for int() with base 10: 'x'",
        "accounts.w.password_env: PW: the variable is not set or empty",
    ]
    assert str(info.value) == "\n".join(info.value.problems)
    path.write_text('[accounts.w]\nserver = "tls:h"\nuser = "u"\npassword_env = "PW"\n')
    config = check_configuration(str(path), {}, MemoryReactorClock(), environ={"PW": "x"})
    assert [a.name for a in config.accounts] == ["w"]


def test_check_configuration_reads_an_oauth2_accounts_token_files(tmp_path):
    """The refresh token and client secret files of [accounts.NAME.oauth2] are checked like a
    password_file: missing, or readable by others, is a problem naming the key."""
    refresh_token, client_secret = tmp_path / "rt", tmp_path / "cs"
    path = tmp_path / "m.toml"
    path.write_text('[accounts.w]\nserver = "tls:h"\nuser = "u"\nauth = "xoauth2"\n'
                    '[accounts.w.oauth2]\ntoken_url = "https://idp.example.test/token"\n'
                    f'client_id = "c"\nrefresh_token_file = "{refresh_token}"\n'
                    f'client_secret_file = "{client_secret}"\n')
    client_secret.write_text("s\n")
    client_secret.chmod(0o644)
    with pytest.raises(ConfigurationInvalid) as info:
        check_configuration(str(path), {}, MemoryReactorClock(), environ={})
    assert info.value.problems == [
        f"accounts.w.oauth2.refresh_token_file: {refresh_token}: cannot open: "
        "No such file or directory",
        f"accounts.w.oauth2.client_secret_file: {client_secret}: readable by group or others "
        "(mode 0644); refusing it: chmod 600 it (or 400)",
    ]
    refresh_token.write_text("r\n")
    refresh_token.chmod(0o600)
    client_secret.chmod(0o600)
    config = check_configuration(str(path), {}, MemoryReactorClock(), environ={})
    assert [a.name for a in config.accounts] == ["w"]


@pytest.mark.parametrize(("description", "passed", "problem"), [
    ("systemd:domain=INET:index=0", False, None),
    ("systemd:domain=INET:name=line", False, None),
    ("systemd:domain=INET", False, "give exactly one of index= and name="),
    ("systemd:domain=INET:index=x", False, "index= must be a number"),
    ("systemd:domain=INET:index=0", True, "no socket was passed by systemd"),
    ("tcp:65000:interface=127.0.0.1", True, None),
    ("ssl:0:privateKey=/nonexistent/k.pem", True,
     "privateKey /nonexistent/k.pem: cannot read: No such file or directory"),
    ("haproxy:ssl:0:certKey=/nonexistent/c.pem", True,
     "certKey /nonexistent/c.pem: cannot read: No such file or directory"),
])
def test_endpoints(description, passed, problem):
    found = check_endpoint("line.listen", description, MemoryReactorClock(), passed)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(f"line.listen: bad endpoint {description!r}: ")
        assert problem in found
