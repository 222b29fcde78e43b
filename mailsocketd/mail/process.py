"""Running a helper program (password command, new-mail hook, sendmail) without a shell, bounded.

The argv is passed as a list straight to the reactor's ``spawnProcess``: no shell ever parses
it.  Standard input gets the given bytes (often none) and is closed at once, standard output
and standard error are kept only up to a cap each (standard error not at all unless asked: it
might echo what the program was given), and the program is killed when it outlives its
timeout, so a stuck helper can neither hang the daemon nor fill its memory.  This is the
daemon's one way of running a program.

Each program runs in a process group of its own (started through ``setsid``, as
``reactor.spawnProcess`` has no ``start_new_session``), so that what it starts goes with it:

* it is finished when the program exits, not when its output pipes close: a child it left
  behind (``sleep 400 &``) holding them no longer holds up the result (what the program wrote
  before it exited is kept);
* then whatever is left of its group is killed: a helper that means to leave something running
  must start it in a session of its own (``setsid``), which takes it out of our hands;
* on timeout, on cancel and when the daemon stops, the whole group is killed (SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessProtocol, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = ["PASSED_ENVIRONMENT", "ProcessReactor", "ProcessResult", "ProcessStartError",
           "run_process", "scrubbed_environment"]

DEFAULT_MAX_OUTPUT = 65536
EXIT_GRACE = 1.0  # seconds the pipes may stay open after the program exited (an escaped child)
# util-linux setsid(1) calls setsid() and execs the program: same pid, so exit status and
# signals are the program's own, and its pid is its process group.  Without it (not Linux),
# programs run in the daemon's group and only the program itself is killed.
SETSID = shutil.which("setsid") or ("/usr/bin/setsid" if os.path.exists("/usr/bin/setsid")
                                    else None)
# What a helper (new-mail hook, sendmail) gets of the daemon's environment: harmless variables
# and the session-bus ones desktop notifiers need.  Never the rest: it may hold a password
# (``password_env``).
PASSED_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
                      "DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR",
                      "DBUS_SESSION_BUS_ADDRESS")


def scrubbed_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The PASSED_ENVIRONMENT part of ``base``, with a default PATH when it has none."""
    env = {k: base[k] for k in PASSED_ENVIRONMENT if k in base}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class ProcessReactor(Protocol):
    """What running a helper needs of the reactor: IReactorProcess's ``spawnProcess`` and
    IReactorTime's clock (a zope interface cannot name both, so this Protocol does)."""

    # IReactorProcess.spawnProcess; the optional arguments keyword-only, as run_process passes them
    def spawnProcess(self, processProtocol: IProcessProtocol, executable: bytes | str,
                     args: Sequence[bytes | str], *, env: Mapping[str, str] | None = None,
                     path: bytes | str | None = None, uid: int | None = None,
                     gid: int | None = None, usePTY: bool = False,
                     childFDs: Mapping[int, int | str] | None = None) -> IProcessTransport: ...
    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> IDelayedCall: ...


class ProcessStartError(Exception):
    """The program could not be started at all (missing, not executable)."""


@dataclass(frozen=True)
class ProcessResult:
    """How a helper ended: exit code (None if a signal ended it), what it wrote (each stream up
    to its cap; ``truncated``: stdout had more), and whether it outlived ``timeout``."""

    exit_code: int | None
    signal: int | None
    stdout: bytes = field(default=b"", repr=False)  # may be a password
    stderr: bytes = field(default=b"", repr=False)
    timed_out: bool = False
    truncated: bool = False
    timeout: float | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """``exited with status 2``, ``was killed by signal 9``,
        ``timed out after 60 s and was killed``."""
        if self.timed_out:
            after = "" if self.timeout is None else f" after {self.timeout:g} s"
            return f"timed out{after} and was killed"
        if self.exit_code is not None:
            return f"exited with status {self.exit_code}"
        return f"was killed by signal {self.signal}"


