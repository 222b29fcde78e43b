"""The log observer: twistd's lines, written in batches, nothing lost or reordered."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from logrig import LogEvents
from twisted.internet.task import Clock
from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.failure import Failure

from mailsocketd.logs import ClassicText, Events, LogWriter, json_line

NOW = 1_795_000_000.25


class FakeReactor(Clock):
    """A clock that says whether it runs and keeps the shutdown triggers it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.running = True
        self.triggers: list[tuple[str, str, Callable[[], None]]] = []

    def addSystemEventTrigger(self, phase: str, eventType: str, callable: Callable[..., Any],
                              *args: object, **kw: object) -> None:
        self.triggers.append((phase, eventType, partial(callable, *args, **kw)))

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kw: object) -> None:
        callable(*args, **kw)


class CountingFile(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1


def logged(action: Callable[[Logger], None]) -> dict[str, Any]:
    observer = LogEvents()
    publisher = LogPublisher(observer)
    action(Logger(namespace="mailsocketd.test", observer=publisher))
    return observer.events[0]


EVENTS = [
    lambda log: log.info("connection opened: {peer}", peer="127.0.0.1:4000"),
    lambda log: log.info("plain text, no fields"),
    lambda log: log.warn("two\nlines"),
    lambda log: log.info("braces {{kept}} and {x!r}", x={"a": 1}),
    lambda log: log.failure("it broke", Failure(ValueError("bad value"))),
    lambda log: log.info(""),
]


@pytest.mark.parametrize("action", EVENTS)
def test_lines_are_twistds_own(action: Callable[[Logger], None]) -> None:
    event = logged(action)
    event["log_time"] = NOW
    assert ClassicText()(event) == formatEventAsClassicLogText(
        event, formatTime=formatTime)


def test_the_timestamp_follows_the_clock() -> None:
    text = ClassicText()
    first = text({"log_format": "a", "log_time": NOW, "log_system": "s"})
    later = text({"log_format": "a", "log_time": NOW + 61, "log_system": "s"})
    assert first is not None and later is not None
    assert first.split(" ")[0] == formatTime(NOW) != later.split(" ")[0] == formatTime(NOW + 61)
    assert text({"log_format": "a", "log_system": "s"}) == "- [s] a\n"


def test_lean_events_read_like_logger_events() -> None:
    captured = LogEvents()
    Events("mailsocketd.test", captured).info(
        "connection_closed", "connection closed: {x} 127.0.0.1:4000", peer="127.0.0.1:4000")
    lean = captured.events[0]
    assert ClassicText()(lean) == (
        f"{formatTime(lean['log_time'])} [mailsocketd.test#info] "
        "connection closed: {x} 127.0.0.1:4000\n")
    parsed = json.loads(json_line(lean))
    assert (parsed["event"], parsed["peer"]) == ("connection_closed", "127.0.0.1:4000")


def test_events_are_written_together_after_the_delay_in_order() -> None:
    reactor, out = FakeReactor(), CountingFile()
    writer = LogWriter(out, lambda e: e["text"], reactor, delay=0.05)
    for n in range(100):
        writer({"text": f"{n}\n"})
    assert out.getvalue() == ""
    reactor.advance(0.05)
    assert out.getvalue() == "".join(f"{n}\n" for n in range(100))
    assert (out.writes, out.flushes) == (1, 1)
    writer({"text": "100\n"})
    reactor.advance(0.05)
    assert out.getvalue().endswith("99\n100\n") and out.writes == 2


def test_shutdown_writes_what_is_pending_and_later_events_go_at_once() -> None:
    reactor, out = FakeReactor(), CountingFile()
    writer = LogWriter(out, lambda e: e["text"], reactor)
    writer({"text": "pending\n"})
    assert [(p, e) for p, e, _ in reactor.triggers] == [("after", "shutdown")]
    reactor.triggers[0][2]()
    assert out.getvalue() == "pending\n"
    reactor.running = False
    writer({"text": "Server Shut Down.\n"})
    assert out.getvalue() == "pending\nServer Shut Down.\n" and out.flushes == 2


def test_another_threads_event_comes_after_what_is_pending() -> None:
    reactor, out = FakeReactor(), CountingFile()
    writer = LogWriter(out, lambda e: e["text"], reactor)
    writer({"text": "first\n"})
    assert out.getvalue() == ""  # pending in the reactor's thread
    worker = threading.Thread(target=writer, args=({"text": "from a thread\n"},))
    worker.start()
    worker.join()
    assert out.getvalue() == "first\nfrom a thread\n"
    reactor.advance(1)
    assert out.getvalue() == "first\nfrom a thread\n"


def test_events_that_render_to_nothing_are_not_written() -> None:
    reactor, out = FakeReactor(), CountingFile()
    writer = LogWriter(out, ClassicText(), reactor)
    writer({"log_time": NOW})  # no format: twistd writes nothing either
    reactor.advance(1)
    assert out.getvalue() == "" and reactor.getDelayedCalls() == []


def test_levels_name_the_system() -> None:
    captured = LogEvents()
    Events("ns", captured).warn("line_too_long", "too long")
    event = captured.events[0]
    assert event["log_level"] is LogLevel.warn and event["log_system"] == "ns#warn"


def test_an_event_logged_in_the_middle_of_a_write_is_kept_for_the_next() -> None:
    """A signal handler runs between two bytecodes of this thread, lock held or not."""
    reactor = FakeReactor()

    class Interrupted(CountingFile):
        def write(self, s: str) -> int:
            if self.writes == 0:
                writer({"text": "Received SIGTERM\n"})
            return super().write(s)

    out = Interrupted()
    writer = LogWriter(out, lambda e: e["text"], reactor)
    writer({"text": "before\n"})
    reactor.advance(0.05)
    assert out.getvalue() == "before\n"
    reactor.advance(0.05)
    assert out.getvalue() == "before\nReceived SIGTERM\n"


# -- SIGUSR1: logrotate's move, or twistd's own rotation ------------------------------------

def test_a_log_file_moved_away_is_reopened_at_its_path_with_its_mode(tmp_path: Any) -> None:
    import os

    from mailsocketd.logs import ReopeningLogFile

    path = tmp_path / "mailsocketd.log"
    handle = ReopeningLogFile(path.name, str(tmp_path), maxRotatedFiles=3)
    os.chmod(path, 0o640)
    handle.write("before\n")
    handle.flush()
    os.rename(path, tmp_path / "mailsocketd.log-20261207")  # what logrotate does
    assert handle.reopen_or_rotate() == "reopened"
    handle.write("after\n")
    handle.flush()
    assert path.read_text() == "after\n"
    assert (tmp_path / "mailsocketd.log-20261207").read_text() == "before\n"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640)
    assert not (tmp_path / "mailsocketd.log.1").exists()  # no twistd rotation on top
    handle.close()


