"""Log observers for twistd: JSON lines, one event per line.

``[log] format = "json"`` (or ``--log-format json``) makes the plugin point twistd's ``--logger``
at :func:`json_observer`, which writes where twistd would have written text: the ``--logfile``,
standard output with ``-n`` and no ``--logfile`` (or ``--logfile -``), else ``twistd.log``.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import ILogObserver, jsonFileLogObserver
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
