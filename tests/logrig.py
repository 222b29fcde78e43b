"""Log evidence for the tests: an observer that keeps the events it is given.

Twisted calls any callable of one event an observer, but types its observer arguments as
``ILogObserver``; ``LogEvents`` provides it, so a test passes it where the package or Twisted
expects an observer (``Events(namespace, observer)``, ``LogPublisher(observer)``,
``globalLogPublisher.addObserver``) and reads ``events``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer


@implementer(ILogObserver)
class LogEvents:
    """A log observer keeping every event it is given, in order, in ``events``."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)


@contextmanager
def global_log_events() -> Iterator[list[LogEvent]]:
    """The events logged to Twisted's global log publisher while the block runs."""
    observer = LogEvents()
    globalLogPublisher.addObserver(observer)
    try:
        yield observer.events
    finally:
        globalLogPublisher.removeObserver(observer)
