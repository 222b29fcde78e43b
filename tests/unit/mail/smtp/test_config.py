"""``[smtp]``: exactly one of server and sendmail, every problem a ConfigError naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.smtp.config import SmtpConfig, parse_smtp
from mailsocketd.table import ConfigError, Table


def parse(**keys: Any) -> SmtpConfig:
    config = parse_smtp(Table(keys, "smtp"), True)
    assert config is not None
    return config


def refusal(**keys: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_smtp(Table(keys, "smtp"), True)
    return caught.value


def test_no_table_means_no_sending() -> None:
    assert parse_smtp(Table({}, "smtp"), False) is None


def test_a_submission_server_with_the_default_ports() -> None:
    assert parse(server="tcp:smtp.example.org").address == ServerAddress(
        "tcp", "smtp.example.org", 587)
    assert parse(server="tls:smtp.example.org").address == ServerAddress(
        "tls", "smtp.example.org", 465)
    assert parse(server="tcp:[::1]:2525").address == ServerAddress("tcp", "::1", 2525)


def test_the_defaults() -> None:
    config = parse(server="tcp:smtp.example.org", from_domain="example.org")
    assert config == SmtpConfig(server="tcp:smtp.example.org",
                                address=ServerAddress("tcp", "smtp.example.org", 587),
                                from_domain="example.org")
    assert (config.timeout, config.max_message_size, config.allow_cleartext) == (
        60.0, 10 << 20, False)


def test_from_domain_defaults_to_the_machine_s_name() -> None:
    assert parse(sendmail="/usr/sbin/sendmail").from_domain  # socket.getfqdn(): never empty


@pytest.mark.parametrize("keys", [{}, {"server": "tcp:a.example", "sendmail": "/usr/sbin/x"}])
def test_exactly_one_of_server_and_sendmail(keys: dict[str, Any]) -> None:
    error = refusal(**keys)
    assert error.key == "smtp.server"
    assert "exactly one of server" in error.problem


@pytest.mark.parametrize(("keys", "key", "words"), [
    ({"sendmail": "sendmail"}, "smtp.sendmail", "absolute path"),
    ({"server": "smtp.example.org:587"}, "smtp.server", "expected tls:HOST:PORT"),
    ({"server": "tcp:smtp.example.org:0"}, "smtp.server", "bad port"),
    ({"server": "tcp:a.example", "from_domain": "ex ample.org"}, "smtp.from_domain",
     "not a domain name"),
    ({"server": "tcp:a.example", "from_domain": "a@b"}, "smtp.from_domain", "not a domain"),
    ({"server": "tcp:a.example", "timeout": 0.5}, "smtp.timeout", ">= 1"),
    ({"server": "tcp:a.example", "max_message_size": 10}, "smtp.max_message_size", ">= 1024"),
    ({"server": "tcp:a.example", "allow_cleartext": "yes"}, "smtp.allow_cleartext",
     "true or false"),
    ({"server": "tcp:a.example", "sever": "typo"}, "smtp.sever", "unknown key"),
])
def test_each_problem_names_its_key(keys: dict[str, Any], key: str, words: str) -> None:
    error = refusal(**keys)
    assert error.key == key
    assert words in error.problem
