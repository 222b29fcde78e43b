"""One line client's state as the service sees it: who it is, where from, what it may do.

The logged-in user lives here and only here (``Session.user``): login gating, ``status`` and
``logout`` all read this one field, so no second table of logged-in clients can drift from it.
The line service knows of the user only what ``User`` says; the mail bridge keeps the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Session", "User", "no_push"]


def no_push(line: str) -> None:
    """Where a session's pushed lines go when it has no connection (before, or after it)."""


class User(Protocol):
    """A logged-in user, as far as the line service needs to know one."""

    @property
    def name(self) -> str: ...


@dataclass(eq=False)
class Session:
    """One client connection's state, as the service sees it."""

    peer: str
    host: str
    secure: bool = False
    uid: int | None = None  # a UNIX socket client's user id (SO_PEERCRED), when known
    user: User | None = None
    push: Callable[[str], None] = field(default=no_push, repr=False)
    # Set by a command that pushes lines (``watch on``): while it says so, the client waits
    # for them, and a quiet connection is not idle (the idle limit keeps it, TCP keepalive
    # watches it).  Asked only when the idle limit is reached.
    awaits_push: Callable[[Session], bool] | None = field(default=None, repr=False)
    commands: int = 0
    closed: bool = False  # the connection has gone; whatever was in flight for it must end
    address_released: bool = False  # no longer counted against its address (closing)
    # Run once, with the session, when the connection closes.
    on_close: list[Callable[[Session], None]] = field(default_factory=list, repr=False)
