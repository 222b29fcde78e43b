"""The real ``twistd -n mailsocketd``, installed in the venv, over real loopback sockets."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from daemon import (
    TWISTD,
    free_port,
    read_line,
    read_until_close,
    running_daemon,
    start_daemon,
    twistd_command,
    wait_for_port,
)
from processrig import need_program

DATE = rb"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"
TIME_LINE = re.compile(DATE + rb"\r\n")


@pytest.fixture
def daemon(tmp_path):
    with running_daemon(tmp_path) as d:
        yield d


def test_twistd_lists_and_documents_the_plugin(tmp_path):
    listing = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, check=True,
                             cwd=tmp_path).stdout
    assert re.search(r"^\s+mailsocketd\s+A line service", listing, re.M)
    help_text = subprocess.run([TWISTD, "mailsocketd", "--help"], capture_output=True,
                               text=True, check=True, cwd=tmp_path).stdout
    for option in ("--listen", "--daytime", "--config", "--banner", "--max-line-length",
                   "--idle-timeout", "--max-connections", "--max-per-peer",
                   "--bare-command-wait", "--log-format", "--no-log-commands"):
        assert option in help_text


def test_netcat_time_and_quit(daemon):
    nc = need_program("nc")
    out = subprocess.run(f"printf 'time\\r\\nquit\\r\\n' | {nc} 127.0.0.1 {daemon.port}",
                         shell=True, capture_output=True, timeout=15, check=True).stdout
    assert re.fullmatch(DATE + rb"\r\nquit\r\n", out), out


def test_telnet_time_and_quit(daemon):
    telnet = need_program("telnet")
    # telnet turns each typed line ending into CRLF, as when a person presses Enter.
    script = f"(printf 'time\\n'; sleep 0.5; printf 'quit\\n'; sleep 1) | {telnet} 127.0.0.1 {daemon.port}"
    out = subprocess.run(script, shell=True, capture_output=True, timeout=15).stdout
    assert re.search(DATE + rb"\r?\nquit\r?\n", out), out  # telnet shows CRLF as LF


def test_old_client_bare_time_then_quit_without_line_endings(daemon):
    with daemon.connect() as s:
        started = time.monotonic()
        s.sendall(b"time")
        reply = s.recv(4096)
        elapsed = time.monotonic() - started
        assert TIME_LINE.fullmatch(reply), reply
        assert elapsed < 1.0
        s.sendall(b"quit")
        reply = s.recv(4096)
        assert reply.startswith(b"quit")
        assert s.recv(4096) == b""


def test_help_status_and_errors(daemon):
    out = daemon.exchange(b"help\r\nstatus\r\nbogus\r\ntime now\r\nquit\r\n")
    text = out.decode()
    assert text.startswith("ok 4 commands\r\ntime ")  # no [imap]: no mail commands listed
    assert "\r\nstatus          version, uptime, connections, mail\r\n" in text
    assert "\r\n.\r\nok status\r\nversion: mailsocketd " in text
    assert re.search(r"connections: \d+ open, \d+ total, 0 refused", text)
    assert "error: unknown command 'bogus'; try 'help'\r\nerror: usage: time\r\nquit\r\n" in text


def test_help_of_one_command(daemon):
    out = daemon.exchange(b"help TIME\r\nhelp nosuch\r\nhelp time now\r\nquit\r\n").decode()
    assert out == ("ok time\r\nthe local date and time, as YYYY/MM/DD HH:MM:SS\r\n.\r\n"
                   "error: unknown command 'nosuch'; try 'help'\r\n"
                   "error: usage: help [COMMAND]\r\nquit\r\n")


def test_two_thousand_concurrent_clients(tmp_path):
    n = 2000
    with running_daemon(tmp_path, extra_args=["--max-per-peer", "5000"]) as d:
        clients = []
        try:
            for _ in range(n):
                clients.append(d.connect())
            for s in clients:
                s.sendall(b"time\r\n")
            good = sum(1 for s in clients if TIME_LINE.fullmatch(read_line(s) + b"\r\n"))
            assert good == n
            status = d.exchange(b"status\r\nquit\r\n").decode()
            assert f"connections: {n + 1} open" in status
        finally:
            for s in clients:
                s.close()


@pytest.mark.parametrize("payload", [
    b"x" * (1 << 20),                       # a 1 MB line
    bytes(range(256)) * 64,                 # binary garbage
    b"\x00" * 5000 + b"\r\n",               # NUL bytes
    b"\xc3\x28\xa0\xa1\xe2\x28\xa1\r\n" * 10,  # invalid UTF-8
    b"time\r\n" * 1000,                     # 1,000 pipelined commands in one packet
])
def test_bad_input_leaves_the_daemon_serving(daemon, payload):
    with daemon.connect() as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = read_until_close(s)
    if payload.startswith(b"time"):
        assert out.count(b"\r\n") == 1000 and len(set(out.split(b"\r\n")[:-1])) == 1
    elif b"\n" not in payload:
        assert out == b"error: line too long\r\n"
    else:
        lines = out.split(b"\r\n")
        assert lines[-1] == b"" and all(line.startswith(b"error: ") for line in lines[:-1])
    assert TIME_LINE.fullmatch(daemon.ask(b"time") + b"\r\n")
    assert daemon.alive()
    if b"\n" not in payload:
        daemon.wait_log("exceeds the limit of 4096; closing")


def test_half_a_line_and_silence_hits_the_idle_timeout(tmp_path):
    with running_daemon(tmp_path, extra_args=["--idle-timeout", "1"]) as d, d.connect() as s:
        s.sendall(b"tim")
        started = time.monotonic()
        out = read_until_close(s)
        assert out == b"error: idle timeout (1 s), closing\r\n"
        assert 0.8 < time.monotonic() - started < 5
        assert TIME_LINE.fullmatch(d.ask(b"time") + b"\r\n")
        d.wait_log(r"127\.0\.0\.1:\d+: idle for 1 s; closing")


def test_client_that_never_reads_does_not_grow_the_daemon(tmp_path):
    cap = 40 << 20  # what we are prepared to send; the replies to it would be ~2 GB
    with running_daemon(tmp_path) as d, d.connect() as s:
        s.settimeout(0.5)
        sent = 0
        request = b"help\r\n" * 1000
        deadline = time.monotonic() + 20
        blocked = False
        while sent < cap and time.monotonic() < deadline:
            try:
                sent += s.send(request)
            except TimeoutError:
                blocked = True  # the daemon stopped reading from us: back-pressure
                break
        assert blocked, f"sent {sent} bytes without being blocked"
        with open(f"/proc/{d.proc.pid}/status") as f:
            vmrss = re.search(r"VmRSS:\s+(\d+)", f.read())
        assert vmrss is not None
        rss_kb = int(vmrss[1])
        assert sent < cap, "the daemon kept reading although we never read its replies"
        assert rss_kb < 100_000, rss_kb
        assert TIME_LINE.fullmatch(d.ask(b"time") + b"\r\n")


def test_connection_limits(tmp_path):
    sock_path = tmp_path / "l.sock"
    args = ["--max-connections", "3", "--max-per-peer", "2", "--listen", f"unix:{sock_path}"]

    def unix():
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(sock_path))
        return s

    with running_daemon(tmp_path, extra_args=args) as d:
        d.wait_until_alone()
        a, b = d.connect(), d.connect()
        with d.connect() as refused:
            assert read_until_close(refused) == b"error: too many connections from your address\r\n"
        c = unix()  # another peer: admitted, total now 3
        c.sendall(b"time\r\n")
        assert TIME_LINE.fullmatch(read_line(c) + b"\r\n")
        with unix() as refused:
            assert read_until_close(refused) == b"error: too many connections, try again later\r\n"
        for s in (a, b, c):
            s.close()
        time.sleep(0.3)
        assert TIME_LINE.fullmatch(d.ask(b"time") + b"\r\n")
        log = d.wait_log("connection from unix refused")
        assert "connection from 127.0.0.1 refused: too many connections from your address" in log
        assert "connection from unix refused: too many connections, try again later" in log


def test_sigterm_tells_clients_and_exits_by_the_signal(tmp_path):
    d = start_daemon(tmp_path)
    with d.connect() as s:
        s.sendall(b"time\r\n")
        read_line(s)
        d.proc.send_signal(signal.SIGTERM)
        assert read_until_close(s) == b"error: server shutting down\r\n"
    assert d.proc.wait(15) == -signal.SIGTERM
    assert "Server Shut Down." in d.log()


def test_logs_connections_and_commands_and_json_lines(tmp_path):
    with running_daemon(tmp_path, extra_args=["--log-format", "json", "--log-commands"]) as d:
        d.exchange(b"time\r\nnope\r\nquit\r\n")
        time.sleep(0.3)
    events = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    kinds = [e.get("event") for e in events]
    assert {"connection_opened", "command", "connection_closed"} <= set(kinds)
    commands = [(e["command"], e["outcome"]) for e in events if e.get("event") == "command"]
    assert commands == [("time", "ok"), ("nope", "error: unknown command 'nope'; try 'help'"),
                        ("quit", "ok")]
    opened = next(e for e in events if e.get("event") == "connection_opened")
    assert opened["peer"].startswith("127.0.0.1:")


def test_logfile_and_pidfile(tmp_path):
    port = free_port()
    logfile, pidfile = tmp_path / "m.log", tmp_path / "m.pid"
    cmd = [TWISTD, "-n", f"--logfile={logfile}", f"--pidfile={pidfile}", "mailsocketd",
           "--listen", f"tcp:{port}:interface=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc, 30)
        assert int(pidfile.read_text()) == proc.pid
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"quit\r\n")
            read_until_close(s)
        time.sleep(0.3)
        assert re.search(r"connection closed: 127\.0\.0\.1:\d+ after [0-9.]+ s, 1 commands",
                         logfile.read_text())
    finally:
        proc.terminate()
        proc.wait(15)
    assert not pidfile.exists()


def test_daytime_listener(tmp_path):
    port = free_port()
    with running_daemon(tmp_path, extra_args=["--daytime", f"tcp:{port}:interface=127.0.0.1"]), \
            socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert TIME_LINE.fullmatch(read_until_close(s))


def test_ipv6_and_unix_listeners(tmp_path):
    port6 = free_port("::1", socket.AF_INET6)
    sock_path = tmp_path / "line.sock"
    with running_daemon(tmp_path, extra_args=["--listen", f"tcp6:{port6}:interface=\\:\\:1",
                                              "--listen", f"unix:{sock_path}:mode=600"]):
        with socket.create_connection(("::1", port6), timeout=5) as s:
            s.sendall(b"time\r\n")
            assert TIME_LINE.fullmatch(read_line(s) + b"\r\n")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock_path))
            s.sendall(b"time\r\nquit\r\n")
            assert re.fullmatch(DATE + rb"\r\nquit\r\n", read_until_close(s))


def test_tls_listener(tmp_path):
    import ssl

    openssl = need_program("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    context = ssl.create_default_context(cafile=str(cert))

    def tls_exchange(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost",
                                    suppress_ragged_eofs=False) as s:
            s.sendall(data)
            return read_until_close(s)  # a close without TLS close_notify would raise here

    with running_daemon(tmp_path, listen=f"ssl:{port}:interface=127.0.0.1:"
                                         f"privateKey={key}:certKey={cert}", port=port,
                        extra_args=["--idle-timeout", "1"]) as d:
        assert re.fullmatch(DATE + rb"\r\nquit\r\n", tls_exchange(b"time\r\nquit\r\n"))
        assert tls_exchange(b"quit") == b"quit\r\n"  # bare, as old clients send it
        assert tls_exchange(b"tim") == b"error: idle timeout (1 s), closing\r\n"
        time.sleep(0.3)
        assert "Unhandled Error" not in d.log() and "Traceback" not in d.log()


def test_systemd_socket_activation(tmp_path):
    reply = b""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # What systemd does: the socket as fd 3, LISTEN_PID naming the process that execs twistd.
    launcher = (
        "import os, sys\n"
        f"fd = {fd}\n"
        "if fd != 3:\n    os.dup2(fd, 3)\n    os.close(fd)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='line')\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    cmd = [sys.executable, "-c", launcher,
           *twistd_command(["--listen", "systemd:domain=INET:index=0"])]
    proc = subprocess.Popen(cmd, pass_fds=(fd,), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    listener.close()  # only the daemon holds the socket now
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"time\r\nquit\r\n")
            with contextlib.suppress(ConnectionResetError):  # judged below, with the log
                reply = read_until_close(s)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
    assert re.fullmatch(DATE + rb"\r\nquit\r\n", reply), out
    assert proc.returncode == -signal.SIGTERM, out


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "tcp:notaport"], "line.listen: bad endpoint 'tcp:notaport'"),
    (["--idle-timeout", "-5"], "line.idle_timeout: expected a number >= 0"),
    (["--config", "/nonexistent/m.toml"], "cannot read configuration file /nonexistent/m.toml"),
    (["--daytime", "tcp:99999"], "line.daytime: cannot listen on 'tcp:99999'"),
    (["--listen", "unix:/nonexistent/dir/s.sock"], "line.listen: cannot listen on 'unix:/nonexi"),
    (["--listen", "ssl:0:privateKey=/nonexistent/key.pem"], "line.listen: bad endpoint 'ssl:0:"),
])
def test_bad_options_stop_twistd_with_a_message(tmp_path, args, message):
    result = subprocess.run(twistd_command(args), capture_output=True, text=True, timeout=30,
                            cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_port_in_use_stops_twistd(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            twistd_command(["--listen", f"tcp:{port}:interface=127.0.0.1"]),
            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode != 0
    assert "Address already in use" in result.stdout + result.stderr


def test_open_file_limit_is_raised(tmp_path):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    port = free_port()

    low = [need_program("prlimit"), f"--nofile=256:{hard}"]  # start with a low soft limit
    proc = subprocess.Popen([*low, *twistd_command(["--listen", f"tcp:{port}:interface=127.0.0.1"])],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, proc, 30)
        with open(f"/proc/{proc.pid}/limits") as f:
            limits = re.search(r"Max open files\s+(\S+)", f.read())
        assert limits is not None
        soft = limits[1]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0].decode()
    assert int(soft) == hard > 256
    assert f"open-file limit raised from 256 to {hard}" in out


@pytest.mark.parametrize(("table", "key"), [
    ("[imap]\nserver = 'tls:127.0.0.1:993'\n", "imap.ca_file"),
    ("[smtp]\nserver = 'tls:127.0.0.1:465'\n", "smtp.ca_file"),
])
def test_a_ca_file_that_cannot_be_used_stops_twistd(tmp_path, table, key):
    """Issue 11 item 16: a missing or empty ca_file started silently, and a user's login
    showed its path.  Now twistd stops at start-up with a line naming the key."""
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    for path, problem in ((tmp_path / "missing.pem", "cannot read: No such file or directory"),
                          (empty, "no certificate in it")):
        config = tmp_path / "m.toml"
        config.write_text(f"{table}ca_file = '{path}'\n")
        result = subprocess.run(
            twistd_command(["--config", str(config), "--listen",
                            f"tcp:{free_port()}:interface=127.0.0.1"]),
            capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert result.returncode != 0
        assert f"{key}: {path}: {problem}" in result.stdout + result.stderr


def test_idle_timeout_inf_stops_twistd(tmp_path):
    """Issue 11 item 16: ``idle_timeout = inf`` was accepted."""
    config = tmp_path / "m.toml"
    config.write_text("[line]\nidle_timeout = inf\n")
    for args in (["--config", str(config)], ["--idle-timeout", "inf"]):
        listen = ["--listen", f"tcp:{free_port()}:interface=127.0.0.1"]
        result = subprocess.run(twistd_command(args + listen), capture_output=True, text=True,
                                timeout=30, cwd=tmp_path)
        assert result.returncode != 0
        assert "line.idle_timeout: expected a number >= 0, got float inf" in (
            result.stdout + result.stderr)


def test_logfile_keeps_keep_files_old_files(tmp_path):
    """Issue 11 item 18: with --logfile, old log files were never removed.  Each rotation
    (SIGUSR1 here, or every 1,000,000 bytes) now deletes those past ``[log] keep_files``."""
    port = free_port()
    logfile, config = tmp_path / "m.log", tmp_path / "m.toml"
    config.write_text("[log]\nkeep_files = 2\n")
    for n in range(1, 6):  # old files of an earlier run, past the limit
        (tmp_path / f"m.log.{n}").write_text(f"old {n}\n")
    cmd = [TWISTD, "-n", f"--logfile={logfile}", "--pidfile=", "mailsocketd", "--config",
           str(config), "--log-commands", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc, 30)
        for n in range(4):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(f"rotation{n}\r\nquit\r\n".encode())
                read_until_close(s)
            time.sleep(0.3)  # the log is written every 50 ms
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while f"rotation{n}" not in (tmp_path / "m.log.1").read_text(errors="replace"):
                assert time.monotonic() < deadline, "SIGUSR1 did not rotate the log"
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(15)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("m.log"))
    assert names == ["m.log", "m.log.1", "m.log.2"], names
    assert "rotation3" in (tmp_path / "m.log.1").read_text()
    assert "rotation2" in (tmp_path / "m.log.2").read_text()
