"""The shipped logrotate file, run by the real ``logrotate`` against a running daemon: after
the move, SIGUSR1 (its postrotate) makes the daemon write a new file at the configured path,
with the old one's mode; in the foreground (-n) and daemonized."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from daemon import TWISTD, free_port, read_until_close, start_daemon, wait_for_port
from processrig import need_program

pytestmark = pytest.mark.timeout(90)
SHIPPED = Path(__file__).resolve().parents[2] / "contrib" / "logrotate" / "mailsocketd"


def rotate(tmp_path: Path, log: Path, pidfile: Path) -> None:
    """The shipped configuration, pointed at this test's files, with a private state file."""
    conf = tmp_path / "logrotate.conf"
    conf.write_text(SHIPPED.read_text().replace("/var/log/mailsocketd/mailsocketd.log", str(log))
                    .replace("/run/mailsocketd/twistd.pid", str(pidfile)))
    result = subprocess.run([need_program("logrotate"), "--force", "--state", str(tmp_path / "state"),
                             str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def talk(port: int, word: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{word}\r\nquit\r\n".encode())
        read_until_close(s)


def wait_for(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (content := path.read_text(errors="replace") if path.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never reached {path}:\n{content[-2000:]}"
        time.sleep(0.05)
    return content


@pytest.mark.parametrize("foreground", [True, False], ids=["twistd -n", "daemon mode"])
def test_logrotate_moves_the_log_and_the_daemon_reopens_it(tmp_path, foreground):
    port = free_port()
    log, pidfile = tmp_path / "mailsocketd.log", tmp_path / "twistd.pid"
    cmd = [TWISTD, *(["-n"] if foreground else []), f"--logfile={log}", f"--pidfile={pidfile}",
           "mailsocketd", "--log-commands", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pid = proc.pid
    try:
        if not foreground:
            assert proc.wait(30) == 0  # twistd forked the daemon and returned
        wait_for_port("127.0.0.1", port, proc if foreground else _Alive(), 30)  # type: ignore[arg-type]
        pid = int(pidfile.read_text())
        os.chmod(log, 0o640)
        talk(port, "before_rotation")
        wait_for(log, "before_rotation")

        rotate(tmp_path, log, pidfile)

        rotated = [p for p in tmp_path.iterdir() if re.fullmatch(r"mailsocketd\.log-\d{8}",
                                                                  p.name)]
        assert len(rotated) == 1, sorted(p.name for p in tmp_path.iterdir())
        talk(port, "after_rotation")
        fresh = wait_for(log, "after_rotation")
        assert "before_rotation" not in fresh
        assert "SIGUSR1: log file reopened" in fresh
        old = rotated[0].read_text()
        assert "before_rotation" in old and "after_rotation" not in old
        assert os.stat(log).st_mode & 0o777 == 0o640  # the old one's mode
        assert not (tmp_path / "mailsocketd.log.1").exists()  # no twistd rotation on top
    finally:
        os.kill(pid, signal.SIGTERM)  # ours: started above, its pid from its pid file
        deadline = time.monotonic() + 15
        while _exists(pid) and time.monotonic() < deadline:
            if foreground:
                proc.poll()
            time.sleep(0.05)
        if foreground:
            proc.wait(5)


class _Alive:
    """wait_for_port's process stand-in for a daemon that twistd forked away."""

    def poll(self) -> None:
        return None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigusr1_when_logging_to_standard_output_is_noted_not_fatal(tmp_path):
    """Under systemd the log is standard output (the journal): a stray SIGUSR1 (a logrotate
    postrotate left over from a log-file setup) must not end the daemon, as its default would."""
    daemon = start_daemon(tmp_path)
    try:
        daemon.proc.send_signal(signal.SIGUSR1)
        daemon.wait_log("SIGUSR1: logging to standard output, no file to reopen")
        assert daemon.alive() and daemon.ask(b"quit") == b"quit"
    finally:
        daemon.stop()
