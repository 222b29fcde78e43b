"""Several instances on one port: two real daemons, each handed its own SO_REUSEPORT socket on
the same address as systemd's ``mailsocketd@N.socket`` (``ReusePort=yes``) hands it, both
serve the port; and the template units pass ``systemd-analyze verify``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from daemon import TWISTD, free_port, read_line, twistd_command, wait_for_port
from processrig import need_program
from test_metrics import values

pytestmark = pytest.mark.timeout(120)

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
CONNECTIONS = 40  # spread by the kernel's hash of the client port: both get some (1 in 2**39)

# What systemd does for an activated service: its socket as fd 3, LISTEN_PID naming the
# process that execs twistd, LISTEN_FDS and LISTEN_FDNAMES.
LAUNCHER = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n    os.dup2(fd, 3)\n    os.close(fd)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='line')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def reuseport_socket(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def start_instance(tmp_path: Path, name: str, sock: socket.socket,
                   metrics_port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / f"{name}.toml"
    config.write_text('[line]\nlisten = ["systemd:domain=INET:index=0"]\n'
                      f'[metrics]\nlisten = ["tcp:{metrics_port}:interface=127.0.0.1"]\n')
    command = [sys.executable, "-c", LAUNCHER, str(sock.fileno()),
               *twistd_command(["--config", str(config)])]
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, pass_fds=(sock.fileno(),), cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def served(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                timeout=10) as answer:
        return values(answer.read().decode())["mailsocketd_line_connections_total"]


def test_two_instances_share_one_port_and_both_serve(tmp_path: Path):
    port = free_port()
    sockets = [reuseport_socket(port), reuseport_socket(port)]  # one port, two sockets
    metrics_ports = [free_port(), free_port()]
    procs = [start_instance(tmp_path, f"i{n}", s, m)
             for n, (s, m) in enumerate(zip(sockets, metrics_ports, strict=True))]
    for s in sockets:
        s.close()  # only the daemons hold them now
    try:
        for proc, m in zip(procs, metrics_ports, strict=True):
            wait_for_port("127.0.0.1", m, proc, timeout=30)
        deadline = time.monotonic() + 60
        for _ in range(CONNECTIONS):
            assert time.monotonic() < deadline
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"time\r\n")
                assert read_line(c).startswith(b"20")
        counts = [served(m) for m in metrics_ports]
        assert sum(counts) == CONNECTIONS, counts
        assert min(counts) >= 1, counts  # both instances served some of them
        assert all(p.poll() is None for p in procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_the_template_units_pass_systemd_analyze_verify(tmp_path: Path):
    analyze = need_program("systemd-analyze")
    names = []
    for kind in ("service", "socket"):  # as instance 1, twistd pointed at this venv's
        text = (UNITS / f"mailsocketd@.{kind}").read_text()
        (tmp_path / f"mailsocketd@1.{kind}").write_text(
            text.replace("/opt/mailsocketd/venv/bin/twistd", TWISTD))
        names.append(str(tmp_path / f"mailsocketd@1.{kind}"))
    result = subprocess.run([analyze, "verify", "--man=no", *names], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "mailsocketd" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr
    socket_unit = (UNITS / "mailsocketd@.socket").read_text()
    assert "ReusePort=yes" in socket_unit and "FileDescriptorName=line" in socket_unit
    assert "--config /etc/mailsocketd/%i.toml" in (UNITS / "mailsocketd@.service").read_text()
