"""SIGHUP reloads the real daemon's configuration without dropping anyone: listeners opened and
closed, limits and log settings changed, a TLS certificate read again, a bad file refused.
(Accounts and logged-in mail users: test_reload_mail.py.)"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from daemon import TWISTD, Daemon, free_port, read_line, read_until_close, running_daemon

DATE = rb"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"
pytestmark = pytest.mark.timeout(90)


def reload(daemon: Daemon, config: Path, toml: str, outcome: str = "reloaded") -> str:
    """Write the new file, send SIGHUP, and return the reload's log line."""
    pattern = {"reloaded": "configuration reloaded: ", "refused": "reload refused, "}[outcome]
    before = daemon.log().count(pattern)
    config.write_text(toml)
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (log := daemon.log()).count(pattern) == before:
        assert daemon.alive(), f"SIGHUP ended the daemon:\n{log[-2000:]}"
        assert time.monotonic() < deadline, f"no {outcome!r} line:\n{log[-2000:]}"
        time.sleep(0.05)
    return [line for line in log.splitlines() if pattern in line][-1]


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def ask(s: socket.socket, line: bytes) -> bytes:
    s.sendall(line + b"\r\n")
    return read_line(s)


def test_sighup_opens_and_closes_listeners_and_changes_limits_for_new_clients(tmp_path):
    daytime = free_port()
    with running_daemon(tmp_path, config_toml="[line]\nmax_line_length = 100\n") as d:
        config = tmp_path / "mailsocketd.toml"
        with d.connect() as old_client:
            assert re.fullmatch(DATE, ask(old_client, b"time"))
            line = reload(d, config, "[line]\nmax_line_length = 20\n"
                          f'daytime = ["tcp:{daytime}:interface=127.0.0.1"]\n')
            assert f"listening on 'tcp:{daytime}:interface=127.0.0.1'" in line
            assert "line.max_line_length changed" in line
            # the client connected before carries on, with the limit it came with
            assert re.fullmatch(DATE, ask(old_client, b"time"))
            assert ask(old_client, b"help " + b"x" * 40).startswith(b"error: unknown command")
            with socket.create_connection(("127.0.0.1", daytime), timeout=5) as s:
                assert re.fullmatch(DATE + rb"\r\n", read_until_close(s))
            assert d.ask(b"help " + b"x" * 40) == b"error: line too long"  # a new client

            line = reload(d, config, "[line]\nmax_line_length = 20\n")
            assert f"no longer listening on 'tcp:{daytime}:interface=127.0.0.1'" in line
            assert refused(daytime)
            assert re.fullmatch(DATE, ask(old_client, b"time"))
        status = d.exchange(b"status\r\nquit\r\n")
        assert b"connections: 1 open" in status
    assert "Traceback" not in d.log()


def test_an_invalid_file_changes_nothing_and_says_why_in_one_line(tmp_path):
    daytime = free_port()
    with running_daemon(tmp_path, config_toml="[line]\nbanner = true\n") as d:
        config = tmp_path / "mailsocketd.toml"
        assert d.ask(b"time").startswith(b"mailsocketd")  # the banner
        line = reload(d, config, f'[line]\nbanner = false\ndaytime = ["tcp:{daytime}"]\n'
                      "idle_timeout = -1\n", outcome="refused")
        assert re.search(r"reload refused, nothing changed: line\.idle_timeout: .*-1", line)
        assert d.ask(b"time").startswith(b"mailsocketd")  # still the old settings
        assert refused(daytime)
        assert d.alive()
        # a syntax error, and a port that is taken: the same
        line = reload(d, config, "[line\n", outcome="refused")
        assert "not valid TOML" in line
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            line = reload(d, config, f'[line]\nbanner = false\ndaytime = ["tcp:{daytime}:'
                          f'interface=127.0.0.1", "tcp:{busy}:interface=127.0.0.1"]\n',
                          outcome="refused")
            assert f"cannot listen on 'tcp:{busy}:interface=127.0.0.1'" in line
        assert d.ask(b"time").startswith(b"mailsocketd")
        assert refused(daytime)  # opened for the refused reload, closed again
        assert "Traceback" not in d.log()


