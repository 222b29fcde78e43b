"""Password files that systemd's ``LoadCredential=`` provides (issue 12 item 8): mode 0400 plus
a POSIX ACL entry for the service user, set here with the real ``setfacl`` (Debian package
acl, installed by scripts/system-packages.sh; missing, the tests fail)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from processrig import need_program

from mailsocketd.mail.secrets import SecretError, read_password_file

SECRET = "s3cr3t-Pa55"  # noqa: S105  (a test password)


def acl_password_file(tmp_path: Path, entries: str) -> Path:
    """A 0400 password file with ``entries`` added to its ACL."""
    path = tmp_path / "work.pw"
    path.write_text(SECRET + "\n")
    path.chmod(0o400)
    subprocess.run([need_program("setfacl"), "-m", entries, str(path)], check=True,
                   capture_output=True)
    return path


def test_a_systemd_credential_with_an_acl_for_the_service_user_is_accepted(tmp_path):
    """stat shows 0440 (the group bits are the ACL's mask). It was refused as group-readable;
    a named user's entry is no wider than the owner's own right, so it is accepted now."""
    path = acl_password_file(tmp_path, "u:nobody:r")
    assert os.stat(path).st_mode & 0o777 == 0o440  # what the old check saw
    assert read_password_file(str(path), {}).reveal() == SECRET.encode()


@pytest.mark.parametrize("entry", ["g::r", "g:nogroup:r", "o::r"])
def test_an_acl_that_lets_a_group_or_others_read_is_refused(tmp_path, entry):
    path = acl_password_file(tmp_path, f"u:nobody:r,{entry}")
    with pytest.raises(SecretError) as refused:
        read_password_file(str(path), {})
    text = str(refused.value)
    assert SECRET not in text
    assert text.startswith(f"password_file {path}: readable by group or others")


def test_a_named_user_entry_beyond_a_mask_without_read_is_still_private(tmp_path):
    path = acl_password_file(tmp_path, "u:nobody:r,g:nogroup:r,m::---")  # no group read
    assert read_password_file(str(path), {}).reveal() == SECRET.encode()
