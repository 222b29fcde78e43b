"""Issue 16: the time a line may take to complete (``line_timeout``), against slowloris clients,
and what a too-long line is logged as.  Socket-free (task.Clock); the real-socket test is in
tests/integration/test_line_timeout.py."""

from __future__ import annotations

import re

from linerig import Rig, lose, take
from logrig import global_log_events
from twisted.internet.defer import Deferred

from mailsocketd.line.commands import Command
from mailsocketd.line.config import LineConfig
from mailsocketd.line.replies import Reply

TIME_RE = re.compile(rb"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\r\n$")
TIMEOUT_LINE = b"error: line not ended within 30 s, closing\r\n"


def trickle(rig: Rig, proto, data: bytes, every: float = 1.0) -> None:
    for byte in data:
        if proto.closing:
            return
        proto.dataReceived(bytes([byte]))
        rig.clock.advance(every)


def test_the_default_bounds_a_line_like_an_http_header_timeout():
    assert LineConfig().line_timeout == 30.0
    assert LineConfig().idle_timeout > LineConfig().line_timeout


def test_a_slowloris_line_is_closed_after_line_timeout_though_never_silent():
    """One byte a second, no line end: the idle limit never fires (it counts only silence),
    the line limit would take 68 minutes; the default line_timeout closes it after 30 s."""
    rig = Rig()  # the defaults: idle_timeout 300 s, max_line_length 4096
    proto, tr = rig.connect()
    with global_log_events() as events:
        trickle(rig, proto, b"x" * 29)
        assert take(tr) == b"" and not proto.closing
        trickle(rig, proto, b"x" * 3)
    assert take(tr) == TIMEOUT_LINE
    assert proto.closing
    logged = [e for e in events if e.get("event") == "line_timeout"]
    assert len(logged) == 1 and logged[0]["timeout"] == 30.0


def test_each_line_gets_its_own_time_so_a_slow_steady_stream_is_served():
    """Packets cut mid-line for minutes (a big ``send`` body through nc, a slow link): each
    line ends within the limit, so nothing is closed, however long the stream lasts."""
    rig = Rig(line_timeout=30.0)
    proto, tr = rig.connect()
    proto.dataReceived(b"ti")
    for _ in range(20):  # 400 s in all, every line taking 20 s
        rig.clock.advance(20.0)
        proto.dataReceived(b"me\r\nti")
    out = take(tr)
    assert out.count(b"\r\n") == 20 and not proto.closing
    assert all(TIME_RE.match(line + b"\r\n") for line in out.split(b"\r\n")[:-1])


def test_a_bare_time_with_no_line_end_is_still_served_and_the_connection_kept():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time")
    rig.clock.advance(0.05)
    assert TIME_RE.match(take(tr))
    rig.clock.advance(120.0)  # silent, but within idle_timeout: no unfinished line to time
    assert take(tr) == b"" and not proto.closing
    proto.dataReceived(b"time")
    rig.clock.advance(0.05)
    assert TIME_RE.match(take(tr))


def test_a_quiet_client_with_no_unfinished_line_is_left_to_the_idle_limit():
    rig = Rig(idle_timeout=0.0)  # a watcher waiting for pushed lines: quiet for long
    proto, tr = rig.connect()
    proto.dataReceived(b"time\r\n")
    take(tr)
    rig.clock.advance(3600.0)
    assert take(tr) == b"" and not proto.closing
    assert rig.clock.getDelayedCalls() == []  # no timer is kept for a connection at rest


def test_the_line_clock_does_not_run_while_we_owe_a_reply():
    """While a reply is pending the client's next line may wait in its socket buffer: we are
    the slow side, so its time starts again when we are done."""
    pending: list[Deferred[Reply]] = []

    def slow(session):
        d: Deferred[Reply] = Deferred()
        pending.append(d)
        return d

    rig = Rig(extra=[Command(name="slow", handler=slow, summary="waits")])
    proto, tr = rig.connect()
    proto.dataReceived(b"slow\r\nti")
    rig.clock.advance(100.0)
    assert not proto.closing
    pending[0].callback(Reply("done"))
    assert take(tr) == b"done\r\n"
    rig.clock.advance(5.0)
    proto.dataReceived(b"me\r\n")
    assert TIME_RE.match(take(tr)) and not proto.closing


def test_zero_turns_the_line_timeout_off():
    rig = Rig(line_timeout=0.0)
    proto, tr = rig.connect()
    trickle(rig, proto, b"y" * 100)
    assert take(tr) == b"" and not proto.closing


def test_no_line_timer_is_left_after_the_line_ends_or_the_connection_closes():
    rig = Rig(idle_timeout=0.0)
    proto, tr = rig.connect()
    proto.dataReceived(b"abc")
    assert len(rig.clock.getDelayedCalls()) == 1
    lose(proto, tr)
    assert rig.clock.getDelayedCalls() == []


def test_a_too_long_line_is_logged_with_what_was_seen_not_the_buffer_size():
    """Issue 16: a 1,048,578-byte line was logged as 'line of 65536 bytes': the first read
    of it.  Without its end the log says 'at least'; with it, the real length."""
    rig = Rig(max_line_length=4096)
    proto, tr = rig.connect()
    with global_log_events() as events:
        proto.dataReceived(b"z" * 65536)
    assert take(tr) == b"error: line too long\r\n"
    text = [e for e in events if e.get("event") == "line_too_long"]
    assert text[0]["seen"] == "at least 65536" and text[0]["complete"] is False

    proto, tr = rig.connect(port=40001)
    with global_log_events() as events:
        proto.dataReceived(b"z" * 5000 + b"\r\n")
    text = [e for e in events if e.get("event") == "line_too_long"]
    assert text[0]["seen"] == "5000" and text[0]["complete"] is True
