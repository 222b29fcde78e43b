"""The daemon's configuration: a TOML file plus command-line overrides -> one typed Config.

Every problem is reported as a ConfigError that names the offending key (``line.idle_timeout``)
so that twistd can stop at start-up with a message a sysadmin can act on; nothing starts with a
half-understood configuration.  Unknown keys are errors too: a typo must not be ignored.  One
reading reports every bad key it can (``ConfigErrors``), not just the first, so that an operator
fixes them in one round.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mailsocketd.line.config import DEFAULT_LISTEN, LineConfig, parse_line
from mailsocketd.logs import KEEP_FILES
from mailsocketd.mail.accounts.config import AccountConfig, parse_account
from mailsocketd.mail.smtp.config import SmtpConfig, parse_smtp
from mailsocketd.mail.users.config import ImapConfig, parse_imap
from mailsocketd.metrics.config import MetricsConfig, parse_metrics
from mailsocketd.table import ConfigError, Table

__all__ = ["DEFAULT_LISTEN", "Config", "ConfigError", "ConfigErrors", "LineConfig", "LogConfig",
           "load_config"]

T = TypeVar("T")


class ConfigErrors(ConfigError):
    """Every problem one reading found, in the file's order; ``str()`` is the first, so a
    caller that shows one line shows the first problem."""

    def __init__(self, errors: list[ConfigError], partial: Config | None = None) -> None:
        super().__init__(errors[0].key, errors[0].problem)
        self.errors = errors
        self.partial = partial  # what could be read (defaults for the bad values), to check on


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: what is logged and how."""

    format: str = "text"
    commands: bool = False  # per-command events: costly at line rate (docs/configuration.md)
    keep_files: int = KEEP_FILES  # old --logfile files kept beside the current one


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs, validated."""

    line: LineConfig = field(default_factory=LineConfig)
    log: LogConfig = field(default_factory=LogConfig)
    accounts: tuple[AccountConfig, ...] = ()
    imap: ImapConfig | None = None
    smtp: SmtpConfig | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def read_toml(path: str) -> dict[str, Any]:
    """Parse a TOML file; every failure becomes a ConfigError naming the file."""
    try:
        with Path(path).open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read configuration file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"configuration file {path} is not valid TOML: {e}") from None


def parse_log(table: Table) -> LogConfig:
    d = LogConfig()
    log = LogConfig(
        format=table.choice("format", d.format, ("text", "json")),
        commands=table.boolean("commands", d.commands),
        keep_files=table.integer("keep_files", d.keep_files, 1, 1000),
    )
    table.finish()
    return log


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document (with command-line overrides merged in); ConfigErrors
    with every problem found: each table (each account) is read to its end or its first
    problem that is not a mere bad value."""
    errors: list[ConfigError] = []
    top = Table(raw, "", errors)

    def part(parse: Callable[[], T], default: T) -> T:
        try:
            return parse()
        except ConfigError as e:
            errors.append(e)
            return default

    line = part(lambda: parse_line(top.table("line")), LineConfig())
    log = part(lambda: parse_log(top.table("log")), LogConfig())
    accounts_table = top.table("accounts")
    accounts: list[AccountConfig | None] = []
    for name, table in accounts_table.tables().items():
        key = accounts_table.key(name)
        accounts.append(part(lambda: parse_account(key, name, table), None))  # noqa: B023
    imap = part(lambda: parse_imap(top.table("imap"), top.has("imap")), None)
    smtp = part(lambda: parse_smtp(top.table("smtp"), top.has("smtp")), None)
    metrics = part(lambda: parse_metrics(top.table("metrics")), MetricsConfig())
    top.finish()
    config = Config(line=line, log=log, accounts=tuple(a for a in accounts if a is not None),
                    imap=imap, smtp=smtp, metrics=metrics)
    if errors:
        raise ConfigErrors(_first_per_key(errors), config)
    return config


def _first_per_key(errors: list[ConfigError]) -> list[ConfigError]:
    """One error per key, and none inside a key already in error (a table that is no table
    is not also missing its keys)."""
    kept: list[ConfigError] = []
    for error in errors:
        if not any(error.key == k.key or error.key.startswith(k.key + ".")
                   for k in kept if k.key):
            kept.append(error)
    return kept


def merge_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Put ``{"line.listen": [...]}``-style overrides over a parsed document."""
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "expected a table")
        target[name] = value
    return merged


def load_config(path: str | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` (if any), apply ``overrides`` and validate the result."""
    raw = read_toml(path) if path else {}
    return parse_config(merge_overrides(raw, overrides or {}))