def test_command_line_options_keep_precedence_over_the_file_on_reload(tmp_path):
    other = free_port()
    with running_daemon(tmp_path, config_toml="[line]\nbanner = false\n",
                        extra_args=["--banner", "--idle-timeout", "1"]) as d:
        config = tmp_path / "mailsocketd.toml"
        line = reload(d, config, f'[line]\nbanner = false\nidle_timeout = 600\nlisten = '
                      f'["tcp:{other}:interface=127.0.0.1"]\nmax_connections = 7\n')
        assert "line.max_connections changed" in line
        assert "idle_timeout" not in line and "listening" not in line
        assert refused(other)  # --listen (the daemon's own) still wins
        with d.connect() as s:  # --banner and --idle-timeout still win
            assert read_line(s).startswith(b"mailsocketd")
            assert read_line(s) == b"error: idle timeout (1 s), closing"


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return key, cert


def test_a_renewed_tls_certificate_is_served_after_a_reload(tmp_path):
    old_key, old_cert = make_cert(tmp_path, "old")
    new_key, new_cert = make_cert(tmp_path, "new")
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    key.write_bytes(old_key.read_bytes())
    cert.write_bytes(old_cert.read_bytes())
    port = free_port()
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"

    def connect(cafile: Path) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return context.wrap_socket(raw, server_hostname="localhost")

    with running_daemon(tmp_path, config_toml=f'[line]\nlisten = ["{listen}"]\n',
                        listen=listen, port=port) as d, connect(old_cert) as before:
        assert re.fullmatch(DATE, ask(before, b"time"))
        key.write_bytes(new_key.read_bytes())  # certbot's renewal
        cert.write_bytes(new_cert.read_bytes())
        with connect(old_cert) as s:  # not read again until told
            assert re.fullmatch(DATE, ask(s, b"time"))
        line = reload(d, tmp_path / "mailsocketd.toml", f'[line]\nlisten = ["{listen}"]\n')
        assert "TLS certificate and key of" in line
        with connect(new_cert) as s:
            assert re.fullmatch(DATE, ask(s, b"time"))
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(old_cert)
        assert re.fullmatch(DATE, ask(before, b"time"))  # the old connection carries on
        # a broken renewal (key and certificate do not match) is refused, the old one kept
        key.write_bytes(old_key.read_bytes())
        line = reload(d, tmp_path / "mailsocketd.toml", f'[line]\nlisten = ["{listen}"]\n'
                      "# touched\n", outcome="refused")
        assert "line.listen" in line
        with connect(new_cert) as s:
            assert re.fullmatch(DATE, ask(s, b"time"))


def test_moving_a_listener_to_other_options_on_the_same_port(tmp_path):
    port = free_port()
    first = f'[line]\ndaytime = ["tcp:{port}:interface=127.0.0.1"]\n'
    with running_daemon(tmp_path, config_toml=first) as d:
        config = tmp_path / "mailsocketd.toml"
        with d.connect() as old_client:
            line = reload(d, config, f'[line]\ndaytime = ["tcp:{port}:interface=127.0.0.1:'
                          'backlog=100"]\n')
            assert "listening on" in line and "no longer listening on" in line
            assert re.fullmatch(DATE, ask(old_client, b"time"))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert re.fullmatch(DATE + rb"\r\n", read_until_close(s))


def test_log_settings_change_on_reload(tmp_path):
    with running_daemon(tmp_path, config_toml="# defaults\n") as d:
        config = tmp_path / "mailsocketd.toml"
        reload(d, config, '[log]\nformat = "json"\ncommands = true\n')
        d.ask(b"time")
        log = d.wait_log(r'"event": "command"')
        assert '"command": "time"' in log


def test_sighup_reloads_a_daemonized_twistd(tmp_path):
    port, daytime = free_port(), free_port()
    config, log, pidfile = (tmp_path / "m.toml", tmp_path / "m.log", tmp_path / "m.pid")
    config.write_text("# defaults\n")
    started = subprocess.run([TWISTD, f"--logfile={log}", f"--pidfile={pidfile}", "mailsocketd",
                              "--config", str(config), "--listen",
                              f"tcp:{port}:interface=127.0.0.1"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())  # the daemon twistd forked: ours to stop
    try:
        config.write_text(f'[line]\ndaytime = ["tcp:{daytime}:interface=127.0.0.1"]\n')
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "configuration reloaded: listening on" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", daytime), timeout=5) as s:
            assert re.fullmatch(DATE + rb"\r\n", read_until_close(s))
        os.kill(pid, 0)  # still there
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
