"""Refresh token and client secret files: the password files' checks, atomic 0600 writes."""


from __future__ import annotations

import os
import stat

import pytest

from mailsocketd.mail.errors import SecretError
from mailsocketd.mail.oauth.store import (
    read_client_secret,
    read_refresh_token,
    write_refresh_token,
)
from mailsocketd.mail.secrets import Secret


def test_write_is_0600_whatever_the_umask_and_replaces_the_file(tmp_path):
    path = tmp_path / "rt"
    path.write_text("old\n")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_refresh_token(str(path), Secret(b"rt-new"))
    finally:
        os.umask(old_umask)
    assert path.read_text() == "rt-new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["rt"]
    assert read_refresh_token(str(path)).reveal() == b"rt-new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "rt"
    path.mkdir()  # a directory cannot be replaced by a file
    with pytest.raises(SecretError) as info:
        write_refresh_token(str(path), Secret(b"rt-new"))
    assert str(info.value).startswith(f"refresh_token_file {path}: cannot replace it: ")
    assert "rt-new" not in str(info.value)
    assert os.listdir(tmp_path) == ["rt"]


def test_read_refuses_what_password_files_refuse(tmp_path):
    path = tmp_path / "rt"
    path.write_text("rt-1\n")
    path.chmod(0o604)
    with pytest.raises(SecretError, match=r"readable by group or others \(mode 0604\)"):
        read_refresh_token(str(path))
    path.chmod(0o600)
    for content, problem in [("\n", "empty"), ("rt 1\n", "other than printable ASCII"),
                             ("x" * 20000, "larger than")]:
        path.write_text(content)
        with pytest.raises(SecretError, match=problem):
            read_refresh_token(str(path))
    with pytest.raises(SecretError, match="cannot open: No such file"):
        read_refresh_token(str(tmp_path / "none"))


def test_a_relative_client_secret_file_is_a_systemd_credential(tmp_path):
    (tmp_path / "cs").write_text("secret-1\r\n")
    (tmp_path / "cs").chmod(0o400)
    secret = read_client_secret("cs", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert secret.reveal() == b"secret-1"
    with pytest.raises(SecretError, match=r"^client_secret_file cs: a relative path is looked "
                                          r"up in \$CREDENTIALS_DIRECTORY"):
        read_client_secret("cs", {})
