"""Native memory upkeep: glibc's malloc made to give memory back, so a long-running daemon's
resident size follows its load instead of its worst moment.

Python objects over 512 bytes, OpenSSL's state for every TLS connection and the C parts of
Twisted's I/O come from the C library's malloc.  glibc keeps what they free for reuse: in the
main heap it returns only the free space at its very top, and each thread that allocates gets
an arena of its own (up to 8 per CPU), which holds on to its memory the same way.  After a
burst (every IMAP session and account reconnecting over TLS at once when the mail server
restarts) the freed space stays resident, and the next burst, landing elsewhere, adds to it.

So, where the C library is glibc:

* at start-up the number of malloc arenas is capped (``ARENA_MAX``), before the thread pool
  starts: fewer heaps for freed memory to be stranded in.  An operator's own
  ``MALLOC_ARENA_MAX`` (or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``) wins.
* every ``TRIM_EVERY_S`` seconds the reactor calls ``malloc_trim(0)``, which hands every free
  page of every arena back to the kernel (well under a millisecond at this daemon's size).

Elsewhere (musl, macOS, the BSDs) this does nothing.  Python's own small-object allocator
(pymalloc) keeps its pools whatever malloc does; that part is not touched here.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="mailsocketd")

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
ARENA_MAX = 2  # malloc arenas: the main one and one for the thread pool's threads
TRIM_EVERY_S = 10.0  # as often as jemalloc, by default, purges the pages freed 10 s ago


@dataclass(frozen=True)
class Malloc:
    """The two glibc calls used here, typed (``mallopt`` and ``malloc_trim`` return 1 on
    success, or when memory was released, and 0 otherwise)."""

    mallopt: Callable[[int, int], int]
    malloc_trim: Callable[[int], int]


def glibc_malloc(libc: ctypes.CDLL | None = None) -> Malloc | None:
    """glibc's ``mallopt`` and ``malloc_trim``, or None where the C library is not glibc or
    lacks either (then there is nothing to do)."""
    if libc is None:
        try:
            if not os.confstr("CS_GNU_LIBC_VERSION"):
                return None
        except (ValueError, OSError):  # not a glibc system: the name is unknown there
            return None
        libc = ctypes.CDLL(None)  # the symbols already in the process: its C library
    mallopt = getattr(libc, "mallopt", None)
    trim = getattr(libc, "malloc_trim", None)
    if mallopt is None or trim is None:
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call_mallopt(param: int, value: int) -> int:
        return int(mallopt(param, value))

    def call_trim(pad: int) -> int:
        return int(trim(pad))

    return Malloc(call_mallopt, call_trim)


def arena_max_set_by_operator(environ: Mapping[str, str]) -> bool:
    """Whether the environment already chose the arena count (glibc read it at start)."""
    return ("MALLOC_ARENA_MAX" in environ
            or "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", ""))


def cap_arenas(malloc: Malloc | None, environ: Mapping[str, str] | None = None,
               arenas: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` unless the environment set it; True if
    capped here.  Call it before threads start (arenas already made are kept)."""
    env = os.environ if environ is None else environ
    if malloc is None or arena_max_set_by_operator(env):
        return False
    return malloc.mallopt(M_ARENA_MAX, arenas) == 1


class MemoryUpkeep(Service):
    """Every ``every_s`` seconds, from the reactor, ``malloc_trim(0)``: free pages go back to
    the kernel.  A failure is logged and the next round still runs."""

    def __init__(self, malloc: Malloc | None, clock: IReactorTime,
                 every_s: float = TRIM_EVERY_S, arenas_capped: bool = False,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.malloc = malloc
        self.clock = clock
        self.every_s = every_s
        self.arenas_capped = arenas_capped
        self.timer = timer
        self.trims = 0
        self.released = 0  # trims after which malloc said it gave memory back
        self.last_trim_s: float | None = None
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.malloc is None:
            log.debug("malloc upkeep: the C library is not glibc; nothing to do",
                      event="malloc_upkeep")
            return
        log.debug("malloc upkeep: malloc_trim every {every_s:g} s; arenas {arenas}",
                  event="malloc_upkeep", every_s=self.every_s,
                  arenas=(f"capped at {ARENA_MAX}" if self.arenas_capped
                          else "as the environment or glibc sets them"))
        self._loop = LoopingCall(self.trim_once)
        self._loop.clock = self.clock
        self._loop.start(self.every_s, now=False)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def trim_once(self) -> None:
        """One ``malloc_trim(0)``, timed."""
        if self.malloc is None:
            return
        started = self.timer()
        try:
            released = self.malloc.malloc_trim(0)
        except Exception:
            log.failure("malloc_trim failed")
            return
        self.last_trim_s = self.timer() - started
        self.trims += 1
        self.released += 1 if released else 0


def memory_upkeep(clock: IReactorTime, every_s: float = TRIM_EVERY_S) -> MemoryUpkeep:
    """The daemon's upkeep: arenas capped now (before the thread pool starts), the trim
    timer from when the service starts."""
    malloc = glibc_malloc()
    return MemoryUpkeep(malloc, clock, every_s, arenas_capped=cap_arenas(malloc))
