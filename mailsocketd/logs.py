"""Log observers for twistd: JSON lines, one event per line.

``[log] format = "json"`` (or ``--log-format json``) makes the plugin point twistd's ``--logger``
at :func:`json_observer`, which writes where twistd would have written text: the ``--logfile``,
standard output with ``-n`` and no ``--logfile`` (or ``--logfile -``), else ``twistd.log``.

:class:`CommandEvents` emits the per-command event on a lean path: it is the one event logged per
request, so its cost decides what logging commands costs a busy server.
"""

from __future__ import annotations

import sys
from time import time
from typing import IO

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher, jsonFileLogObserver
from twisted.python.logfile import LogFile

# Set by the plugin's option parsing before twistd calls json_observer().
_target: dict[str, object] = {"logfile": None, "nodaemon": True}


def configure_json_target(logfile: str | None, nodaemon: bool) -> None:
    """Remember where twistd was told to log."""
    _target["logfile"] = logfile
    _target["nodaemon"] = nodaemon


def _open_target() -> IO[str]:
    logfile = _target["logfile"]
    if logfile == "-" or (not logfile and _target["nodaemon"]):
        return sys.stdout
    path = str(logfile) if logfile else "twistd.log"
    handle: IO[str] = LogFile.fromFullPath(path)
    return handle


def json_observer() -> ILogObserver:
    """A twistd ``--logger`` factory: one JSON object per line."""
    return jsonFileLogObserver(_open_target(), recordSeparator="")


class CommandEvents:
    """One ``command`` event per request (peer, command, outcome), for about two thirds of what
    ``Logger.info`` costs with twistd's observers.

    ``Logger.info`` builds a new Logger per attribute access and leaves a template for every
    observer to format field by field.  This builds the event once with only what observers
    read: the message pre-rendered (braces escaped, so it is its own format) and the
    ``log_system`` the text observer would otherwise derive.  The text log line is the one
    ``Logger.info`` writes; JSON lines keep the ``event``, ``peer``, ``command`` and ``outcome``
    fields, with the rendered message as ``log_format``.  What remains is the observer's own
    work (timestamp, flush per event); see docs/configuration.md for what it costs.
    """

    def __init__(self, namespace: str, observer: ILogObserver | None = None) -> None:
        self._namespace = namespace
        self._system = f"{namespace}#{LogLevel.info.name}"
        self._observer = globalLogPublisher if observer is None else observer

    def emit(self, peer: str, command: str, outcome: str) -> None:
        """Log that ``peer`` sent ``command`` (already safe to show) with this outcome."""
        message = f"{peer} {command}: {outcome}"
        if "{" in message or "}" in message:
            message = message.replace("{", "{{").replace("}", "}}")
        self._observer({
            "event": "command", "peer": peer, "command": command, "outcome": outcome,
            "log_level": LogLevel.info, "log_namespace": self._namespace,
            "log_system": self._system, "log_format": message, "log_time": time(),
        })
