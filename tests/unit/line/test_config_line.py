"""The [line] settings of issue 11 (login limits per user name, session caps, status_users):
their defaults and that a bad value is an error naming its key."""

from __future__ import annotations

import pytest

from mailsocketd.line.config import LineConfig, parse_line
from mailsocketd.table import ConfigError, Table


def test_defaults():
    line = LineConfig()
    assert (line.login_user_failures, line.login_user_lockout) == (20, 3600.0)
    assert (line.mail_sessions_per_user, line.mail_sessions) == (8, 500)
    assert line.status_users == ()


def test_the_new_keys_are_read():
    line = parse_line(Table({"login_user_failures": 0, "login_user_lockout": 60,
                             "mail_sessions_per_user": 2, "mail_sessions": 9,
                             "status_users": ["alice", "*"]}, "line"))
    assert (line.login_user_failures, line.login_user_lockout) == (0, 60.0)
    assert (line.mail_sessions_per_user, line.mail_sessions) == (2, 9)
    assert line.status_users == ("alice", "*")


@pytest.mark.parametrize(("key", "value"), [
    ("mail_sessions_per_user", 0), ("mail_sessions", -1), ("login_user_failures", -1),
    ("login_user_lockout", "1h"), ("status_users", "alice"), ("status_users", [""]),
])
def test_a_bad_value_names_its_key(key, value):
    with pytest.raises(ConfigError, match=key):
        parse_line(Table({key: value}, "line"))
