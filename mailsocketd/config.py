"""The daemon's configuration: a TOML file plus command-line overrides -> one typed Config.

Every problem is reported as a ConfigError that names the offending key (``line.idle_timeout``)
so that twistd can stop at start-up with a message a sysadmin can act on; nothing starts with a
half-understood configuration.  Unknown keys are errors too: a typo must not be ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailsocketd.line.config import DEFAULT_LISTEN, LineConfig, parse_line
from mailsocketd.logs import KEEP_FILES
from mailsocketd.mail.accounts.config import AccountConfig, parse_accounts
from mailsocketd.mail.smtp.config import SmtpConfig, parse_smtp
from mailsocketd.mail.users.config import ImapConfig, parse_imap
from mailsocketd.table import ConfigError, Table

__all__ = ["DEFAULT_LISTEN", "Config", "ConfigError", "LineConfig", "LogConfig", "load_config"]

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
    """Validate a parsed TOML document (with command-line overrides merged in)."""
    top = Table(raw, "")
    config = Config(
        line=parse_line(top.table("line")),
        log=parse_log(top.table("log")),
        accounts=parse_accounts(top.table("accounts")),
        imap=parse_imap(top.table("imap"), top.has("imap")),
        smtp=parse_smtp(top.table("smtp"), top.has("smtp")),
    )
    top.finish()
    return config


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
