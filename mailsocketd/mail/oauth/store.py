"""The refresh token and the client secret on disk: read with the password files' checks,
written atomically with mode 0600.

A refresh token is as good as a password: its file must be readable by its owner only
(``secrets.read_private_file`` refuses it otherwise, as it refuses such a password file), and a
new one (a rotated token, or the first one from enrolment) replaces the old one atomically: it
is written to a new 0600 file in the same directory, flushed to disk, and renamed over the old
one, so a crash leaves either the old token or the new one, never half of one, and the token is
never readable by others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from mailsocketd.mail.errors import SecretError
from mailsocketd.mail.oauth.messages import MAX_REFRESH_TOKEN
from mailsocketd.mail.secrets import Secret, read_private_file, resolve_password_file

__all__ = ["read_client_secret", "read_refresh_token", "write_refresh_token"]


def _first_line(data: bytes, what: str, thing: str) -> Secret:
    line = data.split(b"\n", 1)[0].removesuffix(b"\r").strip(b" \t")
    if not line:
        raise SecretError(f"{what}: empty (no {thing} in it)")
    if any(b <= 0x20 or b >= 0x7F for b in line):
        raise SecretError(f"{what}: the {thing} has characters other than printable ASCII")
    return Secret(line)


def read_refresh_token(path: str) -> Secret:
    """The refresh token: the first line of ``refresh_token_file`` (0600, as password files)."""
    what = f"refresh_token_file {path}"
    data = read_private_file(Path(path), what, MAX_REFRESH_TOKEN + 2)
    return _first_line(data, what, "refresh token")


def read_client_secret(path: str, environ: Mapping[str, str]) -> Secret:
    """The client secret: the first line of ``client_secret_file``; a relative path is in
    ``$CREDENTIALS_DIRECTORY``, as for ``password_file``."""
    what = f"client_secret_file {path}"
    full = resolve_password_file(path, environ, key="client_secret_file")
    return _first_line(read_private_file(full, what), what, "client secret")


def write_refresh_token(path: str, token: Secret) -> None:
    """Replace ``refresh_token_file`` with ``token`` atomically, mode 0600 (see the module
    docstring); SecretError naming the file (never the token) if that cannot be done."""
    what = f"refresh_token_file {path}"
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.new")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise SecretError(f"{what}: cannot write a new file beside it: {e.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            data = memoryview(token.reveal() + b"\n")
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise SecretError(f"{what}: cannot replace it: {e.strerror}") from None
    _sync_directory(target.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
