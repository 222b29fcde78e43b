"""The command table: one entry per command drives dispatch, arity, login gating and help.

A handler takes the server, the client's session and the arguments, and returns a Reply (or a
Deferred firing with one).  It raises CommandError for anything the user got wrong; the server
turns that, and every unexpected failure, into the one-line reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from twisted.internet.defer import Deferred

from mailsocketd.line.replies import Reply, multiline

if TYPE_CHECKING:
    from mailsocketd.line.server import LineServer
from mailsocketd.line.session import Session

Result: TypeAlias = Reply | Deferred[Reply]
Handler: TypeAlias = Callable[["LineServer", "Session", Sequence[str]], Result]


@dataclass(frozen=True, slots=True)
class Command:
    """One command: its name, how to call it, who may, and what it does."""

    name: str
    handler: Handler
    syntax: str
    summary: str
    min_args: int = 0
    max_args: int | None = 0
    needs_login: bool = False

    def accepts(self, count: int) -> bool:
        """Whether ``count`` arguments fit this command."""
        return count >= self.min_args and (self.max_args is None or count <= self.max_args)


QUIT = Reply("quit", close=True)


def do_time(server: LineServer, session: Session, args: Sequence[str]) -> Reply:
    return server.time_reply()


def do_quit(server: LineServer, session: Session, args: Sequence[str]) -> Reply:
    return QUIT


def do_help(server: LineServer, session: Session, args: Sequence[str]) -> Reply:
    table = server.commands
    width = max(len(c.syntax) for c in table.values())
    lines = []
    for command in table.values():
        note = " (after login)" if command.needs_login else ""
        lines.append(f"{command.syntax.ljust(width)}  {command.summary}{note}")
    return multiline(f"{len(lines)} commands", lines)


def do_status(server: LineServer, session: Session, args: Sequence[str]) -> Reply:
    return multiline("status", server.status_lines())


def core_commands() -> list[Command]:
    """The commands every line service has."""
    return [
        Command("time", do_time, "time", "the local date and time, as YYYY/MM/DD HH:MM:SS"),
        Command("quit", do_quit, "quit", "answer 'quit' and close the connection"),
        Command("help", do_help, "help", "this list of commands"),
        Command("status", do_status, "status",
                "version, uptime, connections, mail"),
    ]


def command_table(commands: Iterable[Command]) -> dict[str, Command]:
    """Index commands by name, refusing duplicates (a programming error)."""
    table: dict[str, Command] = {}
    for command in commands:
        if command.name in table:
            raise ValueError(f"duplicate command {command.name!r}")
        table[command.name] = command
    return table
