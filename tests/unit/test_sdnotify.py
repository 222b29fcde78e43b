"""systemd notifications without a socket: what is sent when, and what the environment says.
(The datagrams themselves reach a real socket in tests/integration/test_systemd.py.)"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock

from mailsocketd.sdnotify import Notifier, SystemdNotify, monotonic_usec, notifier_from_environ


class Recorder(Notifier):
    def __init__(self) -> None:
        self.datagrams: list[list[str]] = []

    def send(self, *fields: str) -> bool:
        self.datagrams.append(list(fields))
        return True


class RunningClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.startup: list[Any] = []

    def callWhenRunning(self, f: Any) -> None:
        self.startup.append(f)


def started(watchdog: float | None, status: Any = lambda: "3 clients") -> tuple[
        SystemdNotify, Recorder, RunningClock]:
    clock, notifier = RunningClock(), Recorder()
    service = SystemdNotify(notifier, clock, status, watchdog)
    service.startService()
    assert notifier.datagrams == []  # nothing before the reactor runs (listeners bound)
    for f in clock.startup:
        f()
    return service, notifier, clock


def test_ready_once_running_then_watchdog_every_half_interval_then_stopping() -> None:
    service, notifier, clock = started(watchdog=10.0)
    assert notifier.datagrams == [["READY=1", "STATUS=3 clients", f"MAINPID={os.getpid()}"]]
    clock.advance(4.9)
    assert len(notifier.datagrams) == 1
    clock.advance(0.1)
    assert notifier.datagrams[-1] == ["WATCHDOG=1"]  # the status did not change
    clock.advance(5)
    assert len(notifier.datagrams) == 3
    service.stopService()
    assert notifier.datagrams[-1] == ["STOPPING=1", "STATUS=stopping"]
    assert clock.getDelayedCalls() == []


def test_without_watchdog_only_a_changed_status_is_sent() -> None:
    lines = ["idle"]
    service, notifier, clock = started(watchdog=None, status=lambda: lines[0])
    clock.advance(30)
    assert len(notifier.datagrams) == 1
    lines[0] = "2 clients,\n 1 logged in"
    clock.advance(30)
    assert notifier.datagrams[-1] == ["STATUS=2 clients, 1 logged in"]
    service.stopService()


def test_reload_says_reloading_with_the_monotonic_clock_then_ready() -> None:
    service, notifier, _ = started(watchdog=None)
    before = monotonic_usec()
    service.reloading()
    service.reloaded(True)
    reloading, ready = notifier.datagrams[-2:]
    assert reloading[0] == "RELOADING=1"
    stamp = int(reloading[1].removeprefix("MONOTONIC_USEC="))
    assert before <= stamp <= monotonic_usec()
    assert ready == ["READY=1", "STATUS=3 clients"]
    service.stopService()


def test_a_failing_status_source_still_notifies() -> None:
    def broken() -> str:
        raise RuntimeError("boom")

    service, notifier, _ = started(watchdog=None, status=broken)
    assert notifier.datagrams[0][:2] == ["READY=1", "STATUS=running"]
    service.stopService()


def test_the_environment_names_the_socket_and_the_watchdog_and_is_cleared() -> None:
    env = {"NOTIFY_SOCKET": "@mailsocketd-test", "WATCHDOG_USEC": "20000000",
           "WATCHDOG_PID": str(os.getpid()), "OTHER": "x"}
    notifier, watchdog = notifier_from_environ(env)
    assert notifier is not None and notifier.address == "\0mailsocketd-test"
    assert watchdog == 20.0
    assert env == {"OTHER": "x"}  # hooks and password commands must not notify for us
    notifier.close()


def test_no_socket_no_notifier_and_another_process_watchdog_is_not_ours() -> None:
    assert notifier_from_environ({"WATCHDOG_USEC": "1000"}) == (None, None)
    notifier, watchdog = notifier_from_environ({"NOTIFY_SOCKET": "/run/x",
                                                "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert notifier is not None and notifier.address == "/run/x" and watchdog is None
    notifier.close()


def test_an_absent_socket_is_logged_once_and_never_raised(tmp_path: Any) -> None:
    from twisted.logger import capturedLogs

    notifier = Notifier(str(tmp_path / "missing"))
    with capturedLogs() as events:
        assert notifier.send("READY=1") is False
        assert notifier.send("WATCHDOG=1") is False
    assert [e["event"] for e in events if "event" in e] == ["notify_failed"]
    notifier.close()
