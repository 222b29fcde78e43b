"""``mailsocketd-check`` against the REAL Dovecot (and, for the plain checks, Cyrus and Courier:
``imap_server``): output line and exit code of each case.

Run as a separate process (``python -m mailsocketd.check_command``, this checkout's code),
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
from checkrig import (
    DISTINCTIVE,
    DovecotLog,
    cleartext_lines,
    command_names,
    make_unrelated_ca,
)
from mailrig import account_toml, write_password

REPO = Path(__file__).resolve().parents[2]
PERF_TIME = r"\d+\.\d{3}"

pytestmark = pytest.mark.timeout(60)


def check(config, *args, timeout=30):
    """Run the check; return (exit code, the one output line, seconds it took)."""
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mailsocketd.check_command", "--config",
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
    bad = write_password(tmp_path, DISTINCTIVE, "bad")
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


def test_ok_and_a_missing_mailbox_on_each_imap_server(imap_server, tmp_path):
    """The check against Dovecot, Cyrus (LOGINDISABLED before STARTTLS) and Courier, over
    IMAPS and STARTTLS, in the server's namespace; a mailbox it lacks is CRITICAL."""
    box = imap_server.fresh_mailbox("alice")
    imap_server.populate("alice", 3, box)
    pw, ca = write_password(tmp_path), str(imap_server.ca_file)
    config = tmp_path / "mailsocketd.toml"
    config.write_text("".join(
        account_toml(name, server=server, user="alice", password_file=pw, ca_file=ca,
                     mailboxes=[box, *more])
        for name, server, more in [
            ("imaps", f"tls:127.0.0.1:{imap_server.imaps_port}", []),
            ("starttls", f"tcp:localhost:{imap_server.imap_port}", []),
            ("nobox", f"tcp:localhost:{imap_server.imap_port}",
             [imap_server.mailbox("DoesNotExist")])]))
    for name in ("imaps", "starttls"):
        code, line, _ = check(config, "--account", name)
        assert code == 0 and line.startswith(
            f"IMAP OK - {name} {box}: 3 messages, 3 unseen, "), line
    code, line, _ = check(config, "--account", "nobox")
    assert code == 2 and line.startswith("IMAP CRITICAL - nobox "), line
    assert imap_server.mailbox("DoesNotExist") in line, line


