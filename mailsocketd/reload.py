"""Reloading the configuration (SIGHUP, ``systemctl reload``) without dropping anyone.

The daemon's settings are one immutable ``Config``.  A reload reads the file again (with the
same command-line options over it as at start-up: the command line keeps precedence), validates
the whole of it as start-up does, and hands old and new Config to every registered *part* of
the service tree (listeners, line service, mail bridge, accounts, log, metrics...).  It is all
or nothing, in two phases:

1. ``prepare(old, new)``: each part does what can fail (bind a new listener, read a renewed TLS
   certificate) and returns a :class:`Change`; a ``ReloadError`` aborts the reload: the Changes
   already prepared are undone and the daemon runs on, unchanged, with the one-line reason in
   the log (``reload_failed``).
2. ``commit()``: every Change is applied; none can fail the reload any more.

Connections, logged-in sessions and watches are not touched: they carry on with what they were
opened with; new ones get the new settings.  SIGHUPs that come during a reload coalesce into
one more reload after it.  ``on_reloading``/``on_reloaded`` let systemd know
(``RELOADING=1``/``READY=1``).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from mailsocketd.config import Config

__all__ = ["Change", "ConfigPart", "ReloadError", "Reloader", "SighupReload", "nothing"]


class ReloadError(Exception):
    """Why a reload cannot be applied, as one line for the log."""


def _nothing() -> None:
    return None


def _no_news() -> Sequence[str] | None:
    return None


@dataclass(frozen=True)
class Change:
    """What one part will do for a reload: ``commit`` applies it (must not fail; it may return
    lines of news for the log), ``abort`` undoes what ``prepare`` already did (another part
    refused the new configuration)."""

    commit: Callable[[], Sequence[str] | None] = _no_news
    abort: Callable[[], None] = _nothing
    summary: tuple[str, ...] = field(default=())  # what changes, for the reloaded event


def nothing() -> Change:
    """A Change that changes nothing."""
    return Change()


# A part of the service tree: given the running and the new Config, what it will do.
ConfigPart = Callable[[Config, Config], "Change | Awaitable[Change]"]


class _Reactor(Protocol):
    def callFromThread(self, callable: Callable[..., Any], *args: object,
                       **kw: object) -> None: ...
    def callWhenRunning(self, callable: Callable[..., Any], *args: object,
                        **kw: object) -> Any: ...


class Reloader:
    """Holds the running Config and applies new ones (see the module docstring)."""

    log = Logger()

    def __init__(self, config: Config, load: Callable[[], Config]) -> None:
        self.config = config
        self._load = load
        self._parts: list[tuple[str, ConfigPart]] = []
        self._running: Deferred[bool] | None = None
        self._again = False
        self.on_reloading: list[Callable[[], None]] = []
        self.on_reloaded: list[Callable[[bool], None]] = []  # called with "was it applied"
        self.reloads = 0  # applied
        self.failures = 0

    def add(self, name: str, part: ConfigPart) -> None:
        """Register a part; parts are prepared in the order they were added."""
        self._parts.append((name, part))

    def request(self) -> Deferred[bool]:
        """Reload now, or after the reload under way (requests meanwhile make one more).
        Fires with whether the last reload was applied; never fails."""
        if self._running is not None:
            self._again = True
            return self._running
        running = ensureDeferred(self._reload_until_settled())
        if not running.called:  # (a reload that needed no waiting is over already)
            self._running = running
        return running

    async def _reload_until_settled(self) -> bool:
        try:
            applied = await self._reload_once()
            while self._again:
                self._again = False
                applied = await self._reload_once()
            return applied
        finally:
            self._running = None

    async def _reload_once(self) -> bool:
        for hook in self.on_reloading:
            hook()
        try:
            applied = await self._apply_new()
        except Exception:  # a bug of ours: keep serving with what runs
            self.log.failure("reload failed unexpectedly", event="reload_failed")
            applied = False
        if applied:
            self.reloads += 1
        else:
            self.failures += 1
        for done in self.on_reloaded:
            done(applied)
        return applied

    async def _apply_new(self) -> bool:
        try:
            new = self._load()
        except Exception as e:  # every problem names its key; all of them on one line
            problems = getattr(e, "problems", None)
            self._refused("; ".join(problems) if isinstance(problems, list) and problems
                          else str(e))
            return False
        old = self.config
        prepared: list[Change] = []
        for name, part in self._parts:
            try:
                result = part(old, new)
                change = await result if not isinstance(result, Change) else result
            except ReloadError as e:
                for undo in reversed(prepared):
                    undo.abort()
                self._refused(f"{name}: {e}")
                return False
            except BaseException:
                for undo in reversed(prepared):
                    undo.abort()
                raise
            prepared.append(change)
        self.config = new
        changed: list[str] = []
        for change in prepared:
            changed.extend(change.summary)
            try:
                changed.extend(change.commit() or ())
            except Exception:  # a bug of ours; the other parts still get their change
                self.log.failure("applying the reloaded configuration failed in part",
                                 event="reload_failed")
        self.log.info("configuration reloaded: {changes}",
                      changes="; ".join(changed) if changed else "nothing changed",
                      event="reloaded")
        return True

    def _refused(self, reason: str) -> None:
        reason = " ".join(reason.split())  # one line, whatever the error held
        self.log.error("reload refused, nothing changed: {reason}", reason=reason,
                       event="reload_failed")


class SighupReload(Service):
    """Reloads on SIGHUP.  twistd leaves SIGHUP at its default, which ends the process, and the
    reactor installs only SIGINT, SIGTERM and SIGCHLD when it starts: so the handler is
    installed before the listeners are bound (``install``, from tap.makeService), and a SIGHUP
    sent as soon as the port answers is a reload, never the end.  The handler only asks the
    reactor thread to reload, which happens once the reactor runs."""

    def __init__(self, reloader: Reloader, reactor: _Reactor) -> None:
        self.reloader = reloader
        self.reactor = reactor
        self._previous: Any = None

    def install(self) -> None:
        """Take SIGHUP over (once)."""
        if self._previous is None:
            self._previous = signal.signal(signal.SIGHUP, self._received)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.install()

    def _received(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reloader.request)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._previous is not None:
            # Ignored, not fatal, while shutting down: a late reload must not kill the exit.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            self._previous = None
