"""One line client's state as the service sees it: who it is, where from, what it may do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Session", "no_push"]


def no_push(line: str) -> None:
    """Where a session's pushed lines go when it has no connection (before, or after it)."""


@dataclass(eq=False)
class Session:
    """One client connection's state, as the service sees it."""

    peer: str
    host: str
    secure: bool = False
    user: str | None = None
    push: Callable[[str], None] = field(default=no_push, repr=False)
    commands: int = 0
    on_close: list[Callable[[], None]] = field(default_factory=list, repr=False)
