"""Logging for twistd: one write per 50 ms, and lean events for the busy paths.

twistd's own file observers format the timestamp field by field and flush the file for every
event, which costs a busy server more than serving a request.  :class:`LogWriter` writes the
same lines (twistd's classic text, or JSON with ``[log] format = "json"``) but formats the
timestamp once a second and gathers the events of 50 ms into one write and one flush.  The
plugin points twistd's ``--logger`` at :func:`text_observer` or :func:`json_observer` unless
``--logger`` or ``--syslog`` is given; they write where twistd would have written: the
``--logfile`` (rotated every 1,000,000 bytes, and on SIGUSR1; ``[log] keep_files`` old files
kept, older ones deleted), standard output with ``-n`` and no ``--logfile`` (or ``--logfile
-``), else ``twistd.log``.

SIGUSR1 works with logrotate too (:class:`ReopeningLogFile`): when the file at the configured
path is no longer the one being written (logrotate moved it away), a new one is opened there,
with the old one's mode; otherwise twistd's own rotation runs.  A reload changes the format and
``keep_files`` of the running writers (:func:`reconfigure`).

:class:`Events` emits events whose message is already rendered (connections, commands): an
event whose format holds no braces is its own text, so no observer has to format it.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from time import time
from typing import IO, Any, Protocol

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    eventAsJSON,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from twisted.python import threadable
from twisted.python.logfile import LogFile
from zope.interface import implementer

KEEP_FILES = 10  # old log files kept by default ([log] keep_files)
# Set by the plugin's option parsing before twistd calls one of the observer factories.
_target: dict[str, object] = {"logfile": None, "nodaemon": True, "keep_files": KEEP_FILES}
# The writers and files twistd's observer factories made, for a reload and SIGUSR1.
_writers: list[LogWriter] = []
_files: list[ReopeningLogFile] = []


def configure_target(logfile: str | None, nodaemon: bool, keep_files: int = KEEP_FILES) -> None:
    """Remember where twistd was told to log, and how many old log files to keep."""
    _target["logfile"] = logfile
    _target["nodaemon"] = nodaemon
    _target["keep_files"] = keep_files


class _Reactor(Protocol):
    """What LogWriter needs of the reactor."""

    @property
    def running(self) -> bool: ...
    def callLater(self, delay: float, callable: Callable[..., Any], *args: object,
                  **kw: object) -> Any: ...
    def callFromThread(self, callable: Callable[..., Any], *args: object,
                       **kw: object) -> None: ...
    def addSystemEventTrigger(self, phase: str, eventType: str, callable: Callable[..., Any],
                              *args: object, **kw: object) -> Any: ...


class ClassicText:
    """twistd's text line (``TIME [SYSTEM] MESSAGE``), the timestamp formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def stamp(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._stamp = formatTime(second)
            self._second = second
        return self._stamp

    def __call__(self, event: LogEvent) -> str | None:
        text = event.get("log_format")
        if (type(text) is not str or "{" in text or "}" in text or "log_failure" in event
                or not text):
            return formatEventAsClassicLogText(event, formatTime=self.stamp)
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
        if "\n" in text:
            text = text.replace("\n", "\n\t")
        return f"{self.stamp(event.get('log_time'))} [{system}] {text}\n"


def json_line(event: LogEvent) -> str:
    """One event as one line of JSON, as twistd's JSON observer writes it."""
    return eventAsJSON(event) + "\n"


@implementer(ILogObserver)
class LogWriter:
    """A log observer that gathers events and writes them at most every ``delay`` seconds
    (one write and one flush for all of them), so a busy server does not pay a system call
    per event.

    Events from other threads, and events while the reactor is not running (start-up, after
    shutdown), are written at once, after what is pending, so the order holds.  What is pending
    when the reactor stops is written by a shutdown trigger.
    """

    def __init__(self, out: IO[str], render: Callable[[LogEvent], str | None],
                 reactor: _Reactor, delay: float = 0.05) -> None:
        self._out = out
        self._delay = delay
        self._render = render
        self._reactor = reactor
        self._pending: list[str] = []
        # Re-entrant: a signal handler (SIGTERM's "Received SIGTERM") can log while this
        # thread is in the middle of a write.
        self._lock = threading.RLock()
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def __call__(self, event: LogEvent) -> None:
        text = self._render(event)
        if not text:
            return
        if self._reactor.running and threadable.isInIOThread():
            with self._lock:
                pending = self._pending
                pending.append(text)
                if len(pending) == 1:
                    self._reactor.callLater(self._delay, self.flush)
            return
        with self._lock:
            self._write_pending()
            self._out.write(text)
            self._out.flush()

    def set_render(self, render: Callable[[LogEvent], str | None]) -> None:
        """Write the next events with ``render`` (a reload changed ``[log] format``)."""
        with self._lock:
            self._render = render

    def flush(self) -> None:
        """Write and flush what is pending."""
        with self._lock:
            if self._pending:
                self._write_pending()
                self._out.flush()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []  # what is logged meanwhile waits its turn
        if pending:
            self._out.write("".join(pending))


