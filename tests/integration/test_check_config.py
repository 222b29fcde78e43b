"""Issue 12 items 1 and 2, against the installed ``twistd mailsocketd`` as real processes:
``--check-config`` validates what start-up validates and starts nothing; a bad option or value
is one line on stderr (no usage text), exit status 1, under ``-n`` and in daemon mode; a
start-up failure in daemon mode (busy port, unwritable log, missing TLS key) ends ``twistd``
within seconds with that line and leaves no pid file."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from daemon import TWISTD, free_port
from processrig import need_program

pytestmark = pytest.mark.timeout(90)

MODES = {"foreground": ["-n", "--pidfile="], "daemon": []}


def twistd(cwd, *args, mode="foreground", env=None, timeout=30):
    """Run twistd (``-n`` or daemonizing) with ``mailsocketd ARGS``; return the result and how
    long it took."""
    started = time.monotonic()
    result = subprocess.run([TWISTD, *MODES[mode], "mailsocketd", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return result, time.monotonic() - started


def listen(port=None):
    return ["--listen", f"tcp:{port or free_port()}:interface=127.0.0.1"]


def private(path, text="pw\n", mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", MODES)
def test_check_config_of_a_good_file_says_ok_and_starts_nothing(tmp_path, mode):
    port = free_port()
    hook = private(tmp_path / "hook.sh", "#!/bin/sh\n", 0o755)
    config = tmp_path / "m.toml"
    config.write_text(
        f'[line]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\nidle_timeout = 60\n'
        '[accounts.work]\nserver = "tls:imap.example.test"\nuser = "alice"\n'
        f'password_file = "{private(tmp_path / "work.pw")}"\non_new_mail = ["{hook}"]\n'
        '[accounts.home]\nserver = "tls:imap.example.test"\nuser = "bob"\n'
        'password_env = "HOME_PW"\n')
    result, took = twistd(tmp_path, "--config", str(config), "--check-config", mode=mode,
                          env={"HOME_PW": "x"})
    assert (result.returncode, result.stdout, result.stderr) == (0, "configuration OK\n", "")
    assert took < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hook.sh", "m.toml", "work.pw"]
    with socket.socket() as s:  # nothing listened, nothing runs on
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_check_config_names_every_problem_once_each(tmp_path):
    """Keys and types, endpoints (an ssl: key file), CA files, password sources' modes and
    presence, hook and sendmail paths: every problem of the file, one line each."""
    loose = private(tmp_path / "loose.pw", mode=0o644)
    not_executable = private(tmp_path / "hook.sh", "#!/bin/sh\n", 0o644)
    config = tmp_path / "m.toml"
    config.write_text(
        '[line]\nidle_timeout = -1\nmax_line_length = "long"\nbogus = 1\n'
        f'listen = ["tcp:x", "ssl:0:privateKey={tmp_path}/missing-key.pem"]\n'
        '[log]\nformat = "xml"\n'
        '[accounts.work]\nserver = "tls:imap.example.test"\nuser = "alice"\n'
        f'password_file = "{loose}"\non_new_mail = ["{not_executable}"]\n'
        f'ca_file = "{tmp_path}/missing-ca.pem"\n'
        '[accounts.home]\nserver = "tls:imap.example.test"\nuser = "bob"\n'
        'password_env = "MAILSOCKETD_TEST_UNSET"\n'
        '[accounts.cmd]\nserver = "tls:imap.example.test"\nuser = "carol"\n'
        'password_command = ["no-such-password-helper", "x"]\n'
        '[accounts.bad]\nserver = "imap.example.test"\nuser = "dave"\npassword_env = "X"\n'
        '[smtp]\nsendmail = "/nonexistent/sendmail"\nfrom_domain = "example.test"\n')
    result, _ = twistd(tmp_path, "--config", str(config), "--check-config")
    assert result.returncode == 1 and result.stdout == ""
    assert sorted(result.stderr.splitlines()) == sorted([
        "line.idle_timeout: expected a number >= 0, got int -1",
        "line.max_line_length: expected an integer >= 16 and <= 1048576, got str 'long'",
        "line.bogus: unknown key (see docs/configuration.md)",
        "log.format: expected one of 'text', 'json', got str 'xml'",
        "accounts.bad.server: expected tls:HOST:PORT or tcp:HOST:PORT, got 'imap.example.test'",
        "line.listen: bad endpoint 'tcp:x': invalid literal for int() with base 10: 'x'",
        f"line.listen: bad endpoint 'ssl:0:privateKey={tmp_path}/missing-key.pem': privateKey "
        f"{tmp_path}/missing-key.pem: cannot read: No such file or directory",
        f"accounts.work.ca_file: {tmp_path}/missing-ca.pem: cannot read: No such file or "
        "directory",
        f"accounts.work.password_file: {loose}: readable by group or others (mode 0644); "
        "refusing it: chmod 600 it (or 400)",
        f"accounts.work.on_new_mail: {not_executable}: not executable",
        "accounts.home.password_env: MAILSOCKETD_TEST_UNSET: the variable is not set or empty",
        "accounts.cmd.password_command: no-such-password-helper: not found in PATH",
        "smtp.sendmail: /nonexistent/sendmail: no such file",
    ])


def test_the_daemon_refuses_to_start_on_what_check_config_finds(tmp_path):
    """Start-up runs the same checks: the same lines, each after 'twistd mailsocketd: '."""
    config = tmp_path / "m.toml"
    config.write_text('[accounts.work]\nserver = "tls:imap.example.test"\nuser = "alice"\n'
                      f'password_file = "{private(tmp_path / "w.pw", mode=0o640)}"\n'
                      '[line]\nclose_grace = 99\n')
    checked, _ = twistd(tmp_path, "--config", str(config), "--check-config")
    started, _ = twistd(tmp_path, "--config", str(config), *listen())
    assert checked.returncode == started.returncode == 1
    assert len(checked.stderr.splitlines()) == 2
    assert started.stderr.splitlines() == [f"twistd mailsocketd: {line}"
                                           for line in checked.stderr.splitlines()]


def test_a_systemd_listener_is_checked_for_its_syntax_outside_systemd(tmp_path):
    """systemd passes its sockets only to the daemon it starts: a check by hand (or from
    ExecStartPre) accepts a well-formed systemd: listener, and still refuses a bad one."""
    config = tmp_path / "m.toml"
    config.write_text('[line]\nlisten = ["systemd:domain=INET:index=0"]\n')
    ok, _ = twistd(tmp_path, "--config", str(config), "--check-config")
    assert (ok.returncode, ok.stdout) == (0, "configuration OK\n"), ok.stderr
    config.write_text('[line]\nlisten = ["systemd:domain=IPX:index=0"]\n')
    bad, _ = twistd(tmp_path, "--config", str(config), "--check-config")
    assert bad.returncode == 1
    assert bad.stderr == ("line.listen: bad endpoint 'systemd:domain=IPX:index=0': domain= must "
                          "be one of INET, INET6, UNIX\n")
    started, _ = twistd(tmp_path, "--listen", "systemd:domain=INET:index=0")  # the start
    assert started.returncode == 1 and "no socket was passed by systemd" in started.stderr


def test_a_load_credential_file_with_its_acl_passes_the_check(tmp_path):
    """Issue 12 item 8: the file systemd's LoadCredential= provides (mode 0400, an ACL entry
    for the service user: 0440 to stat), found through $CREDENTIALS_DIRECTORY."""
    setfacl = need_program("setfacl")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    pw = private(credentials / "work.pw", mode=0o400)
    subprocess.run([setfacl, "-m", "u:nobody:r", str(pw)], check=True)
    assert oct(pw.stat().st_mode & 0o777) == "0o440"
    config = tmp_path / "m.toml"
    config.write_text('[accounts.work]\nserver = "tls:imap.example.test"\nuser = "alice"\n'
                      'password_file = "work.pw"\n')
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    result, _ = twistd(tmp_path, "--config", str(config), "--check-config", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "configuration OK\n", "")
    subprocess.run([setfacl, "-m", "g::r", str(pw)], check=True)  # now the group may read it
    result, _ = twistd(tmp_path, "--config", str(config), "--check-config", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("accounts.work.password_file: work.pw: readable by group")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("args", "line"), [
    (["--idle-timeout", "-5"], "line.idle_timeout: expected a number >= 0, got float -5.0"),
    (["--max-line-length", "ten"], "--max-line-length: not a number: 'ten'"),
    (["--bogus"], "option --bogus not recognized"),
    (["--log-format", "xml"], "log.format: expected one of 'text', 'json', got str 'xml'"),
    (["--config", "/nonexistent/m.toml"],
     "cannot read configuration file /nonexistent/m.toml: No such file or directory"),
    (["--listen", "ssl:0:privateKey=/nonexistent/key.pem"],
     "line.listen: bad endpoint 'ssl:0:privateKey=/nonexistent/key.pem': privateKey "
     "/nonexistent/key.pem: cannot read: No such file or directory"),
])
def test_a_bad_option_or_value_is_one_line_on_stderr(tmp_path, mode, args, line):
    """It was twistd's 38 lines of usage on stdout, then the problem; the unreadable key file
    was FileNotFoundError(2, 'No such file or directory'), without its name."""
    result, took = twistd(tmp_path, *args, mode=mode)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"twistd mailsocketd: {line}\n"
    assert took < 10
    assert not (tmp_path / "twistd.pid").exists() and not (tmp_path / "twistd.log").exists()


def daemon_mode_failure(tmp_path, *args, twistd_args=()):
    pidfile = tmp_path / "m.pid"
    started = time.monotonic()
    proc = subprocess.Popen([TWISTD, f"--pidfile={pidfile}", *twistd_args, "mailsocketd",
                             *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:  # the old behaviour: the parent waits forever
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"twistd did not return within 15 s; pid file left: {pidfile.exists()}")
    return proc.returncode, out, err, time.monotonic() - started, pidfile


def test_daemon_mode_with_a_busy_port_exits_at_once_with_one_line(tmp_path):
    """It used to hang, the daemonized child dead, with a stale pid file."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err, took, pidfile = daemon_mode_failure(tmp_path, *listen(port))
    assert (code, out) == (1, "")
    assert err == (f"twistd mailsocketd: line.listen: cannot listen on "
                   f"'tcp:{port}:interface=127.0.0.1': Couldn't listen on 127.0.0.1:{port}: "
                   "[Errno 98] Address already in use.\n")
    assert took < 10 and not pidfile.exists()