@pytest.mark.parametrize(("args", "code", "note", "perf"), [
    (["--warning-unseen", "10"], 1, "unseen 12 > 10", "unseen=12;10;;0"),
    (["--warning-unseen", "10", "--critical-unseen", "11"], 2, "unseen 12 > 11",
     "unseen=12;10;11;0"),
    (["--warning-unseen", "12"], 0, None, "unseen=12;12;;0"),
    # Monitoring Plugins ranges (issue 12 item 8), short options as check_imap has them
    (["-w", "20:"], 1, "unseen 12 < 20", "unseen=12;20:;;0"),
    (["-w", "~:5", "-c", "@10:15"], 2, "unseen 12 inside @10:15", "unseen=12;~:5;@10:15;0"),
    (["-c", "@0:11"], 0, None, "unseen=12;;@0:11;0"),
    (["-w", "5:30"], 0, None, "unseen=12;5:30;;0"),
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
    """A TCP forwarder to the real server that records what the client sent.

    On 127.0.0.2 (the default; not in the server certificate) it tests host name checks; on
    127.0.0.1 it only watches the wire.
    """

    def __init__(self, target_port, interface="127.0.0.2"):
        super().__init__(daemon=True)
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server((interface, 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.pipes: list[threading.Thread] = []
        self.accepted = 0
        self.client_bytes = bytearray()

    def close(self):
        for s in [self.listener, *self.sockets]:
            s.close()

    def sent_by_client(self, timeout=5.0):
        """Everything the client sent, once the connections have ended."""
        for pipe in list(self.pipes):
            pipe.join(timeout)
        return bytes(self.client_bytes)

    def run(self):
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.accepted += 1
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                for a, b, record in ((client, server, True), (server, client, False)):
                    pipe = threading.Thread(target=self.pipe, args=(a, b, record), daemon=True)
                    self.pipes.append(pipe)
                    pipe.start()

    def pipe(self, source, sink, record):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if record:
                    self.client_bytes += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def forwarding(target_port, interface="127.0.0.2"):
    forwarder = Forwarder(target_port, interface)
    forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.close()


def test_host_name_mismatch(mailserver, tmp_path):
    with forwarding(mailserver.imaps_port) as forwarder:
        path = tmp_path / "c.toml"
        path.write_text(account_toml("alias", server=f"tls:127.0.0.2:{forwarder.port}",
                                     user="alice", password_file=write_password(tmp_path),
                                     ca_file=str(mailserver.ca_file)))
        code, line, _ = check(path)
    assert code == 2
    assert line.startswith("IMAP CRITICAL - alias: TLS failure: the certificate does not "
                           "match the server name"), line


def test_bad_credentials(config):
    code, line, _ = check(config, "--account", "badpw")
    assert code == 2
    assert line.startswith("IMAP CRITICAL - badpw: login refused for user alice: "
                           "NO [AUTHENTICATIONFAILED]"), line
    assert DISTINCTIVE not in line and DISTINCTIVE[:12] not in line


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
    dovecot = DovecotLog(mailserver_notls.dovecot_log)
    with forwarding(mailserver_notls.imap_port, "127.0.0.1") as forwarder:
        path = tmp_path / "c.toml"
        path.write_text(account_toml(
            "plain", server=f"tcp:127.0.0.1:{forwarder.port}", user="alice",
            password_file=write_password(tmp_path, DISTINCTIVE, "canary")))
        code, line, _ = check(path)
        sent = forwarder.sent_by_client()
        assert forwarder.accepted == 1
    assert code == 2
    assert "refusing to send the password in clear" in line, line
    assert DISTINCTIVE not in line
    # On the wire: no LOGIN, no AUTHENTICATE, no password; at most a CAPABILITY, then LOGOUT.
    lines, rest = cleartext_lines(sent)
    assert rest == b"", sent
    assert set(command_names(lines)) <= {b"CAPABILITY", b"LOGOUT"}, lines
    assert b"LOGIN" not in sent.upper() and b"AUTHENTICATE" not in sent.upper()
    assert DISTINCTIVE.encode() not in sent and DISTINCTIVE[:12].encode() not in sent
    # And Dovecot saw no attempt to log in on that connection.
    logged = dovecot.wait_for("Disconnected")
    assert "no auth attempts" in logged, logged
    assert "auth failed" not in logged and "Login: user=" not in logged, logged


def test_the_wire_recorder_does_see_a_login_in_clear(mailserver_notls, tmp_path):
    """The control for the test above: through the same recorder, an account that allows
    cleartext logs in, and the recorder sees it do so."""
    with forwarding(mailserver_notls.imap_port, "127.0.0.1") as forwarder:
        path = tmp_path / "c.toml"
        path.write_text(account_toml(
            "plain", server=f"tcp:127.0.0.1:{forwarder.port}", user="alice",
            password_file=write_password(tmp_path), allow_cleartext=True))
        code, line, _ = check(path)
        sent = forwarder.sent_by_client()
    assert code == 0 and line.startswith("IMAP OK - plain INBOX: "), line
    assert b"AUTHENTICATE" in sent or b"LOGIN" in sent, sent


def test_starttls_with_a_certificate_of_another_ca_is_refused_before_any_login(
        mailserver, tmp_path):
    dovecot = DovecotLog(mailserver.dovecot_log)
    with forwarding(mailserver.imap_port, "127.0.0.1") as forwarder:
        path = tmp_path / "c.toml"
        path.write_text(account_toml(
            "otherca", server=f"tcp:127.0.0.1:{forwarder.port}", user="alice",
            password_file=write_password(tmp_path, DISTINCTIVE, "canary"),
            ca_file=make_unrelated_ca(tmp_path / "other-ca.pem")))
        code, line, _ = check(path)
        sent = forwarder.sent_by_client()
        assert forwarder.accepted == 1
    assert code == 2
    assert re.fullmatch(r"IMAP CRITICAL - otherca: TLS failure: certificate verify failed "
                        r"\(127\.0\.0\.1 port \d+\)", line), line
    # In clear the client asked only for capabilities and STARTTLS, then began a TLS handshake
    # that failed: there was never a channel for the password.
    lines, rest = cleartext_lines(sent)
    assert command_names(lines)[-1:] == [b"STARTTLS"], lines
    assert set(command_names(lines)) <= {b"CAPABILITY", b"STARTTLS"}, lines
    assert rest[:1] == bytes([0x16]), rest[:16]
    assert DISTINCTIVE.encode() not in sent
    logged = dovecot.wait_for("Disconnected")
    assert "no auth attempts" in logged and "TLS handshaking" in logged, logged
    assert "auth failed" not in logged and "Login: user=" not in logged, logged


def test_unknown_account_and_bad_config_are_unknown(config, tmp_path):
    code, line, _ = check(config, "--account", "nope")
    assert (code, line.split(" (configured")[0]) == (
        3, "IMAP UNKNOWN - accounts: no account named 'nope'")
    code, line, _ = check(config)  # the names are listed (issue 12 item 8)
    assert code == 3
    assert line == ("IMAP UNKNOWN - accounts: several accounts are configured (work, starttls, "
                    "systemca, badpw, refused, silent, nobox, nopw); choose one with --account")
    broken = tmp_path / "broken.toml"
    broken.write_text('[accounts.x]\nserver = "tls:h:993"\nuser = "u"\npassword_file = "/x"\n'
                      'password_env = "Y"\n')
    code, line, _ = check(broken)
    assert code == 3 and line.startswith("IMAP UNKNOWN - accounts.x.password_file: conflicts")


class RefusingServer(threading.Thread):
    """A fake IMAP server on loopback (no TLS) that refuses every login with a hostile reply."""

    REPLY = (b"NO [AUTHENTICATIONFAILED] denied | time=0s;;; 'x'=1 \x1b[2J\x07" + b"z" * 5000)

    def __init__(self):
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self):
        with contextlib.suppress(OSError), self.listener:
            conn, _ = self.listener.accept()
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile\r\n")
                tag = lines.readline().split(b" ")[0]  # AUTHENTICATE PLAIN
                conn.sendall(b"+ \r\n")
                lines.readline()  # the credentials
                conn.sendall(tag + b" " + self.REPLY + b"\r\n")
                lines.readline()


def test_a_hostile_refusal_cannot_break_the_plugin_line(tmp_path):
    server = RefusingServer()
    server.start()
    path = tmp_path / "c.toml"
    path.write_text(account_toml("hostile", server=f"tcp:127.0.0.1:{server.port}",
                                 user="alice", password_file=write_password(tmp_path),
                                 allow_cleartext=True))
    code, line, _ = check(path)
    server.join(10)
    assert code == 2
    assert line.startswith("IMAP CRITICAL - hostile: login refused for user alice: NO "
                           "[AUTHENTICATIONFAILED] denied / time=0s;;; 'x'=1 "), line
    assert "|" not in line and line.isprintable() and len(line) < 500, line
    assert line.endswith(f"... (127.0.0.1 port {server.port})"), line


def test_version_and_inverted_ranges(config):
    """Issue 12 item 8: -V/--version, and an inverted range is refused (UNKNOWN), by the
    installed console script."""
    script = str(Path(sys.executable).parent / "mailsocketd-check")
    for flag in ("-V", "--version"):
        r = subprocess.run([script, flag], capture_output=True, text=True, timeout=30,
                           check=False)
        assert (r.returncode, r.stderr) == (0, ""), r
        assert re.fullmatch(r"mailsocketd-check \d+\.\d+\.\d+\n", r.stdout), r.stdout
    for args, problem in ((["-w", "20:10"], "argument -w/--warning-unseen: inverted range"),
                          (["-c", "@9:1"], "argument -c/--critical-unseen: inverted range"),
                          (["-w", "ten"], "not a range: 'ten'")):
        code, line, _ = check(config, "--account", "work", *args)
        assert code == 3 and line.startswith("IMAP UNKNOWN - mailsocketd-check: "), line
        assert problem in line, line
