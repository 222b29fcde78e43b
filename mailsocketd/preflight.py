"""Everything start-up checks, in one function: ``twistd mailsocketd --check-config``, the
start itself and a reload all ask ``check_configuration``.

Beyond the keys and types ``config`` reads, a configuration names things on disk and in the
environment that must be there for the daemon to work: the listeners' endpoints (and an
``ssl:`` listener's key and certificate files), the CA files, each account's password source
(a file no one else may read, a set variable, a command that exists) and its ``on_new_mail``
hook, and ``[smtp] sendmail``.  Each problem is one line naming the key, and every problem is
reported, not just the first.  Nothing is started, opened for writing or run: the password
sources are read (a file, a variable), never a password command.

Like ``tap``, this module parses endpoint strings, with the reactor it is given (to check them
only: nothing listens).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from twisted.internet.endpoints import serverFromString

from mailsocketd.config import Config, ConfigError, ConfigErrors, load_config
from mailsocketd.mail.errors import MailError
from mailsocketd.mail.oauth.store import read_client_secret, read_refresh_token
from mailsocketd.mail.process import scrubbed_environment
from mailsocketd.mail.secrets import (
    PasswordSource,
    SecretError,
    read_password_env,
    read_password_file,
)
from mailsocketd.mail.tls import load_trust_root

__all__ = ["ConfigurationInvalid", "check_configuration", "check_endpoint", "problems_of"]

# The arguments of an ``ssl:`` server endpoint that name files (twisted.internet.endpoints).
SSL_FILE_ARGUMENTS = ("privateKey", "certKey", "extraCertChain", "dhParameters", "caCertsDir")
_UNESCAPED_COLON = re.compile(r"(?<!\\):")
SYSTEMD_DOMAINS = ("INET", "INET6", "UNIX")


class ConfigurationInvalid(ValueError):
    """The configuration cannot be used; ``problems`` holds one line per problem, each naming
    its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def check_configuration(path: str | None, overrides: Mapping[str, Any], reactor: Any,
                        environ: Mapping[str, str] | None = None,
                        passed_sockets: bool = True) -> Config:
    """Read ``path`` with ``overrides`` and check everything start-up needs; the Config, or
    ConfigurationInvalid with every problem.  With ``passed_sockets`` false (a check run by
    hand, outside systemd) a ``systemd:`` listener is checked for its syntax only."""
    environ = os.environ if environ is None else environ
    try:
        config = load_config(path, overrides)
    except ConfigErrors as e:  # what could be read is checked on, so that all is reported
        problems = [str(error) for error in e.errors]
        if e.partial is not None:
            problems += problems_of(e.partial, reactor, environ, passed_sockets)
        raise ConfigurationInvalid(problems) from None
    except ConfigError as e:  # the file itself: missing, unreadable, not TOML
        raise ConfigurationInvalid([str(e)]) from None
    problems = problems_of(config, reactor, environ, passed_sockets)
    if problems:
        raise ConfigurationInvalid(problems)
    return config


def problems_of(config: Config, reactor: Any, environ: Mapping[str, str],
                passed_sockets: bool = True) -> list[str]:
    """What is wrong outside the file's own keys and types, one line each."""
    problems: list[str] = []
    for key, description in endpoints(config):
        problem = check_endpoint(key, description, reactor, passed_sockets)
        if problem:
            problems.append(problem)
    for key, path in _ca_files(config):
        try:
            load_trust_root(path)
        except MailError as e:
            problems.append(f"{key}: {str(e).removeprefix('ca_file ')}")
    problems.extend(_account_problems(config, environ))
    if config.smtp is not None and config.smtp.sendmail is not None:
        problems.extend(_program_problems("smtp.sendmail", config.smtp.sendmail, environ))
    return problems


def endpoints(config: Config) -> list[tuple[str, str]]:
    """Every listener of the configuration, as (key, endpoint description)."""
    return ([("line.listen", d) for d in config.line.listen]
            + [("line.daytime", d) for d in config.line.daytime]
            + [("metrics.listen", d) for d in config.metrics.listen])


def _arguments(description: str) -> tuple[str, dict[str, str]]:
    """An endpoint string's kind and its ``name=value`` arguments (``\\:`` unescaped)."""
    parts = [p.replace("\\:", ":") for p in _UNESCAPED_COLON.split(description)]
    named = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    return parts[0].lower(), named