class _Capped:
    """The first ``limit`` bytes of one output stream, and whether more came."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = max(self.limit - len(self.data), 0)
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        self.data += data


class _Collector(ProcessProtocol):
    """Feeds stdin, keeps capped stdout and stderr; fires ``done`` with a ProcessResult."""

    def __init__(self, stdin: bytes, max_output: int, max_stderr: int, timeout: float) -> None:
        self._stdin = stdin
        self._stdout = _Capped(max_output)
        self._stderr = _Capped(max_stderr)
        self._timeout = timeout
        self.done: Deferred[ProcessResult] = Deferred(self._cancel)
        self.timed_out = False
        self.timer: IDelayedCall | None = None
        self.group: int | None = None  # the program's process group, when it has its own
        self.clock: ProcessReactor | None = None
        self._exited: Failure | None = None

    def connectionMade(self) -> None:
        stdin, self._stdin = self._stdin, b""  # not kept: it may be a whole message
        if self.transport is not None:
            if stdin:
                self.transport.write(stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._stdout.add(data)

    def errReceived(self, data: bytes) -> None:
        self._stderr.add(data)

    def _kill(self) -> None:
        """SIGKILL the program and everything in its process group."""
        self._kill_group()
        with contextlib.suppress(Exception):  # it ended meanwhile: processEnded follows
            if self.transport is not None and self._exited is None:
                self.transport.signalProcess("KILL")

    def _kill_group(self) -> None:
        if self.group is not None:
            with contextlib.suppress(OSError):  # nothing left in it
                os.killpg(self.group, signal.SIGKILL)

    def time_out(self) -> None:
        """The timeout: end the program the hard way."""
        self.timer = None
        self.timed_out = True
        self._kill()

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _cancel(self, done: Deferred[ProcessResult]) -> None:
        """Cancelling the result kills the program's group and forgets it."""
        self._stop_timer()
        self._kill()
        if self._exited is not None:  # a child out of the group may hold the pipes
            self._close_pipes()

    def processExited(self, reason: Failure) -> None:
        """The program exited: kill what it left in its group (pipe holders among them), and
        give the pipes EXIT_GRACE to close (a child that left the group may hold them)."""
        self._exited = reason
        self._stop_timer()
        self._kill_group()
        if not self.done.called and self.clock is not None:
            self.timer = self.clock.callLater(EXIT_GRACE, self._close_pipes)

    def _close_pipes(self) -> None:
        """Stop waiting for the pipes: close our ends; processEnded follows."""
        self.timer = None
        if self.transport is not None:
            self.transport.loseConnection()

    def processEnded(self, reason: Failure) -> None:
        self._stop_timer()
        if self.done.called:  # cancelled
            return
        if self._exited is not None:
            reason = self._exited
        code: int | None = 0
        sig: int | None = None
        if isinstance(reason.value, ProcessTerminated):
            code, sig = reason.value.exitCode, reason.value.signal
        self.done.callback(ProcessResult(
            code, sig, stdout=bytes(self._stdout.data), stderr=bytes(self._stderr.data),
            timed_out=self.timed_out, truncated=self._stdout.truncated, timeout=self._timeout))


def run_process(reactor: ProcessReactor, argv: Sequence[str], env: Mapping[str, str],
                timeout: float, *, stdin: bytes = b"", max_output: int = DEFAULT_MAX_OUTPUT,
                max_stderr: int = 0) -> Deferred[ProcessResult]:
    """Run ``argv`` (no shell) with ``env`` and ``stdin`` on its standard input; fire with its
    ProcessResult, holding at most ``max_output`` bytes of stdout and ``max_stderr`` of stderr.

    It runs in a process group of its own (see the module doc): the result comes when it
    exits, and what it left in its group is killed then.  The group is killed (SIGKILL) after
    ``timeout`` seconds or when the result is cancelled.  Fails with ProcessStartError when the
    program cannot be started.
    """
    collector = _Collector(stdin, max_output, max_stderr, timeout)
    collector.clock = reactor
    try:
        program = _executable(argv[0], env)  # argv[0] itself is passed on as configured
        if SETSID is None:
            reactor.spawnProcess(collector, program, list(argv), env=dict(env))
        else:  # setsid(1) finds argv[0] in env's PATH, as _executable just did
            reactor.spawnProcess(collector, SETSID, [SETSID, "--", *argv], env=dict(env))
            collector.group = getattr(collector.transport, "pid", None)
    except OSError as e:
        return fail(ProcessStartError(f"cannot run {argv[0]}: {e.strerror or e}"))
    if not collector.done.called:
        collector.timer = reactor.callLater(timeout, collector.time_out)
    return collector.done


def _executable(program: str, env: Mapping[str, str]) -> str:
    """The file ``program`` names (searched in ``env``'s PATH when it has no ``/``); OSError
    when it cannot be run (setsid would only report that as its own exit status)."""
    path = program if "/" in program else shutil.which(program, path=env.get("PATH", ""))
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(2, os.strerror(2))
    if not os.access(path, os.X_OK):
        raise PermissionError(13, os.strerror(13))
    return path
