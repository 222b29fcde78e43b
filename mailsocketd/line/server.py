"""The line service's logic: admission, dispatch, statistics.  It knows nothing of sockets.

Protocols hand it request lines and a Session; it answers with Replies.  This is the one place
where failures become replies: a UserError (the user's mistake, or a mail server's trouble as
the mail bridge describes it) becomes its ``error:`` line; anything else is logged with its
traceback and the client sees only ``error: internal error``.  It knows nothing of the mail side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd import __version__
from mailsocketd.errors import INTERNAL_ERROR_TEXT, UserError
from mailsocketd.line.commands import Command, Result, command_table, core_commands
from mailsocketd.line.config import LineConfig
from mailsocketd.line.replies import InputReader, Reply, error, printable, refused_input
from mailsocketd.line.session import Session
from mailsocketd.logs import Events
from mailsocketd.net import is_local
from mailsocketd.timefmt import format_time

# A status source's lines for one viewer: "local" (a loopback or UNIX socket client, or the
# daemon itself), "user" (a remote client logged in as one of [line] status_users), "public".
StatusSource = Callable[[str], list[str]]

# Why a connection was refused, as the metrics label it: over max_connections, over
# max_connections_per_peer, or (behind a PROXY listener) without a valid header.
REFUSAL_REASONS = ("max_connections", "max_connections_per_peer", "proxy_header")
# The command label of requests that name no command (unknown, empty, not UTF-8): one value,
# so that what a client types cannot grow the metrics.
UNKNOWN_COMMAND = "unknown"

INTERNAL_ERROR = error(INTERNAL_ERROR_TEXT)
NOT_UTF8 = error("request is not valid UTF-8")
LOGIN_FIRST = error("login first")


class LineServer:
    """Serves requests of all line clients and keeps the numbers ``status`` reports."""

    log = Logger()

    def __init__(self, config: LineConfig, commands: Iterable[Command],
                 clock: IReactorTime, log_commands: bool = True) -> None:
        """Serve the core commands (time, quit, help, status) and ``commands``."""
        self.config = config
        self.commands = command_table([*core_commands(self), *commands])
        self.clock = clock
        self.log_commands = log_commands
        self.started = clock.seconds()
        self.open_connections = 0
        self.total_connections = 0
        self.refused_connections = 0
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)  # by reason (the metrics)
        self.commands_served = 0
        # Requests by command, [ok, error] (the reply was an error line), once
        # count_commands() turns it on ([metrics]): a table entry's name, "input" (a send's
        # text) or UNKNOWN_COMMAND, a fixed set.
        self.command_counts: dict[str, list[int]] | None = None
        self.status_sources: list[StatusSource] = []
        self.sessions: set[Session] = set()  # the admitted clients' sessions, until they close
        self._per_host: dict[str, int] = {}
        self._time_second = -1
        self._time_reply = Reply("")
        self._events = Events(f"{type(self).__module__}.{type(self).__name__}")
        # Requests that are exactly a command's name (``time``, ``quit``): served without
        # decoding, splitting and lower-casing.  Only names those steps leave unchanged, of
        # commands that may be given no argument; the table is fixed once the server is built.
        self._bare_names: dict[bytes, Command] = {
            name.encode(): command for name, command in self.commands.items()
            if command.takes_none and name.split() == [name.lower()]}

    # -- connections -------------------------------------------------------------------

    def admit(self, session: Session) -> str | None:
        """Take a new client, or say why it is refused."""
        host = session.host
        if self.open_connections >= self.config.max_connections:
            reason, label = "too many connections, try again later", "max_connections"
        elif self._per_host.get(host, 0) >= self.config.max_connections_per_peer:
            reason, label = ("too many connections from your address",
                             "max_connections_per_peer")
        else:
            self.open_connections += 1
            self.total_connections += 1
            self._per_host[host] = self._per_host.get(host, 0) + 1
            self.sessions.add(session)
            return None
        self.count_refused(label)
        self.log.warn("connection from {host} refused: {reason}", host=host, reason=reason,
                      event="connection_refused")
        return reason

    def count_refused(self, reason: str) -> None:
        """One more connection refused, for ``status`` and, by ``reason`` (one of
        REFUSAL_REASONS), for the metrics."""
        self.refused_connections += 1
        self.refused[reason] += 1

    def count_commands(self) -> None:
        """Count requests by command and outcome from now on (for the metrics)."""
        if self.command_counts is None:
            self.command_counts = {name: [0, 0] for name in [*self.commands, "input",
                                                             UNKNOWN_COMMAND]}

    def release(self, session: Session) -> None:
        """A connection that ``admit`` took has closed: run its session's close hooks."""
        session.closed = True
        self.sessions.discard(session)
        hooks, session.on_close = session.on_close, []
        for hook in hooks:
            try:
                hook(session)
            except Exception:
                self.log.failure("closing the session of {peer} failed", peer=session.peer)
        self.open_connections -= 1
        self.release_address(session)

    def release_address(self, session: Session) -> None:
        """The connection has begun to close (or has closed): it no longer counts against its
        address's max_connections_per_peer, so that a client that reconnects at once is not
        refused for a close still lingering (up to close_grace).  Once per session."""
        if session.address_released:
            return
        session.address_released = True
        host = session.host
        left = self._per_host[host] - 1
        if left:
            self._per_host[host] = left
        else:
            del self._per_host[host]

    # -- requests ----------------------------------------------------------------------

    def time_text(self) -> str:
        """The current local time in the protocol's format (formatted once a second)."""
        return self.time_reply().head

    def time_reply(self) -> Reply:
        """The reply to ``time``, made once a second: it is the busiest command."""
        now = self.clock.seconds()
        second = int(now)
        if second != self._time_second:
            self._time_second = second
            self._time_reply = Reply(format_time(now))
        return self._time_reply

    def execute(self, session: Session, line: bytes) -> Reply | Deferred[Reply]:
        """Answer one request line (without its line ending); never raises."""
        session.commands += 1
        self.commands_served += 1
        command = self._bare_names.get(line)
        if command is not None:  # the busiest case: a command name alone
            return self._run(session, command.name, command, None)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._logged(session, "?", NOT_UTF8)
        # Split off the name only: the command's table entry says how to split the rest.
        parts = text.split(None, 1)
        if not parts:
            return self._logged(session, "", error("empty request"))
        name = parts[0].lower()
        command = self.commands.get(name)
        if command is None:
            return self._logged(session, name,
                                error(f"unknown command '{printable(name)}'; try 'help'"))
        return self._run(session, name, command, parts[1] if len(parts) > 1 else "")

    def _run(self, session: Session, name: str, command: Command,
             text: str | None) -> Reply | Deferred[Reply]:
        """Check login and arguments from the table, then call the handler (``text`` None:
        no arguments at all); failures become replies (see _failed)."""
        try:
            if command.needs_login and session.user is None:
                result: Result = refused_input("login first") if command.reads_input \
                    else LOGIN_FIRST
            elif text is None:
                result = command.handler(session)
            else:
                result = command.handler(session, **command.parse(text))
            if type(result) is Reply:  # the common case; cheaper than an ABC isinstance check
                counts = self.command_counts  # counted here, inline: the hot path
                if counts is not None:  # ``name`` is a table entry's: it has its slot
                    counts[name][result.failed] += 1
                return self._log(session, name, result) if self.log_commands else result
            if not isinstance(result, Deferred):
                result = Deferred.fromCoroutine(result)  # type: ignore[arg-type]
        except Exception:
            return self._logged(session, name, self._failed(Failure(), session, name))
        return self._settle(result, session, name)

    def finish_input(self, session: Session, reader: InputReader) -> Reply | Deferred[Reply]:
        """The reply to input a client typed after a reply asked for it (never raises)."""
        try:
            result = reader.finish()
        except Exception:
            return self._logged(session, "input", self._failed(Failure(), session, "input"))
        if type(result) is Reply:
            return self._logged(session, "input", result)
        return self._settle(result, session, "input")

    def _settle(self, result: Result, session: Session, name: str) -> Deferred[Reply]:
        deferred: Deferred[Reply] = result  # type: ignore[assignment]
        return deferred.addErrback(self._failed, session, name).addCallback(
            lambda reply: self._logged(session, name, reply))

    def _failed(self, failure: Failure, session: Session, name: str) -> Reply:
        """The one place a failure becomes a reply: a UserError (the user's mistake, or the
        mail server's trouble as the bridge put it) as its own line; anything else logged,
        and only ``internal error`` shown."""
        value = failure.value
        if isinstance(value, UserError):
            command = self.commands.get(name)
            if command is not None and command.reads_input and not value.close:
                return refused_input(str(value))
            return error(str(value), value.close)
        self.log.failure("command {command!r} from {peer} failed", failure, command=name,
                         peer=session.peer)
        return INTERNAL_ERROR

    def _logged(self, session: Session, name: str, reply: Reply) -> Reply:
        """Count (with count_commands) and log (with log_commands) one request's outcome."""
        counts = self.command_counts
        if counts is not None:
            (counts.get(name) or counts[UNKNOWN_COMMAND])[reply.failed] += 1
        return self._log(session, name, reply) if self.log_commands else reply

    def _log(self, session: Session, name: str, reply: Reply) -> Reply:
        if self.log_commands:
            peer, command = session.peer, name if name in self.commands else printable(name)
            outcome = reply.head if reply.failed else "ok"
            self._events.info("command", f"{peer} {command}: {outcome}", peer=peer,
                              command=command, outcome=outcome)
        return reply

    # -- status ------------------------------------------------------------------------

    def status_viewer(self, session: Session | None) -> str:
        """Who asks ``status`` (see StatusSource): what the sources may show them."""
        if session is None or is_local(session.host):
            return "local"
        allowed = {name.casefold() for name in self.config.status_users}
        user = session.user
        if user is not None and ("*" in allowed or user.name.casefold() in allowed):
            return "user"
        return "public"

    def status_lines(self, session: Session | None = None) -> list[str]:
        """What ``status`` shows ``session``: the daemon's numbers, then each status source's
        lines for its viewer (None: everything, as to a local client)."""
        viewer = self.status_viewer(session)
        now = self.clock.seconds()
        lines = [
            f"version: mailsocketd {__version__}",
            f"started: {format_time(self.started)}",
            f"uptime: {int(now - self.started)} s",
            f"connections: {self.open_connections} open, {self.total_connections} total, "
            f"{self.refused_connections} refused",
            f"commands: {self.commands_served} served",
        ]
        for source in self.status_sources:
            try:
                lines.extend(source(viewer))
            except Exception:
                self.log.failure("a status source failed")
                lines.append("(a status source failed; see the log)")
        return lines
