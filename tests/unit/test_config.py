"""Configuration: the TOML file, command-line overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from mailsocketd.config import DEFAULT_LISTEN, ConfigError, LineConfig, load_config
from mailsocketd.table import Table


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file():
    config = load_config(None)
    assert config.line == LineConfig()
    assert config.line.listen == (DEFAULT_LISTEN,)
    assert config.log.format == "text" and config.log.commands is False
    assert config.log.keep_files == 10
    assert config.accounts == ()


def test_file_values_and_overrides(tmp_path):
    path = write(tmp_path, """
[line]
listen = ["tcp:7000:interface=127.0.0.1", "unix:/tmp/x.sock"]
idle_timeout = 12.5
max_line_length = 100
banner = true

[log]
format = "json"
""")
    config = load_config(path, {"line.max_line_length": 200})
    assert config.line.listen == ("tcp:7000:interface=127.0.0.1", "unix:/tmp/x.sock")
    assert config.line.idle_timeout == 12.5
    assert config.line.max_line_length == 200
    assert config.line.banner is True
    assert config.log.format == "json"


@pytest.mark.parametrize(("text", "message"), [
    ("[line]\nidle_timeout = -1\n", "line.idle_timeout: expected a number >= 0, got int -1"),
    ("[line]\nlisten = []\n",
     "line.listen: expected a list of non-empty strings (at least one), got list []"),
    ("[line]\nmax_line_length = 'big'\n", "line.max_line_length: expected an integer >= 16"),
    ("[line]\nbanner = 1\n", "line.banner: expected true or false, got int 1"),
    ("[line]\nlisten_on = ['x']\n", "line.listen_on: unknown key"),
    ("[lines]\n", "lines: unknown key"),
    ("[log]\nformat = 'xml'\n", "log.format: expected one of 'text', 'json', got str 'xml'"),
    ("line = 3\n", "line: expected a table, got int 3"),
    # Issue 11 item 16: inf was taken (and nan with no bounds would be); no setting means it.
    ("[line]\nidle_timeout = inf\n", "line.idle_timeout: expected a number >= 0, got float inf"),
    ("[line]\nidle_timeout = nan\n", "line.idle_timeout: expected a number >= 0, got float nan"),
    ("[imap]\nserver = 'tls:h'\ntimeout = -inf\n", "imap.timeout: expected a number >= 1"),
    ("[log]\nkeep_files = 0\n", "log.keep_files: expected an integer >= 1 and <= 1000, got int 0"),
])
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).startswith(message)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration file .*missing.toml"):
        load_config(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[line\n"))


def test_bad_override_names_the_key():
    with pytest.raises(ConfigError, match=r"^line.max_connections: expected an integer >= 1"):
        load_config(None, {"line.max_connections": 0})


def test_every_number_setting_refuses_infinity():
    """Issue 11 item 16: Table.number is the one reader of number settings, and refuses inf."""
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ConfigError, match="expected a number"):
            Table({"n": value}, "t").number("n", 1.0, 0.0)
        with pytest.raises(ConfigError, match="expected a number"):
            Table({"n": value}, "t").number("n", 1.0, 0.0, 10.0)
    assert Table({"n": 1e300}, "t").number("n", 1.0) == 1e300  # big, but a number


def test_log_keep_files(tmp_path):
    assert load_config(write(tmp_path, "[log]\nkeep_files = 3\n")).log.keep_files == 3
