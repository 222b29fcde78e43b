"""The whole daemon (``twistd -n mailsocketd``) watching a REAL Dovecot account: ``status``
shows the account, and the line service keeps answering ``time`` while Dovecot is killed and
restarted and the mail side notices, backs off, reconnects and resumes.

The daemon is the installed `twistd -n mailsocketd`, as for every integration test.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid

import pytest
from daemon import start_daemon
from mailrig import account_toml, write_password

TIME_LINE = re.compile(rb"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}$")

pytestmark = pytest.mark.timeout(120)


def status(daemon):
    return daemon.exchange(b"status\r\nquit\r\n").decode().replace("\r\n", "\n")


def wait_for_status(daemon, pattern, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        text = status(daemon)
        if re.search(pattern, text, re.M):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched {pattern!r}; last:\n{text}\n"
                                 f"--- log ---\n{daemon.log()[-3000:]}")
        time.sleep(0.1)


class TimeAsker(threading.Thread):
    """Asks ``time`` over and over on fresh connections; keeps every failure and latency."""

    def __init__(self, daemon):
        super().__init__(daemon=True)
        self.target = daemon
        self.stopping = threading.Event()
        self.answers = 0
        self.failures = []
        self.slowest = 0.0

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                reply = self.target.ask(b"time", timeout=5)
            except OSError as e:
                self.failures.append(repr(e))
            else:
                if TIME_LINE.match(reply):
                    self.answers += 1
                else:
                    self.failures.append(repr(reply))
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.05)


def test_time_keeps_answering_while_dovecot_dies_and_comes_back(mailserver, tmp_path):
    box = "T" + uuid.uuid4().hex[:10]
    mailserver.populate("alice", 4, box)
    config = account_toml("work", server=f"tls:127.0.0.1:{mailserver.imaps_port}",
                          user="alice", password_file=write_password(tmp_path),
                          ca_file=str(mailserver.ca_file), mailboxes=[box])
    daemon = start_daemon(tmp_path, config_toml=config)
    asker = TimeAsker(daemon)
    try:
        text = wait_for_status(daemon, rf"account work {box}: state=idling messages=4 ")
        assert re.search(rf"account work {box}: state=idling messages=4 unseen=4 "
                         r"last_check=\d{4}/\d\d/\d\d \d\d:\d\d:\d\d latency=\d+\.\d{3}s "
                         r"error=-", text), text
        asker.start()
        try:
            mailserver.kill_dovecot()
            wait_for_status(daemon, r"state=backing-off .*error=connection (refused|closed)")
        finally:
            mailserver.start_dovecot()
        wait_for_status(daemon, rf"account work {box}: state=idling messages=4 .*error=-$",
                        timeout=30)
        time.sleep(0.5)
    finally:
        asker.stopping.set()
        asker.join(10)
        code = daemon.stop()
    assert asker.failures == [] and asker.answers > 20, (asker.failures, asker.answers)
    assert asker.slowest < 1.0
    assert code == -signal.SIGTERM  # twistd's orderly SIGTERM exit
    assert "Server Shut Down." in daemon.log()
    log = daemon.log()
    assert log.count("logged in to 127.0.0.1") >= 2
    assert "pw\n" not in log and " pw " not in log
