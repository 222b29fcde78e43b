"""Password sources: file permissions, systemd credentials, environment, command (no shell)."""
# ruff: noqa: S105 - a made-up password to look for in messages

from __future__ import annotations

import os
import sys
import time

import pytest
import pytest_twisted
from processrig import ended_within
from twisted.internet import reactor

from mailsocketd.mail.secrets import (
    MAX_SECRET_FILE,
    PasswordSource,
    Secret,
    SecretError,
    fetch_password,
    run_password_command,
)

SECRET = "s3cr3t-Pa55"


def password_file(tmp_path, content=SECRET + "\n", mode=0o600, name="work.pw"):
    path = tmp_path / name
    path.write_text(content)
    path.chmod(mode)
    return path


def fetched(source, environ=None):
    d = fetch_password(source, reactor, environ if environ is not None else {})
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "file and env sources answer at once"
    return results[0]


def error_text(result):
    assert not isinstance(result, Secret), "expected a failure"
    assert result.check(SecretError)
    text = str(result.value)
    assert SECRET not in text
    return text


def test_file_first_line_without_line_end(tmp_path):
    path = password_file(tmp_path, SECRET + "\r\nsecond line\n")
    secret = fetched(PasswordSource("file", file=str(path)))
    assert secret.reveal() == SECRET.encode()
    assert SECRET not in repr(secret) and SECRET not in str(secret)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o444])
def test_file_readable_by_others_is_refused(tmp_path, mode):
    path = password_file(tmp_path, mode=mode)
    text = error_text(fetched(PasswordSource("file", file=str(path))))
    assert text.startswith(f"password_file {path}: readable by group or others")
    assert f"mode {mode:04o}" in text and "chmod 600" in text


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_modes_are_accepted(tmp_path, mode):
    path = password_file(tmp_path, mode=mode)
    assert fetched(PasswordSource("file", file=str(path))).reveal() == SECRET.encode()


def test_file_problems(tmp_path):
    missing = tmp_path / "nope"
    assert "cannot open: No such file" in error_text(
        fetched(PasswordSource("file", file=str(missing))))
    assert "not a regular file" in error_text(
        fetched(PasswordSource("file", file=str(tmp_path))))
    empty = password_file(tmp_path, "\n", name="empty")
    assert "empty password" in error_text(fetched(PasswordSource("file", file=str(empty))))
    big = password_file(tmp_path, "x" * (MAX_SECRET_FILE + 1), name="big")
    assert "larger than" in error_text(fetched(PasswordSource("file", file=str(big))))
    ctl = password_file(tmp_path, "a\x00b\n", name="ctl")
    assert "control characters" in error_text(fetched(PasswordSource("file", file=str(ctl))))


def test_relative_file_is_a_systemd_credential(tmp_path):
    password_file(tmp_path, name="work")
    source = PasswordSource("file", file="work")
    secret = fetched(source, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert secret.reveal() == SECRET.encode()
    assert "CREDENTIALS_DIRECTORY" in error_text(fetched(source, {}))


def test_environment_variable():
    source = PasswordSource("env", env="WORK_PW")
    assert fetched(source, {"WORK_PW": SECRET}).reveal() == SECRET.encode()
    assert error_text(fetched(source, {})) == (
        "password_env WORK_PW: the variable is not set or empty")


@pytest_twisted.ensureDeferred
async def test_command_without_shell(tmp_path):
    # The argument would be expanded by a shell; run without one it is printed as is.
    source = PasswordSource("command", command=("printf", "%s\\n", "$HOME;" + SECRET))
    secret = await fetch_password(source, reactor, dict(os.environ))
    assert secret.reveal() == ("$HOME;" + SECRET).encode()


@pytest_twisted.ensureDeferred
async def test_command_failures_name_the_command_not_the_output():
    failing = PasswordSource("command", command=(sys.executable, "-c",
                                                 f"print({SECRET!r}); raise SystemExit(4)"))
    with pytest.raises(SecretError) as e:
        await fetch_password(failing, reactor, dict(os.environ))
    assert str(e.value) == f"password_command {sys.executable} exited with status 4"
    missing = PasswordSource("command", command=("/nonexistent/pass",))
    with pytest.raises(SecretError, match="cannot run /nonexistent/pass"):
        await fetch_password(missing, reactor, dict(os.environ))


@pytest_twisted.ensureDeferred
async def test_a_hanging_command_is_killed_and_named():
    # run_process itself (timeout, output cap, stdin) is tested in test_process.py
    with pytest.raises(SecretError) as e:
        await run_password_command(("sleep", "30"), reactor, dict(os.environ), timeout=0.2)
    assert str(e.value) == "password_command sleep timed out after 0.2 s and was killed"


@pytest_twisted.ensureDeferred
async def test_a_command_writing_too_much_gives_its_first_line_only():
    source = PasswordSource("command", command=(
        sys.executable, "-c", f"print({SECRET!r}); print('x' * 100000)"))
    secret = await fetch_password(source, reactor, dict(os.environ))
    assert secret.reveal() == SECRET.encode()


@pytest_twisted.ensureDeferred
async def test_a_command_that_leaves_a_child_holding_its_output_still_gives_the_password(
        tmp_path):
    """It printed the password and exited: that is the answer, at once, and the child (which
    would leak once per retry) is killed with the command's process group (issue 11, item 15)."""
    pid_file = tmp_path / "child"
    command = (sys.executable, "-c",
               "import subprocess, sys\n"
               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
               f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
               f"print({SECRET!r})")
    start = time.monotonic()
    secret = await run_password_command(command, reactor, dict(os.environ), timeout=5.0)
    assert secret.reveal() == SECRET.encode()
    assert time.monotonic() - start < 3  # not the 5 s timeout
    assert await ended_within(int(pid_file.read_text())), "the child outlived the command"