def check_endpoint(key: str, description: str, reactor: Any,
                   passed_sockets: bool = True) -> str | None:
    """The problem of an endpoint string (bad syntax, an unreadable key file...), naming the
    key and any file, or None."""
    bad = f"{key}: bad endpoint {description!r}"
    kind, named = _arguments(description)
    if kind == "haproxy":
        kind, named = _arguments(description.partition(":")[2])
    if kind == "ssl":
        for name in SSL_FILE_ARGUMENTS:
            why = _unreadable(named[name]) if name in named else None
            if why:
                return f"{bad}: {name} {named[name]}: cannot read: {why}"
    if kind == "systemd" and not passed_sockets:
        return _systemd_syntax(bad, named)
    try:
        serverFromString(reactor, description)
    except Exception as e:  # every parser error: bad syntax, a bad TLS key, no socket...
        hint = ""
        if kind == "systemd":
            hint = " (no socket was passed by systemd: LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES)"
        return f"{bad}: {_describe(e)}{hint}"
    return None


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be read, or None."""
    try:
        os.stat(path)
    except OSError as e:
        return e.strerror or "cannot stat"
    return None if os.access(path, os.R_OK) else os.strerror(errno.EACCES)


def _systemd_syntax(bad: str, named: Mapping[str, str]) -> str | None:
    if named.get("domain") not in SYSTEMD_DOMAINS:
        return f"{bad}: domain= must be one of {', '.join(SYSTEMD_DOMAINS)}"
    if ("index" in named) == ("name" in named):
        return f"{bad}: give exactly one of index= and name="
    if "index" in named and not named["index"].isdigit():
        return f"{bad}: index= must be a number"
    return None


def _describe(error: Exception) -> str:
    """An exception as a line: an OSError names its file; no class-name noise otherwise."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _ca_files(config: Config) -> list[tuple[str, str]]:
    given = [("imap.ca_file", config.imap.ca_file if config.imap else None),
             ("smtp.ca_file", config.smtp.ca_file if config.smtp else None)]
    given += [(f"accounts.{a.name}.ca_file", a.ca_file) for a in config.accounts]
    given += [(f"accounts.{a.name}.oauth2.ca_file", a.oauth2.ca_file)
              for a in config.accounts if a.oauth2 is not None]
    return [(key, path) for key, path in given if path is not None]


def _account_problems(config: Config, environ: Mapping[str, str]) -> Iterator[str]:
    for account in config.accounts:
        key = f"accounts.{account.name}"
        source = account.password
        if source is not None:
            yield from _secret_problems(key, partial(_read_source, source, environ))
            if source.kind == "command" and source.command:
                yield from _program_problems(f"{key}.password_command", source.command[0],
                                             environ)
        oauth2 = account.oauth2
        if oauth2 is not None:
            yield from _secret_problems(f"{key}.oauth2",
                                        partial(read_refresh_token, oauth2.refresh_token_file))
            secret_file = oauth2.client_secret_file
            if secret_file is not None:
                yield from _secret_problems(f"{key}.oauth2",
                                            partial(read_client_secret, secret_file, environ))
        if account.on_new_mail:
            yield from _program_problems(f"{key}.on_new_mail", account.on_new_mail[0], environ)


def _read_source(source: PasswordSource, environ: Mapping[str, str]) -> None:
    if source.kind == "file" and source.file is not None:
        read_password_file(source.file, environ)
    elif source.kind == "env" and source.env is not None:
        read_password_env(source.env, environ)


def _secret_problems(key: str, read: Callable[[], object]) -> Iterator[str]:
    """A secret that cannot be read, as a line naming the key: ``password_file /x: ...`` under
    ``accounts.a`` becomes ``accounts.a.password_file: /x: ...``."""
    try:
        read()
    except SecretError as e:
        name, _, rest = str(e).partition(" ")
        yield f"{key}.{name}: {rest}"


def _program_problems(key: str, program: str, environ: Mapping[str, str]) -> Iterator[str]:
    """A program the daemon runs must exist and be executable (looked up in PATH when it has
    no slash, as it will be when run)."""
    if "/" in program:
        if not os.path.isfile(program):
            yield f"{key}: {program}: no such file"
        elif not os.access(program, os.X_OK):
            yield f"{key}: {program}: not executable"
    elif shutil.which(program, path=scrubbed_environment(environ)["PATH"]) is None:
        yield f"{key}: {program}: not found in PATH"
