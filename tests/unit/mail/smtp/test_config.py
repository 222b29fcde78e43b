"""``[smtp]``: exactly one of server and sendmail, every problem a ConfigError naming the key."""

from __future__ import annotations

import socket
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


@pytest.mark.parametrize(("fqdn", "hostname", "domain"), [
    ("mail.example.org", "mail", "mail.example.org"),
    ("localhost", "mail.example.org", "mail.example.org"),  # issue 11 item 21: this machine
    ("localhost.localdomain", "vm", "vm"),
    ("LOCALHOST", "ip6-localhost", None),
])
def test_from_domain_defaults_to_the_host_s_name_never_localhost(
        monkeypatch: pytest.MonkeyPatch, fqdn: str, hostname: str, domain: str | None) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda: fqdn)
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    if domain is not None:
        assert parse(sendmail="/usr/sbin/sendmail").from_domain == domain
    else:
        error = refusal(sendmail="/usr/sbin/sendmail")
        assert error.key == "smtp.from_domain"
        assert "no name but localhost" in error.problem
    # a configured from_domain is taken as it is, whatever the host's name
    assert parse(sendmail="/usr/sbin/sendmail", from_domain="example.org").from_domain == (
        "example.org")


def test_senders_map_login_names_to_addresses_the_operator_vouches_for() -> None:
    config = parse(server="tcp:a.example", from_domain="example.org",
                   senders={"alice": "alice.smith@example.org", "bob@b.example": "bob@b.example"})
    assert config.senders == (("alice", "alice.smith@example.org"),
                              ("bob@b.example", "bob@b.example"))
    assert parse(server="tcp:a.example").senders == ()


@pytest.mark.parametrize(("senders", "key", "words"), [
    ({"alice": "Alice <alice@example.org>"}, "smtp.senders.alice", "not a plain local@domain"),
    ({"alice": "alice"}, "smtp.senders.alice", "missing @domain"),
    ({"alice": ""}, "smtp.senders.alice", "a non-empty string"),
    ({"alice": ["a@b.c"]}, "smtp.senders.alice", "a non-empty string"),
    ("alice@example.org", "smtp.senders", "a table"),
])
def test_a_bad_sender_mapping_names_its_key(senders: Any, key: str, words: str) -> None:
    error = refusal(server="tcp:a.example", senders=senders)
    assert (error.key, words in error.problem) == (key, True)


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
