"""systemd's service notification protocol (``sd_notify``): readiness, reload, stop, watchdog.

The protocol is one datagram of ``NAME=value`` lines to the AF_UNIX socket named in
``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace); see sd_notify(3).  It is a
dozen lines, so it is written here rather than taken from a library: ``sdnotify`` (PyPI) is
unmaintained since 2017 and blocking, ``systemd-python``/``cysystemd`` need libsystemd's
headers and a compiler to install, for one ``sendto``.

Without ``NOTIFY_SOCKET`` (not under systemd's ``Type=notify``) nothing is sent.  The variables
are removed from the environment once read, so that hooks and password commands the daemon
runs do not talk to systemd in its name.

:class:`SystemdNotify` sends ``READY=1`` once the reactor runs (every listener is bound by
then: they bind before it starts), ``RELOADING=1`` with ``MONOTONIC_USEC`` and then ``READY=1``
around a reload, ``STOPPING=1`` when the daemon starts stopping, a one-line ``STATUS=`` with
each, and ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` from a reactor timer: a wedged reactor
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["Notifier", "SystemdNotify", "monotonic_usec", "notifier_from_environ"]

STATUS_EVERY = 30.0  # seconds between STATUS= updates when there is no watchdog to ride on


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1`` wants it in ``MONOTONIC_USEC``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notification datagrams to one socket; a failure is logged once, never raised
    (systemd gone or a full socket must not hurt the service)."""

    log = Logger()

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self._failed = False
        self.sent = 0

    def send(self, *fields: str) -> bool:
        """One datagram of ``NAME=value`` lines; says whether it went."""
        try:
            self.sock.sendto("\n".join(fields).encode("utf-8"), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                self.log.warn("cannot notify systemd at {address}: {error}",
                              address=self.address.replace("\0", "@"), error=e.strerror,
                              event="notify_failed")
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()


def notifier_from_environ(environ: MutableMapping[str, str] | None = None
                          ) -> tuple[Notifier | None, float | None]:
    """The notifier systemd asked for, and the watchdog interval in seconds (None: none);
    the variables are taken out of ``environ`` (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    address = env.pop("NOTIFY_SOCKET", "")
    usec, pid = env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
    if not address:
        return None, None
    watchdog: float | None = None
    if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
        watchdog = int(usec) / 1e6
    return Notifier(address), watchdog


class SystemdNotify(Service):
    """Tells systemd how the daemon is (see the module docstring).  ``status`` gives the
    one-line summary sent as ``STATUS=``."""

    def __init__(self, notifier: Notifier, reactor: Any, status: Callable[[], str],
                 watchdog: float | None = None) -> None:
        self.notifier = notifier
        self.reactor = reactor
        self.status = status
        self.watchdog = watchdog
        self._last_status = ""
        self._ticker: LoopingCall | None = None

    def _status(self) -> str:
        try:
            text = " ".join(self.status().split())
        except Exception:  # a summary is not worth a failed notification
            text = "running"
        self._last_status = text
        return f"STATUS={text}"

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        if not self.running:
            return
        self.notifier.send("READY=1", self._status(), f"MAINPID={os.getpid()}")
        every = self.watchdog / 2 if self.watchdog else STATUS_EVERY
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.reactor
        self._ticker.start(every, now=False)

    def _tick(self) -> None:
        """Every half watchdog interval: WATCHDOG=1, and STATUS= when it changed."""
        fields = ["WATCHDOG=1"] if self.watchdog else []
        previous = self._last_status
        status = self._status()
        if status != f"STATUS={previous}":
            fields.append(status)
        if fields:
            self.notifier.send(*fields)

    def reloading(self) -> None:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                           "STATUS=reloading the configuration")

    def reloaded(self, applied: bool) -> None:
        self.notifier.send("READY=1", self._status())

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
