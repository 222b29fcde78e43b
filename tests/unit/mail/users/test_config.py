"""``[imap]`` parsing: defaults, limits, and ``keepalive`` with its old name ``idle_restart``."""

from __future__ import annotations

import pytest

from mailsocketd.config import load_config
from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.users.config import ImapConfig, parse_imap
from mailsocketd.table import ConfigError, Table

SERVER = "tls:imap.example.org:993"


def parse(**keys):
    keys.setdefault("server", SERVER)
    return parse_imap(Table(keys, "imap"), present=True)


def error_of(**keys):
    with pytest.raises(ConfigError) as e:
        parse(**keys)
    return str(e.value)


def test_no_table_means_no_mail_commands():
    assert parse_imap(Table({}, "imap"), present=False) is None


def test_defaults():
    imap = parse()
    assert imap == ImapConfig(server=SERVER, address=ServerAddress("tls", "imap.example.org", 993))
    assert imap.keepalive == 1500 and imap.timeout == 30


def test_keepalive_is_the_name_the_accounts_use_too():
    assert parse(keepalive=240).keepalive == 240.0


def test_idle_restart_still_works_as_the_old_name_of_keepalive():
    assert parse(idle_restart=600).keepalive == 600.0


def test_the_old_name_has_the_same_limits():
    assert error_of(idle_restart=1800) == (
        "imap.idle_restart: expected a number >= 10 and <= 1740, got int 1800")


def test_both_names_at_once_are_refused():
    assert error_of(keepalive=240, idle_restart=600) == (
        "imap.idle_restart: is the old name of keepalive: give only keepalive")


@pytest.mark.parametrize(("value", "ok"), [(9, False), (10, True), (1740, True), (1741, False),
                                           ("240", False)])
def test_keepalive_limits(value, ok):
    if ok:
        assert parse(keepalive=value).keepalive == value
    else:
        assert error_of(keepalive=value).startswith("imap.keepalive: expected a number")


def test_unknown_keys_are_still_refused():
    assert error_of(keep_alive=240).startswith("imap.keep_alive: unknown key")


def test_an_existing_file_with_idle_restart_loads(tmp_path):
    path = tmp_path / "mailsocketd.toml"
    path.write_text(f'[imap]\nserver = "{SERVER}"\nidle_restart = 900\n')
    config = load_config(str(path))
    assert config.imap is not None and config.imap.keepalive == 900.0


def test_watch_interval_and_trash():
    imap = parse(watch_interval=10, trash="INBOX.Trash")
    assert (imap.watch_interval, imap.trash) == (10.0, "INBOX.Trash")
    assert (parse().watch_interval, parse().trash) == (30.0, None)
    assert "watch_interval" in error_of(watch_interval=1)
    assert "imap.trash" in error_of(trash="a\nb")
    assert "imap.trash" in error_of(trash="")
