"""The reload mechanism without sockets: all parts or none, one log line, coalesced requests,
and the SIGHUP handler installed only once the reactor runs."""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from mailsocketd.config import Config, ConfigError, LineConfig
from mailsocketd.reload import Change, Reloader, ReloadError, SighupReload
from mailsocketd.reload_parts import changed_keys

OLD = Config()
NEW = replace(OLD, line=replace(OLD.line, idle_timeout=5.0))


class Part:
    """Records what the reloader asks of it."""

    def __init__(self, name: str, log: list[str], refuse: str | None = None) -> None:
        self.name, self.log, self.refuse = name, log, refuse

    def __call__(self, old: Config, new: Config) -> Change:
        self.log.append(f"{self.name} prepare {old.line.idle_timeout:g}->"
                        f"{new.line.idle_timeout:g}")
        if self.refuse:
            raise ReloadError(self.refuse)
        def commit() -> list[str]:
            self.log.append(f"{self.name} commit")
            return [f"{self.name} news"]

        return Change(commit=commit, abort=lambda: self.log.append(f"{self.name} abort"),
                      summary=(f"{self.name} changed",))


def reloader(load: Any, *parts: Part) -> Reloader:
    r = Reloader(OLD, load)
    for part in parts:
        r.add(part.name, part)
    return r


def test_every_part_is_prepared_then_every_one_committed() -> None:
    log: list[str] = []
    r = reloader(lambda: NEW, Part("a", log), Part("b", log))
    with capturedLogs() as events:
        d = r.request()
    assert d.called and d.result is True
    assert log == ["a prepare 300->5", "b prepare 300->5", "a commit", "b commit"]
    assert r.config is NEW and r.reloads == 1
    [event] = [e for e in events if e.get("event") == "reloaded"]
    assert formatEvent(event) == ("configuration reloaded: a changed; a news; b changed; "
                                  "b news")


def test_a_part_that_refuses_undoes_the_prepared_ones_and_nothing_changes() -> None:
    log: list[str] = []
    r = reloader(lambda: NEW, Part("a", log), Part("b", log, refuse="port 80 in use"),
                 Part("c", log))
    with capturedLogs() as events:
        d = r.request()
    assert d.result is False
    assert log == ["a prepare 300->5", "b prepare 300->5", "a abort"]
    assert r.config is OLD and r.failures == 1
    [event] = [e for e in events if e.get("event") == "reload_failed"]
    assert formatEvent(event) == "reload refused, nothing changed: b: port 80 in use"


def test_an_invalid_file_changes_nothing_and_says_why_in_one_line() -> None:
    log: list[str] = []

    def load() -> Config:
        raise ConfigError("line.idle_timeout", "expected a number >= 0,\n got str 'x'")

    r = reloader(load, Part("a", log))
    with capturedLogs() as events:
        assert r.request().result is False
    assert log == [] and r.config is OLD
    [event] = [e for e in events if e.get("event") == "reload_failed"]
    text = formatEvent(event)
    assert text == ("reload refused, nothing changed: line.idle_timeout: expected a number "
                    ">= 0, got str 'x'")


def test_requests_during_a_reload_make_one_more_after_it() -> None:
    waits: list[Deferred[Change]] = []
    loads: list[int] = []

    def slow(old: Config, new: Config) -> Deferred[Change]:
        d: Deferred[Change] = Deferred()
        waits.append(d)
        return d

    def load() -> Config:
        loads.append(1)
        return NEW

    r = Reloader(OLD, load)
    r.add("slow", slow)
    first = r.request()
    second, third = r.request(), r.request()
    assert not first.called and len(loads) == 1
    waits[0].callback(Change())
    assert len(loads) == 2  # one more for the two requests
    waits[1].callback(Change())
    assert first.called and second.called and third.called and r.reloads == 2
    later = r.request()  # a request after the reload is a new reload
    assert len(loads) == 3 and not later.called
    waits[2].callback(Change())
    assert later.called and r.reloads == 3


def test_systemd_hears_reloading_then_ready_even_when_refused() -> None:
    heard: list[str] = []
    r = reloader(lambda: NEW, Part("a", [], refuse="no"))
    r.on_reloading.append(lambda: heard.append("RELOADING=1"))
    r.on_reloaded.append(lambda applied: heard.append(f"READY=1 applied={applied}"))
    r.request()
    assert heard == ["RELOADING=1", "READY=1 applied=False"]


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.when_running: list[Any] = []

    def callWhenRunning(self, callable: Any, *args: object, **kw: object) -> Any:
        self.when_running.append(lambda: callable(*args, **kw))

    def callFromThread(self, callable: Any, *args: object, **kw: object) -> None:
        self.callLater(0, callable, *args, **kw)


def test_sighup_is_handled_from_start_reloads_when_the_reactor_runs_ignored_while_stopping(
        ) -> None:
    previous = signal.getsignal(signal.SIGHUP)
    reactor = FakeReactor()
    loads: list[int] = []
    def load() -> Config:
        loads.append(1)
        return NEW

    r = Reloader(OLD, load)
    service = SighupReload(r, reactor)
    try:
        service.startService()  # before the reactor runs: a SIGHUP then must not end it
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        assert loads == []  # the handler only asks the reactor thread
        reactor.advance(0)
        assert loads == [1]
        service.stopService()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.parametrize(("old", "new", "expected"), [
    (LineConfig(), LineConfig(max_connections=5, banner=True),
     ["line.banner", "line.max_connections"]),
    (LineConfig(), LineConfig(listen=("unix:/x",)), []),
    (None, LineConfig(), ["[line] added"]),
])
def test_changed_keys_name_what_a_reload_changes(old: Any, new: Any,
                                                 expected: list[str]) -> None:
    assert changed_keys("line", old, new, skip=("listen",)) == expected
