"""Running a helper program (password command, new-mail hook) without a shell, bounded.

The argv is passed as a list straight to the reactor's ``spawnProcess``: no shell ever parses
it.  Standard input is closed at once, standard error is dropped (it might echo what it was
given), standard output is kept only up to a cap, and the program is killed when it outlives
its timeout, so a stuck helper can neither hang the daemon nor fill its memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = ["ProcessResult", "ProcessStartError", "run_process"]


class ProcessStartError(Exception):
    """The program could not be started at all (missing, not executable)."""


@dataclass(frozen=True)
class ProcessResult:
    """How a helper ended: exit code (None if a signal ended it), its stdout, whether it hung."""

    exit_code: int | None
    signal: int | None
    stdout: bytes = field(repr=False)  # may be a password
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """``exited with status 2``, ``killed by signal 9``, ``timed out``."""
        if self.timed_out:
            return "timed out and was killed"
        if self.exit_code is not None:
            return f"exited with status {self.exit_code}"
        return f"was killed by signal {self.signal}"


class _Collector(ProcessProtocol):
    """Keeps up to ``max_output`` bytes of stdout; fires ``done`` with a ProcessResult."""

    def __init__(self, max_output: int) -> None:
        self._max_output = max_output
        self._chunks: list[bytes] = []
        self._size = 0
        self.done: Deferred[ProcessResult] = Deferred(self._cancel)
        self.truncated = False
        self.timed_out = False
        self.timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        room = self._max_output - self._size
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        self._chunks.append(data)
        self._size += len(data)

    def kill(self) -> None:
        """The timeout: end the program the hard way."""
        self.timer = None
        self.timed_out = True
        with contextlib.suppress(Exception):  # it ended meanwhile: processEnded follows
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _cancel(self, done: Deferred[ProcessResult]) -> None:
        """Cancelling the result kills the program and forgets it."""
        self._stop_timer()
        with contextlib.suppress(Exception):
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]

    def processEnded(self, reason: Failure) -> None:
        self._stop_timer()
        if self.done.called:  # cancelled
            return
        code: int | None = 0
        sig: int | None = None
        if isinstance(reason.value, ProcessTerminated):
            code, sig = reason.value.exitCode, reason.value.signal
        self.done.callback(ProcessResult(code, sig, b"".join(self._chunks), self.timed_out,
                                          self.truncated))


def run_process(reactor: Any, argv: Sequence[str], env: Mapping[str, str], timeout: float,
                max_output: int = 65536) -> Deferred[ProcessResult]:
    """Run ``argv`` (no shell) with ``env``; fire with its ProcessResult.

    Fails with ProcessStartError when the program cannot be started.  Cancelling the result
    kills the program.
    """
    collector = _Collector(max_output)
    try:
        reactor.spawnProcess(collector, argv[0], list(argv), env=dict(env))
    except OSError as e:
        return fail(ProcessStartError(f"cannot run {argv[0]}: {e.strerror or e}"))
    collector.timer = reactor.callLater(timeout, collector.kill)
    return collector.done
