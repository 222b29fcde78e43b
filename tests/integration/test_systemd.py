"""systemd readiness and watchdog against the real daemon: a datagram socket stands in for
systemd (NOTIFY_SOCKET), and the shipped units pass ``systemd-analyze verify``."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from daemon import TWISTD, free_port, start_daemon
from processrig import need_program

pytestmark = pytest.mark.timeout(60)
UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


class FakeSystemd:
    """A datagram socket where systemd's would be; collects what the daemon says."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.address = address
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, until: str, timeout: float = 15.0) -> dict[str, str]:
        """Read datagrams until one holds ``until`` (``NAME=value``); return that one."""
        deadline = time.monotonic() + timeout
        name, _, value = until.partition("=")
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"systemd never heard {until!r}; it heard {self.messages}"
            self.sock.settimeout(left)
            data = self.sock.recv(4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))
            if fields.get(name) == value:
                return fields

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_reloading_watchdog_and_stopping_reach_systemd(tmp_path, abstract):
    address = f"@mailsocketd-test-{uuid.uuid4().hex}" if abstract else str(tmp_path / "notify")
    systemd = FakeSystemd(address)
    port = free_port()
    try:
        daemon = start_daemon(tmp_path, config_toml="[line]\nbanner = false\n", port=port,
                              env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"},
                              wait=False)
        try:
            ready = systemd.receive("READY=1")
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # every listener was bound when READY=1 came
            assert ready["MAINPID"] == str(daemon.proc.pid)
            assert ready["STATUS"].startswith("0 clients, 0 logged in")
            pings_from = time.monotonic()
            systemd.receive("WATCHDOG=1")
            systemd.receive("WATCHDOG=1")
            assert 0.15 < time.monotonic() - pings_from < 2.0  # every 0.2 s (half of 0.4)

            daemon.proc.send_signal(signal.SIGHUP)
            reloading = systemd.receive("RELOADING=1")
            stamp = int(reloading["MONOTONIC_USEC"])
            assert abs(stamp - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5e6
            ready = systemd.receive("READY=1")
            assert "1 reloads, 0 refused" in ready["STATUS"]

            daemon.proc.send_signal(signal.SIGTERM)
            assert systemd.receive("STOPPING=1")["STATUS"] == "stopping"
            assert daemon.proc.wait(15) == -signal.SIGTERM
        finally:
            daemon.stop()
    finally:
        systemd.close()
    assert "Traceback" not in daemon.log()


def test_without_notify_socket_nothing_is_sent_and_sighup_still_reloads(tmp_path):
    daemon = start_daemon(tmp_path, config_toml="# defaults\n")
    try:
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("configuration reloaded")
        assert daemon.alive()
    finally:
        daemon.stop()
    assert "notify" not in daemon.log().lower()


@pytest.mark.parametrize("unit", ["mailsocketd", "mailsocketd@"],
                         ids=["one daemon", "instances"])
def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path, unit):
    analyze = need_program("systemd-analyze")
    instance = unit + ("1" if unit.endswith("@") else "")  # a template is verified as @1
    for kind in ("service", "socket"):
        text = (UNITS / f"{unit}.{kind}").read_text()
        # verify resolves ExecStart: point it at this venv's twistd, as the install would.
        (tmp_path / f"{instance}.{kind}").write_text(
            text.replace("/opt/mailsocketd/venv/bin/twistd", TWISTD))
    result = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / f"{instance}.service"),
                             str(tmp_path / f"{instance}.socket")],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "mailsocketd" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr
    service = (UNITS / f"{unit}.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=",
                 "Restart=on-failure", "NotifyAccess=main"):
        assert f"\n{line}" in service