def test_a_log_file_logrotate_created_keeps_logrotates_mode(tmp_path: Any) -> None:
    import os

    from mailsocketd.logs import ReopeningLogFile

    path = tmp_path / "mailsocketd.log"
    handle = ReopeningLogFile(path.name, str(tmp_path))
    os.chmod(path, 0o600)
    os.rename(path, tmp_path / "old")
    path.write_text("")
    os.chmod(path, 0o644)  # logrotate's "create 0644"
    assert handle.reopen_or_rotate() == "reopened"
    handle.write("new\n")
    handle.flush()
    assert path.read_text() == "new\n" and os.stat(path).st_mode & 0o777 == 0o644
    handle.close()


def test_a_log_file_still_in_place_is_rotated_as_twistd_does(tmp_path: Any) -> None:
    from mailsocketd.logs import ReopeningLogFile

    path = tmp_path / "mailsocketd.log"
    handle = ReopeningLogFile(path.name, str(tmp_path), maxRotatedFiles=3)
    handle.write("first\n")
    assert handle.reopen_or_rotate() == "rotated"
    handle.write("second\n")
    handle.flush()
    assert (tmp_path / "mailsocketd.log.1").read_text() == "first\n"
    assert path.read_text() == "second\n"
    assert handle.reopen_or_rotate() == "rotated"  # the identity follows the rotation
    handle.close()


def test_a_reload_changes_the_format_of_the_running_writer() -> None:
    from mailsocketd import logs

    out = CountingFile()
    clock = FakeReactor()
    clock.running = False  # written at once
    writer = LogWriter(out, ClassicText(), clock)
    logs._writers.append(writer)
    try:
        assert logs.reconfigure("json", 5)
        Events("mailsocketd.test", writer).info("reloaded", "hello")
        assert json.loads(out.getvalue())["event"] == "reloaded"
    finally:
        logs._writers.remove(writer)
