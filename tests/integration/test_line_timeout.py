"""Issue 16: a slowloris client against the real daemon, over a real socket: a line trickled a
byte at a time is cut after ``line_timeout``, while a bare ``time`` and a steady client are
served as before."""

from __future__ import annotations

import re
import time
from pathlib import Path

from daemon import read_line, read_until_close, running_daemon

TIME_LINE = re.compile(rb"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\r\n")
CONFIG = "[line]\nline_timeout = 2\nidle_timeout = 60\n"


def test_a_trickled_line_is_cut_after_line_timeout(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config_toml=CONFIG) as d, d.connect() as s:
        started = time.monotonic()
        s.settimeout(0.3)
        out = b""
        for _ in range(40):  # one byte every 0.3 s: never silent for the idle limit
            try:
                s.sendall(b"x")
            except OSError:
                break
            try:
                out += s.recv(4096)
            except TimeoutError:
                continue
            if out.endswith(b"\n"):
                break
        elapsed = time.monotonic() - started
        assert out == b"error: line not ended within 2 s, closing\r\n"
        assert 1.8 < elapsed < 6
        d.wait_log(r"127\.0\.0\.1:\d+: line not ended within 2 s \(\d+ bytes so far\); closing")
        assert TIME_LINE.fullmatch(d.ask(b"time") + b"\r\n")  # the service goes on


def test_bare_time_and_slow_but_complete_lines_are_served(tmp_path: Path) -> None:
    with running_daemon(tmp_path, config_toml=CONFIG) as d, d.connect() as s:
        s.sendall(b"time")  # an old client: no line ending, then it waits
        assert TIME_LINE.fullmatch(read_line(s) + b"\r\n")
        time.sleep(2.5)  # quiet longer than line_timeout, with no unfinished line: kept
        for _ in range(3):  # each line takes 1.5 s, the stream 4.5 s: kept
            s.sendall(b"ti")
            time.sleep(1.5)
            s.sendall(b"me\r\n")
            assert TIME_LINE.fullmatch(read_line(s) + b"\r\n")
        s.sendall(b"quit\r\n")
        assert read_until_close(s) == b"quit\r\n"