def test_daemon_mode_with_an_unwritable_log_exits_with_one_line(tmp_path):
    code, out, err, took, pidfile = daemon_mode_failure(
        tmp_path, *listen(), twistd_args=[f"--logfile={tmp_path}/no/such/dir/m.log"])
    assert (code, out) == (1, "")
    assert err == (f"twistd mailsocketd: --logfile {tmp_path}/no/such/dir/m.log: cannot open: "
                   "no such directory\n")
    assert took < 10 and not pidfile.exists()


def test_daemon_mode_with_a_missing_tls_key_exits_with_one_line(tmp_path):
    key = tmp_path / "gone.pem"
    code, out, err, took, pidfile = daemon_mode_failure(
        tmp_path, "--listen", f"ssl:{free_port()}:interface=127.0.0.1:privateKey={key}")
    assert (code, out) == (1, "")
    assert err.endswith(f": privateKey {key}: cannot read: No such file or directory\n")
    assert err.count("\n") == 1 and took < 10 and not pidfile.exists()


def test_daemon_mode_still_starts_and_its_pid_file_names_it(tmp_path):
    """The listeners now listen before twistd daemonizes: the daemon serves as before."""
    port = free_port()
    pidfile = tmp_path / "m.pid"
    result = subprocess.run([TWISTD, f"--pidfile={pidfile}", f"--logfile={tmp_path}/m.log",
                             "mailsocketd", *listen(port)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    pid = int(pidfile.read_text())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"quit\r\n")
            assert s.recv(100) == b"quit\r\n"
    finally:
        os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not pidfile.exists()