class ReopeningLogFile(LogFile):
    """twistd's rotating log file, which also follows logrotate: see :meth:`reopen_or_rotate`."""

    def _open_identity(self) -> tuple[int, int, int]:
        """Device, inode and mode of the file being written (``_file``: Twisted-private)."""
        st = os.fstat(self._file.fileno())
        return st.st_dev, st.st_ino, stat.S_IMODE(st.st_mode)

    def reopen_or_rotate(self) -> str:
        """SIGUSR1: if the file was moved away (or replaced), open the one at the configured
        path (a new one gets the old one's mode; one logrotate created keeps its own);
        else rotate as twistd does.  Says which it did."""
        mine = self._open_identity()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            here = None
        else:
            here = (st.st_dev, st.st_ino)
        if here == mine[:2]:
            self.rotate()  # type: ignore[no-untyped-call]
            return "rotated"
        # Twisted chmods the file it opens to defaultMode: let it do so only to one it creates.
        self.defaultMode = mine[2] if here is None else None
        self.reopen()  # type: ignore[no-untyped-call]
        return "reopened"


def _open_target(reactor: _Reactor) -> IO[str]:
    logfile = _target["logfile"]
    if logfile == "-" or (not logfile and _target["nodaemon"]):
        _on_sigusr1(reactor, None)
        return sys.stdout
    path = str(logfile) if logfile else "twistd.log"
    # At each rotation (size or SIGUSR1) the old files move up one number (name.1 is the
    # newest); those past keep_files are deleted, so the log's disk use is bounded.
    logpath = os.path.abspath(path)
    handle = ReopeningLogFile(  # type: ignore[no-untyped-call]
        os.path.basename(logpath), os.path.dirname(logpath),
                              maxRotatedFiles=_target["keep_files"])
    _files.append(handle)
    _on_sigusr1(reactor, handle)
    text: IO[str] = handle  # type: ignore[assignment]  # LogFile takes text
    return text


def _on_sigusr1(reactor: _Reactor, handle: ReopeningLogFile | None) -> None:
    """As twistd does for its own log file, SIGUSR1 starts a new file (logrotate's signal);
    when logging to standard output it is only noted (its default would end the process)."""
    if signal.getsignal(signal.SIGUSR1) not in (None, signal.SIG_DFL):
        return

    def reopen() -> None:
        if handle is None:
            Events(__name__).info("log_reopen", "SIGUSR1: logging to standard output, no "
                                  "file to reopen")
            return
        for writer in _writers:
            writer.flush()  # what was logged before the signal goes to the old file
        done = handle.reopen_or_rotate()
        Events(__name__).info("log_reopen", f"SIGUSR1: log file {done}", path=handle.path,
                              outcome=done)

    def received(signum: int, frame: object) -> None:
        reactor.callFromThread(reopen)

    signal.signal(signal.SIGUSR1, received)


def reconfigure(log_format: str, keep_files: int) -> bool:
    """Apply a reloaded ``[log] format`` and ``keep_files`` to the running writers; False when
    twistd's observers are not ours (``--logger``, ``--syslog``)."""
    render: Callable[[LogEvent], str | None] = ClassicText() if log_format == "text" \
        else json_line
    for writer in _writers:
        writer.set_render(render)
    for handle in _files:
        handle.maxRotatedFiles = keep_files
    return bool(_writers)


def _writer(render: Callable[[LogEvent], str | None]) -> ILogObserver:
    # twistd calls the factory once its reactor is installed.
    from twisted.internet import reactor  # noqa: PLC0415
    target = _open_target(reactor)  # type: ignore[arg-type]
    writer = LogWriter(target, render, reactor)  # type: ignore[arg-type]
    _writers.append(writer)
    return writer


def text_observer() -> ILogObserver:
    """A twistd ``--logger`` factory: twistd's text lines."""
    return _writer(ClassicText())


def json_observer() -> ILogObserver:
    """A twistd ``--logger`` factory: one JSON object per line."""
    return _writer(json_line)


class Events:
    """Emits events with their message already rendered, for about a third of what
    ``Logger.info`` costs.

    ``Logger.info`` builds a new Logger per attribute access and leaves a template for every
    observer to format field by field.  This builds the event once: the message pre-rendered
    (braces escaped, so it is its own format) and the ``log_system`` the text observer would
    otherwise derive.  The text line is the one ``Logger.info`` writes; JSON lines keep the
    ``event`` name and the fields, with the rendered message as ``log_format``.
    """

    def __init__(self, namespace: str, observer: ILogObserver | None = None) -> None:
        self._namespace = namespace
        self._systems = {level: f"{namespace}#{level.name}" for level in LogLevel.iterconstants()}
        self._observer = globalLogPublisher if observer is None else observer

    def emit(self, level: LogLevel, name: str, message: str, **fields: object) -> None:
        """Log event ``name`` with this message (already safe to show) and fields."""
        if "{" in message or "}" in message:
            message = message.replace("{", "{{").replace("}", "}}")
        fields.update(event=name, log_level=level, log_namespace=self._namespace,
                      log_system=self._systems[level], log_format=message, log_time=time())
        self._observer(fields)

    def info(self, name: str, message: str, **fields: object) -> None:
        self.emit(LogLevel.info, name, message, **fields)

    def warn(self, name: str, message: str, **fields: object) -> None:
        self.emit(LogLevel.warn, name, message, **fields)

