"""The command table: one entry per command drives dispatch, arguments, login gating and help.

Each argument has a kind, and the request is split only as far as the command says: a ``word``,
``number`` or ``uid`` is one whitespace-separated word; ``rest`` is the rest of the line exactly
as typed (a password with spaces, a mailbox named ``Sent  Items``).  The table checks the count
and the numbers and raises ``usage: SYNTAX`` before any handler runs, so handlers get ready
values as keyword arguments: ``read(session, uid=4823, mailbox="Sent Items")``.  An optional
argument that is not given is not passed (the handler's default applies).

A handler returns a Reply, a Deferred firing with one, or a coroutine (an ``async def``) that
returns one.  It raises CommandError for anything the user got wrong; the server turns that,
and every unexpected failure, into the one-line reply.  The table knows nothing of the server:
the core commands reach it through ``ServerView``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from twisted.internet.defer import Deferred

from mailsocketd.line.replies import CommandError, Reply, multiline, printable
from mailsocketd.line.session import Session

__all__ = ["UID_MAX", "Arg", "Command", "Handler", "Result", "ServerView", "command_table",
           "core_commands", "is_number"]

Result: TypeAlias = Reply | Deferred[Reply] | Coroutine[Any, Any, Reply]
Handler: TypeAlias = Callable[..., Result]
Kind = Literal["word", "number", "uid", "rest"]

# IMAP UIDs are non-zero 32-bit numbers (RFC 3501 nz-number); a test checks that the mail
# side's MAX_UID agrees, so the line service need not import the mail side for it.
UID_MAX = 4_294_967_295

_KIND_TEXT = {
    "word": "a word",
    "number": "a number",
    "uid": "a message's UID (the numbers 'list' shows)",
    "rest": "the rest of the line, exactly as typed (spaces kept)",
}


def is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` alone takes ``²`` and ``٣``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def not_a_uid(text: str) -> CommandError:
    return CommandError(f"not a UID: '{printable(text)}' (UIDs are the numbers 'list' shows)")


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument: the handler's keyword ``key``, its kind, and how many may be given.

    ``optional``: may be left out; an optional ``number`` or ``word`` with ``choices`` takes
    the next word only if it fits (``list Sent`` is a mailbox, ``list 5`` a count).
    ``repeat``: one or more words, all of this kind (``delete UID [UID ...]``); the value is a
    tuple.  ``choices``: the words allowed (case-insensitive, passed in lower case).
    ``shown``: how help names it (default: the key in capitals, or the choices).  ``about``:
    what ``help COMMAND`` says of it (default: what its kind is).
    """

    key: str
    _: KW_ONLY
    kind: Kind = "word"
    optional: bool = False
    repeat: bool = False
    choices: tuple[str, ...] = ()
    shown: str | None = None
    about: str | None = None

    @property
    def label(self) -> str:
        return self.shown or "|".join(self.choices) or self.key.upper()

    @property
    def syntax(self) -> str:
        """As the syntax line shows it: ``UID``, ``[MAILBOX]``, ``on|off``, ``UID [UID ...]``."""
        base = self.label
        if self.repeat:
            base = f"{base} [{base} ...]"
        return f"[{base}]" if self.optional else base

    def describe(self) -> str:
        """One line for ``help COMMAND``."""
        what = self.about or ("one of these words (any case)" if self.choices
                              else _KIND_TEXT[self.kind])
        if self.repeat:
            what += "; one or more, separated by spaces"
        return f"{self.label}: {'optional; ' if self.optional else ''}{what}"

    def value(self, word: str) -> object:
        """The value of one word, or None if it does not fit an optional argument.  Raises
        CommandError for a word that cannot be this argument (a bad UID)."""
        kind = self.kind
        if kind == "uid":
            if is_number(word) and 0 < int(word) <= UID_MAX:
                return int(word)
            if self.optional and not is_number(word):
                return None
            raise not_a_uid(word)
        if kind == "number":
            if is_number(word):
                return int(word)
            if self.optional:
                return None
            raise CommandError(f"not a number: '{printable(word)}'")
        if self.choices:
            chosen = word.lower()
            return chosen if chosen in self.choices else None
        return word


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One command: its name, its handler, what it does, its arguments, who may call it."""

    name: str
    handler: Handler
    summary: str
    args: tuple[Arg, ...] = ()
    needs_login: bool = False
    # Its reply asks for input up to a lone '.' (send): refused, the input is read and dropped
    # (refused_input), since the client may be typing it already.
    reads_input: bool = False
    # Whether ``help`` lists it now (None: always); the mail commands only with [imap].
    listed: Callable[[], bool] | None = None
    syntax: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "syntax", " ".join([self.name, *(a.syntax for a in self.args)]))
        _check_args(self)

    @property
    def takes_none(self) -> bool:
        """Whether the command may be given no argument at all."""
        return all(arg.optional for arg in self.args)

    def usage(self) -> CommandError:
        return CommandError(f"usage: {self.syntax}")

    def parse(self, text: str) -> dict[str, object]:
        """The handler's keyword arguments from the text after the command name (leading
        whitespace already gone), or CommandError (``usage: ...``, ``not a UID: ...``)."""
        values: dict[str, object] = {}
        for arg in self.args:
            if arg.kind == "rest":
                if text:
                    values[arg.key] = text
                elif not arg.optional:
                    raise self.usage()
                return values
            if arg.repeat:
                words = text.split()
                if words:
                    values[arg.key] = tuple(arg.value(word) for word in words)
                elif not arg.optional:
                    raise self.usage()
                return values
            text = self._take(arg, text, values)
        if text:
            raise self.usage()  # more words than the command takes
        return values

    def _take(self, arg: Arg, text: str, values: dict[str, object]) -> str:
        """Take the next word for ``arg`` into ``values``; returns the text after it."""
        parts = text.split(None, 1)
        value = arg.value(parts[0]) if parts else None
        if value is None:
            if not arg.optional:
                raise self.usage()
            return text
        values[arg.key] = value
        return parts[1] if len(parts) > 1 else ""

    def help_lines(self) -> list[str]:
        """``help COMMAND``: what it does, then one line per argument."""
        note = " (after login)" if self.needs_login else ""
        return [f"{self.summary}{note}", *(arg.describe() for arg in self.args)]


def _check_args(command: Command) -> None:
    """Refuse a table entry that cannot work (a programming error, found at start-up)."""
    args = command.args
    for i, arg in enumerate(args):
        last = i == len(args) - 1
        if (arg.kind == "rest" or arg.repeat) and not last:
            raise ValueError(f"{command.name}: {arg.key} must be the last argument")
        if i and args[i - 1].optional and not arg.optional:
            raise ValueError(f"{command.name}: {arg.key} follows an optional argument")
    try:
        parameters = inspect.signature(command.handler).parameters
    except (TypeError, ValueError):
        return  # a builtin or a mock: nothing to compare
    names = list(parameters)[1:]  # after the session
    if names != [arg.key for arg in args]:
        raise ValueError(f"{command.name}: the handler takes {names}, the table says "
                         f"{[arg.key for arg in args]}")
    for arg in args:
        if arg.optional and parameters[arg.key].default is inspect.Parameter.empty:
            raise ValueError(f"{command.name}: optional {arg.key} needs a default")


class ServerView(Protocol):
    """What the core commands use of the line server."""

    @property
    def commands(self) -> Mapping[str, Command]: ...
    def time_reply(self) -> Reply: ...
    def status_lines(self, session: Session | None = None) -> list[str]: ...


QUIT = Reply("quit", close=True)


class CoreCommands:
    """The commands every line service has; synchronous, since they are the busiest."""

    def __init__(self, server: ServerView) -> None:
        self.server = server

    def time(self, session: Session) -> Reply:
        return self.server.time_reply()

    def quit(self, session: Session) -> Reply:
        return QUIT

    def help(self, session: Session, command: str | None = None) -> Reply:
        table = self.server.commands
        if command is not None:
            found = table.get(command.lower())
            if found is None:
                raise CommandError(f"unknown command '{printable(command)}'; try 'help'")
            return multiline(found.syntax, found.help_lines())
        shown = [c for c in table.values() if c.listed is None or c.listed()]
        width = max(len(c.syntax) for c in shown)
        lines = []
        for entry in shown:
            note = " (after login)" if entry.needs_login else ""
            lines.append(f"{entry.syntax.ljust(width)}  {entry.summary}{note}")
        return multiline(f"{len(lines)} commands", lines)

    def status(self, session: Session) -> Reply:
        return multiline("status", self.server.status_lines(session))


def core_commands(server: ServerView) -> list[Command]:
    """The commands every line service has, answered from ``server``."""
    core = CoreCommands(server)
    return [
        Command(name="time", handler=core.time,
                summary="the local date and time, as YYYY/MM/DD HH:MM:SS"),
        Command(name="quit", handler=core.quit, summary="answer 'quit' and close the connection"),
        Command(name="help", handler=core.help,
                args=(Arg("command", optional=True, about="a command's name"),),
                summary="the commands, or one command's syntax and arguments"),
        Command(name="status", handler=core.status, summary="version, uptime, connections, mail"),
    ]


def command_table(commands: Iterable[Command]) -> dict[str, Command]:
    """Index commands by name, refusing duplicates (a programming error)."""
    table: dict[str, Command] = {}
    for command in commands:
        if command.name in table:
            raise ValueError(f"duplicate command {command.name!r}")
        table[command.name] = command
    return table
