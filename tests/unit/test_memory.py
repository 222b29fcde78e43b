"""Native memory upkeep (mailsocketd/memory.py): the arena cap at start-up and malloc_trim on a
timer, with the glibc calls injected and time on task.Clock; and the real glibc binding, whose
calls are harmless in a test process."""

from __future__ import annotations

import os
import signal

from logrig import global_log_events
from twisted.application.service import MultiService
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from mailsocketd import memory
from mailsocketd.memory import M_ARENA_MAX, Malloc, MemoryUpkeep, cap_arenas, glibc_malloc


class FakeMalloc:
    """Records the calls; ``trim_result`` is what malloc_trim returns (1: memory released)."""

    def __init__(self, trim_result: int = 1, fail: bool = False) -> None:
        self.mallopts: list[tuple[int, int]] = []
        self.trims: list[int] = []
        self.trim_result = trim_result
        self.fail = fail

    def mallopt(self, param: int, value: int) -> int:
        self.mallopts.append((param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.trims.append(pad)
        if self.fail:
            raise OSError("trim failed")
        return self.trim_result

    def bound(self) -> Malloc:
        return Malloc(self.mallopt, self.malloc_trim)


def test_trim_runs_every_interval_from_the_clock_not_at_start():
    fake, clock = FakeMalloc(), Clock()
    upkeep = MemoryUpkeep(fake.bound(), clock, every_s=60.0)
    upkeep.startService()
    assert fake.trims == []
    clock.advance(59.9)
    assert fake.trims == []
    clock.advance(0.1)
    assert fake.trims == [0]  # malloc_trim(0): keep no padding at the top of the heap
    clock.pump([60.0, 60.0])
    assert fake.trims == [0, 0, 0]
    assert (upkeep.trims, upkeep.released) == (3, 3)
    assert upkeep.last_trim_s is not None and upkeep.last_trim_s >= 0
    upkeep.stopService()
    clock.advance(600)
    assert len(fake.trims) == 3
    assert not clock.getDelayedCalls()


def test_a_trim_that_released_nothing_is_counted_as_such():
    fake, clock = FakeMalloc(trim_result=0), Clock()
    upkeep = MemoryUpkeep(fake.bound(), clock, every_s=10.0)
    upkeep.startService()
    clock.pump([10.0, 10.0])
    assert (upkeep.trims, upkeep.released) == (2, 0)
    upkeep.stopService()


def test_a_failing_trim_is_logged_and_the_timer_goes_on():
    fake, clock = FakeMalloc(fail=True), Clock()
    with global_log_events() as events:
        upkeep = MemoryUpkeep(fake.bound(), clock, every_s=10.0)
        upkeep.startService()
        clock.pump([10.0, 10.0])
    assert len(fake.trims) == 2
    assert upkeep.trims == 0
    assert [e["log_format"] for e in events if "log_failure" in e] == ["malloc_trim failed"] * 2
    upkeep.stopService()


def test_without_glibc_nothing_is_scheduled_and_it_says_so_at_debug_level():
    clock = Clock()
    with global_log_events() as events:
        upkeep = MemoryUpkeep(None, clock)
        upkeep.startService()
    assert not clock.getDelayedCalls()
    upkeep.trim_once()
    assert upkeep.trims == 0
    said = [e for e in events if e.get("event") == "malloc_upkeep"]
    assert len(said) == 1 and said[0]["log_level"].name == "debug"
    upkeep.stopService()


def test_start_is_logged_once_at_debug_level_with_the_interval():
    clock = Clock()
    with global_log_events() as events:
        upkeep = MemoryUpkeep(FakeMalloc().bound(), clock, every_s=60.0, arenas_capped=True)
        upkeep.startService()
        clock.advance(120)
    upkeep.stopService()
    said = [e for e in events if e.get("event") == "malloc_upkeep"]
    assert len(said) == 1
    assert said[0]["log_level"].name == "debug"
    assert said[0]["every_s"] == 60.0 and "capped at 2" in said[0]["arenas"]


def test_arenas_are_capped_unless_the_environment_chose():
    fake = FakeMalloc()
    assert cap_arenas(fake.bound(), environ={}) is True
    assert fake.mallopts == [(M_ARENA_MAX, memory.ARENA_MAX)]
    for environ in ({"MALLOC_ARENA_MAX": "4"},
                    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0:glibc.malloc.arena_max=1"}):
        fake = FakeMalloc()
        assert cap_arenas(fake.bound(), environ=environ) is False
        assert fake.mallopts == []
    assert cap_arenas(None, environ={}) is False


def test_a_libc_without_the_calls_gives_none():
    class NoMalloc:  # musl-like: neither mallopt nor malloc_trim
        pass

    assert glibc_malloc(NoMalloc()) is None  # type: ignore[arg-type]


def test_the_real_glibc_binding_trims():
    """Debian's C library is glibc: the binding is there and malloc_trim runs."""
    assert (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    malloc = glibc_malloc()
    assert malloc is not None
    assert malloc.malloc_trim(0) in (0, 1)


def test_the_daemon_trims_on_its_reactor_from_start_to_stop():
    """makeService wires the upkeep: once started, the reactor's clock drives the trims."""
    from mailsocketd.tap import Options, makeService

    options = Options()
    options.parseOptions(["--listen", "tcp:7003:interface=127.0.0.1"])
    reactor = MemoryReactorClock()
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        top = makeService(options, reactor)
        assert isinstance(top, MultiService)
        upkeep = [s for s in top if isinstance(s, MemoryUpkeep)]
        assert len(upkeep) == 1
        top.privilegedStartService()
        top.startService()
        reactor.advance(memory.TRIM_EVERY_S)
        assert upkeep[0].trims == 1
        top.stopService()
        reactor.advance(memory.TRIM_EVERY_S)
        assert upkeep[0].trims == 1
    finally:
        signal.signal(signal.SIGHUP, previous)
