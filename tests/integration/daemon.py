"""Start the real, installed ``twistd -n mailsocketd`` on a free loopback port, and talk to it.

    with running_daemon(tmp_path, config_toml="[line]\\nidle_timeout = 5\\n") as d:
        assert d.ask(b"time").startswith(b"20")
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")


def free_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    """A TCP port that nobody listens on right now."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = "127.0.0.1"
    extra_ports: dict[str, int] = field(default_factory=dict)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def ask(self, line: bytes, timeout: float = 10.0) -> bytes:
        """Send one request line on a new connection; return its first reply line (no CRLF)."""
        with self.connect(timeout) as s:
            s.sendall(line + b"\r\n")
            return read_line(s)

    def exchange(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send ``data`` (which should end in quit) and read everything until the server closes."""
        with self.connect(timeout) as s:
            s.sendall(data)
            return read_until_close(s)

    def wait_until_alone(self, timeout: float = 10.0) -> None:
        """Wait until the server counts no connection but the one asking (probes are gone)."""
        deadline = time.monotonic() + timeout
        while b"connections: 1 open" not in self.exchange(b"status\r\nquit\r\n"):
            if time.monotonic() > deadline:
                raise AssertionError("connections stayed open")
            time.sleep(0.05)
        time.sleep(0.1)  # and let the status connection itself be released

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 5.0) -> str:
        """The log once ``pattern`` (a regular expression) is in it; the daemon writes its log
        every 50 ms, not per event."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, text := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the log never matched {pattern!r}:\n{text[-3000:]}")
            time.sleep(0.05)
        return text

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the daemon (ours, by pid) and wait for it; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def read_until_close(s: socket.socket, limit: int = 64 << 20) -> bytes:
    chunks = []
    total = 0
    while total < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float,
                  family: int = socket.AF_INET) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"twistd exited with status {proc.returncode} before listening")
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"twistd did not listen on {host}:{port} within {timeout} s")


def twistd_command(args: Sequence[str], twistd_args: Sequence[str] = ()) -> list[str]:
    return [TWISTD, "-n", "--pidfile=", *twistd_args, "mailsocketd", *args]


def start_daemon(tmp_path: Path, config_toml: str = "", extra_args: Sequence[str] = (),
                 twistd_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 listen: str | None = None, port: int | None = None,
                 wait: bool = True) -> Daemon:
    """Start ``twistd -n mailsocketd`` listening on a free port (or ``listen``)."""
    args: list[str] = []
    if config_toml:
        config = tmp_path / "mailsocketd.toml"
        config.write_text(config_toml)
        args += ["--config", str(config)]
    port = port or free_port()
    args += ["--listen", listen or f"tcp:{port}:interface=127.0.0.1", *extra_args]
    log_path = tmp_path / f"twistd-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(twistd_command(args, twistd_args), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp_path, env={**os.environ, **(env or {})})
    daemon = Daemon(proc, port, log_path)
    if wait:
        try:
            wait_for_port("127.0.0.1", port, proc, timeout=30)
        except RuntimeError as e:
            daemon.stop(signal.SIGKILL)
            raise RuntimeError(f"{e}\n--- twistd output ---\n{daemon.log()}") from None
    return daemon


@contextlib.contextmanager
def running_daemon(tmp_path: Path, **kwargs: object) -> Iterator[Daemon]:
    daemon = start_daemon(tmp_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield daemon
    finally:
        daemon.stop()
