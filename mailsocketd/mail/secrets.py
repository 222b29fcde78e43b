"""Fetching an account's password: from a file, a command or an environment variable.

The password is fetched when a connection is about to log in, so a rotated password (or a
systemd credential that appears later) is picked up without a restart.  It travels as a
``Secret``, whose repr never shows it, and no error message here ever contains it: errors name
the source (``password_file /etc/x``), never the content.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from mailsocketd.mail.errors import SecretError
from mailsocketd.mail.process import (
    ProcessReactor,
    ProcessResult,
    ProcessStartError,
    run_process,
)

__all__ = ["MAX_SECRET_FILE", "PasswordSource", "Secret", "SecretError", "fetch_password",
           "read_private_file", "resolve_password_file"]

MAX_SECRET_FILE = 4096
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class PasswordSource:
    """Where the password comes from: exactly one of a file, a command or a variable.

    This holds a path, an argv or a variable *name*, never the secret itself.
    """

    kind: str  # "file" | "command" | "env"
    file: str | None = None
    command: tuple[str, ...] = ()
    env: str | None = None

    def describe(self) -> str:
        """A short, secret-free description for messages (``password_file /x``)."""
        if self.kind == "file":
            return f"password_file {self.file}"
        if self.kind == "command":
            return f"password_command {self.command[0]}"
        return f"password_env {self.env}"


class Secret:
    """A password in transit: bytes that refuse to show themselves in logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "<Secret hidden>"

    __str__ = __repr__


def _first_line(data: bytes, what: str) -> Secret:
    """The password is the first line (``pass`` convention); the line end is not part of it."""
    line = data.split(b"\n", 1)[0]
    line = line.removesuffix(b"\r")
    if not line:
        raise SecretError(f"{what} gave an empty password")
    if any(b < 0x20 or b == 0x7F for b in line):
        raise SecretError(f"{what} gave a password with control characters")
    return Secret(line)


def resolve_password_file(path: str, environ: Mapping[str, str],
                          key: str = "password_file") -> Path:
    """Absolute paths as given; relative ones inside systemd's ``$CREDENTIALS_DIRECTORY``
    (``key`` names the setting in the error)."""
    if os.path.isabs(path):
        return Path(path)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if not credentials:
        raise SecretError(f"{key} {path}: a relative path is looked up in "
                          "$CREDENTIALS_DIRECTORY (systemd LoadCredential=), which is not set")
    return Path(credentials) / path


# POSIX ACLs (acl(5)) as Linux stores them in the system.posix_acl_access attribute: a version,
# then (tag, permissions, id) entries.
ACL_XATTR = "system.posix_acl_access"
ACL_VERSION = 2
ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK = 0x04, 0x08, 0x10
ACL_READ = 4


def _group_may_read(fd: int, mode: int) -> bool:
    """Whether a group may read the file.  Without an ACL that is the mode's group bit; with
    one, the mode's group bits are the ACL's mask (so systemd's ``LoadCredential=`` file, mode
    0400 plus a read entry for the service user, shows as 0440) and what counts is whether the
    owning group or a named group is granted read through the mask.  Named users may read:
    an ACL entry for one user is no wider than the owner's own right."""
    try:
        acl = os.getxattr(fd, ACL_XATTR)
    except OSError:  # no ACL (ENODATA), or a file system without them
        return bool(mode & stat.S_IRGRP)
    if len(acl) < 4 or struct.unpack_from("<I", acl)[0] != ACL_VERSION or len(acl) % 8 != 4:
        return True  # an ACL we cannot read: assume the worst
    entries = [struct.unpack_from("<HHI", acl, offset) for offset in range(4, len(acl), 8)]
    mask = next((perm for tag, perm, _ in entries if tag == ACL_MASK), ACL_READ)
    return any(tag in (ACL_GROUP_OBJ, ACL_GROUP) and perm & mask & ACL_READ
               for tag, perm, _ in entries)


def read_private_file(full: Path, what: str, limit: int = MAX_SECRET_FILE) -> bytes:
    """The content of a file holding a secret (a password, a refresh token), refusing one that
    other users may read (a named user of an ACL, as systemd's ``LoadCredential=`` adds for the
    service user, is allowed), or that is not a regular file or is larger than ``limit`` bytes;
    ``what`` (``password_file /x``) starts each error."""
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise SecretError(f"{what}: cannot open: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{what}: not a regular file")
        if info.st_mode & stat.S_IROTH or _group_may_read(fd, info.st_mode):
            raise SecretError(f"{what}: readable by group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}); "
                              "refusing it: chmod 600 it (or 400)")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SecretError(f"{what}: larger than {limit} bytes; not a secret file")
    return data


def read_password_file(path: str, environ: Mapping[str, str]) -> Secret:
    """Read a password file, refusing one that other users may read."""
    what = f"password_file {path}"
    data = read_private_file(resolve_password_file(path, environ), what)
    return _first_line(data, what)


def read_password_env(name: str, environ: Mapping[str, str]) -> Secret:
    value = environ.get(name, "")
    if not value:
        raise SecretError(f"password_env {name}: the variable is not set or empty")
    return _first_line(value.encode("utf-8", "surrogateescape"), f"password_env {name}")


def run_password_command(argv: tuple[str, ...], reactor: ProcessReactor,
                         environ: Mapping[str, str],
                         timeout: float = COMMAND_TIMEOUT) -> Deferred[Secret]:
    """Run the command (no shell); its first line of output is the password."""
    what = f"password_command {argv[0]}"

    def done(result: ProcessResult) -> Secret:
        if not result.ok:
            raise SecretError(f"{what} {result.describe()}")
        return _first_line(result.stdout, what)

    def not_started(failure: Failure) -> Secret:
        if not isinstance(failure.value, ProcessStartError):
            failure.raiseException()
        raise SecretError(f"password_command: {failure.value}")

    d = run_process(reactor, argv, environ, timeout, max_output=MAX_SECRET_FILE)
    return d.addCallbacks(done, not_started)


def fetch_password(source: PasswordSource, reactor: ProcessReactor,
                   environ: Mapping[str, str] | None = None) -> Deferred[Secret]:
    """Fetch the password from ``source``; fails with SecretError, never showing the secret."""
    env = os.environ if environ is None else environ
    try:
        if source.kind == "file" and source.file is not None:
            return succeed(read_password_file(source.file, env))
        if source.kind == "env" and source.env is not None:
            return succeed(read_password_env(source.env, env))
    except SecretError as e:
        return fail(e)
    if source.kind == "command" and source.command:
        return run_password_command(source.command, reactor, env)
    return fail(SecretError(f"unusable password source {source.kind!r}"))
