"""``mailsocketd-check`` against the REAL Dovecot: output line and exit code of each case.

Run as a separate process (``python -m mailsocketd.mail.check_command``, this checkout's code),
as Nagios or Icinga would run the console script.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mailrig import account_toml, write_password

REPO = Path(__file__).resolve().parents[2]
PERF_TIME = r"\d+\.\d{3}"

pytestmark = pytest.mark.timeout(60)


def check(config, *args, timeout=30):
    """Run the check; return (exit code, the one output line, seconds it took)."""
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mailsocketd.mail.check_command", "--config",
                        str(config), *args], capture_output=True, text=True, timeout=timeout,
                       cwd=REPO, stdin=subprocess.DEVNULL, check=False)
    lines = r.stdout.splitlines()
    assert len(lines) == 1, (r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    return r.returncode, lines[0], time.monotonic() - started


@pytest.fixture(scope="module")
def box(mailserver):
    name = "C" + uuid.uuid4().hex[:10]
    mailserver.populate("alice", 12, name)
    return name


@pytest.fixture
def config(mailserver, tmp_path, box):
    """Accounts for every case, in one file as a sysadmin would have it."""
    pw = write_password(tmp_path)
    bad = write_password(tmp_path, "not-the-password", "bad")
    refused = socket.socket()  # bound, never listening: connections are refused
    refused.bind(("127.0.0.1", 0))
    silent = socket.socket()  # listening, never accepting or speaking
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    ca = str(mailserver.ca_file)
    imaps, imap = mailserver.imaps_port, mailserver.imap_port
    text = "".join([
        account_toml("work", server=f"tls:127.0.0.1:{imaps}", user="alice", password_file=pw,
                     ca_file=ca, mailboxes=[box]),
        account_toml("starttls", server=f"tcp:localhost:{imap}", user="alice",
                     password_file=pw, ca_file=ca, mailboxes=[box]),
        account_toml("systemca", server=f"tls:127.0.0.1:{imaps}", user="alice",
                     password_file=pw, mailboxes=[box]),
        account_toml("badpw", server=f"tls:127.0.0.1:{imaps}", user="alice",
                     password_file=bad, ca_file=ca),
        account_toml("refused", server=f"tcp:127.0.0.1:{refused.getsockname()[1]}",
                     user="alice", password_file=pw),
        account_toml("silent", server=f"tcp:127.0.0.1:{silent.getsockname()[1]}",
                     user="alice", password_file=pw),
        account_toml("nobox", server=f"tls:127.0.0.1:{imaps}", user="alice",
                     password_file=pw, ca_file=ca, mailboxes=["INBOX", "DoesNotExist"]),
        account_toml("nopw", server=f"tls:127.0.0.1:{imaps}", user="alice",
                     password_env="MAILSOCKETD_TEST_UNSET_PASSWORD", ca_file=ca),  # noqa: S106
    ])
    path = tmp_path / "mailsocketd.toml"
    path.write_text(text)
    yield path
    refused.close()
    silent.close()


def test_ok(config, box):
    code, line, _ = check(config, "--account", "work")
    assert code == 0
    assert re.fullmatch(rf"IMAP OK - work {box}: 12 messages, 12 unseen, {PERF_TIME} s "
                        rf"\| time={PERF_TIME}s messages=12 unseen=12", line), line


def test_ok_over_starttls_by_host_name(config, box):
    code, line, _ = check(config, "--account", "starttls")
    assert code == 0 and line.startswith(f"IMAP OK - starttls {box}: 12 messages"), line


@pytest.mark.parametrize(("args", "code", "note", "perf"), [
    (["--warning-unseen", "10"], 1, "unseen 12 > 10", "unseen=12;10;;0"),
    (["--warning-unseen", "10", "--critical-unseen", "11"], 2, "unseen 12 > 11",
     "unseen=12;10;11;0"),
    (["--warning-unseen", "12"], 0, None, "unseen=12;12;;0"),
    (["--critical-time", "0"], 2, "> 0 s", ";;0;0"),
    (["--warning-time", "30"], 0, None, ";30;;0"),
    (["--cert-days", "10000"], 1, "certificate expires in ", None),
    (["--cert-days", "30"], 0, None, None),
])
def test_thresholds(config, box, args, code, note, perf):
    got, line, _ = check(config, "--account", "work", *args)
    assert got == code, line
    assert line.startswith(f"IMAP {['OK', 'WARNING', 'CRITICAL'][code]} - work {box}: "), line
    if note:
        assert note in line.split(" | ")[0], line
    if perf:
        assert perf in line.split(" | ")[1], line


def test_connection_refused(config):
    code, line, _ = check(config, "--account", "refused")
    assert code == 2
    assert re.fullmatch(r"IMAP CRITICAL - refused: connection refused "
                        r"\(127\.0\.0\.1 port \d+\)", line), line


def test_tls_failure(config):
    code, line, _ = check(config, "--account", "systemca")
    assert code == 2
    assert line.startswith("IMAP CRITICAL - systemca: TLS failure: certificate verify failed"), line


class Forwarder(threading.Thread):
    """A TCP forwarder on 127.0.0.2 (not in the server certificate) to the real server."""

    def __init__(self, target_port):
        super().__init__(daemon=True)
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.2", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []

    def close(self):
        for s in [self.listener, *self.sockets]:
            s.close()

    def run(self):
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_host_name_mismatch(mailserver, tmp_path):
    forwarder = Forwarder(mailserver.imaps_port)
    forwarder.start()
    try:
        path = tmp_path / "c.toml"
        path.write_text(account_toml("alias", server=f"tls:127.0.0.2:{forwarder.port}",
                                     user="alice", password_file=write_password(tmp_path),
                                     ca_file=str(mailserver.ca_file)))
        code, line, _ = check(path)
    finally:
        forwarder.close()
    assert code == 2
    assert line.startswith("IMAP CRITICAL - alias: TLS failure: the certificate does not "
                           "match the server name"), line


def test_bad_credentials(config):
    code, line, _ = check(config, "--account", "badpw")
    assert code == 2
    assert line.startswith("IMAP CRITICAL - badpw: login refused for user alice: "
                           "NO [AUTHENTICATIONFAILED]"), line
    assert "not-the-password" not in line


def test_timeout_on_a_server_that_never_speaks(config):
    code, line, took = check(config, "--account", "silent", "--timeout", "2")
    assert code == 2
    assert line.startswith("IMAP CRITICAL - silent: timed out after 2 s waiting for the "
                           "server greeting"), line
    assert took < 10


def test_missing_mailbox_is_critical(config):
    code, line, _ = check(config, "--account", "nobox")
    assert code == 2
    assert "DoesNotExist: STATUS refused: NO" in line, line


def test_unreadable_password_is_unknown(config):
    code, line, _ = check(config, "--account", "nopw")
    assert code == 3
    assert line.startswith("IMAP UNKNOWN - nopw: password_env MAILSOCKETD_TEST_UNSET_PASSWORD"
                           ": the variable is not set or empty"), line


def test_no_starttls_is_critical_and_sends_no_password(mailserver_notls, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(account_toml("plain", server=f"tcp:127.0.0.1:{mailserver_notls.imap_port}",
                                 user="alice", password_file=write_password(tmp_path)))
    code, line, _ = check(path)
    assert code == 2
    assert "refusing to send the password in clear" in line, line


def test_unknown_account_and_bad_config_are_unknown(config, tmp_path):
    code, line, _ = check(config, "--account", "nope")
    assert (code, line.split(" (configured")[0]) == (
        3, "IMAP UNKNOWN - accounts: no account named 'nope'")
    code, line, _ = check(config)
    assert (code, line) == (
        3, "IMAP UNKNOWN - accounts: several accounts are configured; choose one with --account")
    broken = tmp_path / "broken.toml"
    broken.write_text('[accounts.x]\nserver = "tls:h:993"\nuser = "u"\npassword_file = "/x"\n'
                      'password_env = "Y"\n')
    code, line, _ = check(broken)
    assert code == 3 and line.startswith("IMAP UNKNOWN - accounts.x.password_file: conflicts")
