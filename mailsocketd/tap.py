"""``twistd mailsocketd``: command-line options and the wiring of the services.

Options are read over the configuration file (``--config``); the merged result is validated in
``postOptions`` so that a bad file, key or listen address stops twistd before anything starts.
``makeService`` only wires: the line service, its listeners, the daytime listeners, the mail
bridge (whose stop logs the line users out of IMAP), the mail checker, and the orderly close of
clients on shutdown.
"""

from __future__ import annotations

import functools
import os
from typing import Any, ClassVar

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from mailsocketd import __version__
from mailsocketd.config import DEFAULT_LISTEN, Config
from mailsocketd.line.daytime import DaytimeFactory
from mailsocketd.line.factory import LineFactory
from mailsocketd.line.mail.commands import MailBridge
from mailsocketd.line.proxy import ProxyHeaderFactory
from mailsocketd.line.replies import error
from mailsocketd.line.server import LineServer
from mailsocketd.listeners import ListenerSet
from mailsocketd.logs import configure_target
from mailsocketd.mail.accounts.service import AccountsService
from mailsocketd.memory import memory_upkeep
from mailsocketd.metrics.collector import Metrics
from mailsocketd.metrics.endpoint import metrics_site
from mailsocketd.preflight import ConfigurationInvalid, check_configuration, endpoints
from mailsocketd.reload import Change, Reloader, SighupReload
from mailsocketd.reload_parts import add_parts, status_summary
from mailsocketd.sdnotify import SystemdNotify, notifier_from_environ
from mailsocketd.system import raise_open_file_limit

SHUTDOWN = error("server shutting down", close=True)
PROGRAM = "twistd mailsocketd"  # how one-line start-up errors begin


def _number(kind: type[int] | type[float], option: str) -> Any:
    def convert(value: str) -> int | float:
        try:
            return kind(value)
        except ValueError:
            raise usage.UsageError(f"--{option}: not a number: {value!r}") from None
    return convert


# (option, config key, converter, help); each may also be set in the configuration file.
_VALUE_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("max-line-length", "line.max_line_length", _number(int, "max-line-length"),
     "longest request line in bytes; longer ones get 'error: line too long' and a close "
     "[default: 4096]"),
    ("idle-timeout", "line.idle_timeout", _number(float, "idle-timeout"),
     "seconds a client may stay silent before it is closed; 0 turns it off [default: 300]"),
    ("max-connections", "line.max_connections", _number(int, "max-connections"),
     "most clients at once; more get one error line and are closed [default: 10000]"),
    ("max-per-peer", "line.max_connections_per_peer", _number(int, "max-per-peer"),
     "most clients at once from one address [default: 256]"),
    ("bare-command-wait", "line.bare_command_wait", _number(float, "bare-command-wait"),
     "seconds of silence after a bare 'time'/'quit' with no line ending before it is "
     "served (old clients); 0 serves it at once [default: 0.05]"),
    ("log-format", "log.format", str, "text or json (one JSON object per line) [default: text]"),
]


class Options(usage.Options):
    """Options of ``twistd mailsocketd``; see ``twistd mailsocketd --help``."""

    synopsis = "[options]"
    longdesc = (
        "Runs the mailsocketd line service (time, quit, help, status and mail commands for "
        "telnet/netcat users) and the IMAP4 mail checker under one reactor. Every option can "
        "also be set in the TOML file given with --config; options given here win."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "TOML configuration file (see docs/configuration.md)"],
        *[[name, None, None, text] for name, _, _, text in _VALUE_OPTIONS],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        ["banner", None, "greet each client with a line (off by default: old clients read "
                         "the reply to their first command first)"],
        ["no-banner", None, "no greeting, even if the configuration file asks for one"],
        ["no-log-commands", None, "do not trace clients (each connection is still logged "
                                  "once, when it closes)"],
        ["log-commands", None, "trace clients: log each connection when it opens and every "
                               "command, even if the configuration file turns that off"],
        ["check-config", None, "check the configuration (and these options) as start-up "
                               "would, start nothing, print 'configuration OK' or each "
                               "problem on a line; exit 0 or 1"],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.listen: list[str] = []
        self.daytime: list[str] = []
        self.config: Config = Config()

    def opt_listen(self, description: str) -> None:
        """Listen for line clients on this endpoint (repeatable): tcp:PORT:interface=ADDR, tcp6:, unix:PATH, ssl:PORT:privateKey=KEY:certKey=CERT, systemd:domain=INET:index=0 [default: tcp:65000:interface=127.0.0.1]"""  # noqa: E501
        self.listen.append(description)

    def opt_daytime(self, description: str) -> None:
        """Also serve RFC 867 daytime (write the time, hang up) on this endpoint; repeatable."""
        self.daytime.append(description)

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"mailsocketd {__version__}")
        raise SystemExit(0)

    def overrides(self) -> dict[str, Any]:
        """The configuration keys given on the command line."""
        given: dict[str, Any] = {}
        if self.listen:
            given["line.listen"] = self.listen
        if self.daytime:
            given["line.daytime"] = self.daytime
        for flag, key, value in (("banner", "line.banner", True),
                                 ("no-banner", "line.banner", False),
                                 ("log-commands", "log.commands", True),
                                 ("no-log-commands", "log.commands", False)):
            if self[flag]:
                if key in given:
                    raise usage.UsageError(f"--{flag} contradicts another option")
                given[key] = value
        for name, key, convert, _ in _VALUE_OPTIONS:
            if self[name] is not None:
                given[key] = convert(self[name])
        return given

    def parseOptions(self, options: Any = None) -> None:
        """Parse; a bad option or configuration stops twistd with one line per problem on
        stderr (exit status 1), not twistd's usage text with the problem at its end."""
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            raise SystemExit(f"{PROGRAM}: {e}") from None
        except ConfigurationInvalid as e:
            if self["check-config"]:
                raise SystemExit("\n".join(e.problems)) from None
            raise SystemExit("\n".join(f"{PROGRAM}: {p}" for p in e.problems)) from None

    def postOptions(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415  (only tap touches the reactor)

        checking = bool(self["check-config"])
        # A check by hand runs outside systemd, which passes sockets only to the daemon.
        self.config = check_configuration(self["config"], self.overrides(), reactor,
                                          passed_sockets=not checking)
        if checking:
            print("configuration OK")
            raise SystemExit(0)
        self._check_log_file()
        self._choose_log_observer()

    def _check_log_file(self) -> None:
        """twistd opens ``--logfile`` before anything else, with a traceback if it cannot:
        say it in one line instead."""
        parent = getattr(self, "parent", None)
        path = parent.get("logfile") if parent is not None else None
        if not path or path == "-":
            return
        target = os.path.abspath(path)
        where = target if os.path.exists(target) else os.path.dirname(target)
        if not os.path.isdir(os.path.dirname(target)):
            problem = "no such directory"
        elif not os.access(where, os.W_OK):
            problem = "not writable"
        else:
            return
        raise SystemExit(f"{PROGRAM}: --logfile {path}: cannot open: {problem}")

    def _choose_log_observer(self) -> None:
        """Point twistd at our log observer (text or JSON) unless told otherwise."""
        parent = getattr(self, "parent", None)
        if parent is None or parent.get("logger") is not None or parent.get("syslog"):
            return
        configure_target(parent.get("logfile"), bool(parent.get("nodaemon")),
                         self.config.log.keep_files)
        kind = "json" if self.config.log.format == "json" else "text"
        parent["logger"] = f"mailsocketd.logs.{kind}_observer"


def _endpoints(config: Config) -> list[tuple[str, str]]:
    return endpoints(config)


class CloseClientsOnStop(Service):
    """On shutdown, tell every line client and close it; stopping waits until they are gone."""

    def __init__(self, factory: LineFactory) -> None:
        self.factory = factory

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.factory.close_all(SHUTDOWN)


def server_endpoint(reactor: Any, description: str, factory: Any) -> tuple[Any, Any]:
    """The endpoint and factory a listener uses: behind a ``haproxy:`` listener, ``factory``
    gets each connection once its PROXY header has named the client (line/proxy.py), not at
    once with the proxy's address as Twisted's own wrapper would give it."""
    kind, _, rest = description.partition(":")
    if kind.lower() == "haproxy":
        server = getattr(factory, "server", None)  # the line and daytime factories'
        counted = None if server is None else functools.partial(server.count_refused,
                                                                "proxy_header")
        return serverFromString(reactor, rest), ProxyHeaderFactory(factory, reactor, counted)
    return serverFromString(reactor, description), factory


class ListenFailed(Exception):
    """A listener could not listen; the text is one line naming its key and endpoint."""


class Listener(StreamServerEndpointService):
    """A listening endpoint that fails with a one-line ListenFailed when it cannot listen.

    ``makeService`` makes it listen at once (``listen_before_daemonizing``), so that twistd
    reports a busy port in the foreground; twistd's own call later then does nothing.
    """

    def __init__(self, reactor: Any, key: str, description: str, factory: Any) -> None:
        super().__init__(*server_endpoint(reactor, description, factory))  # type: ignore[no-untyped-call]
        self.key = key
        self.description = description
        # Twisted-private (strports.service sets it too): a failed listen raises right here, at
        # start-up, instead of being logged while the daemon runs on without the port.
        self._raiseSynchronously = True

    listening = False

    def privilegedStartService(self) -> None:
        if self.listening:
            return
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
        except Exception as e:
            raise ListenFailed(f"{self.key}: cannot listen on {self.description!r}: {e}"
                               ) from None
        self.listening = True


def listen_before_daemonizing(top: IService) -> None:
    """Make every Listener under ``top`` listen now.  twistd calls ``makeService`` in the
    foreground but starts the services only after it has daemonized and written the pid file,
    where a failure (a busy port) left the waiting parent hanging and the pid file behind.
    Here a failure stops twistd at once with one line on stderr, exit status 1, no pid file.
    (A listener that fails later, after the fork, raises ListenFailed, an Exception: twistd
    then reports it through its status pipe and removes the pid file.)"""
    pending = [top]
    while pending:
        service = pending.pop(0)
        if isinstance(service, Listener):
            try:
                service.privilegedStartService()
            except ListenFailed as e:
                raise SystemExit(f"{PROGRAM}: {e}") from None
        elif isinstance(service, MultiService):
            pending.extend(service)


def makeService(options: Options, reactor: Any = None) -> IService:
    """Wire the daemon from validated options."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor  # noqa: PLC0415

        reactor = global_reactor
    config = options.config
    raise_open_file_limit()
    top = MultiService()
    # malloc arenas capped now, before the thread pool starts; free pages trimmed every 10 s
    memory_upkeep(reactor).setServiceParent(top)  # type: ignore[no-untyped-call]
    mail = MailBridge(reactor, config.line, config.imap, config.smtp)
    server = LineServer(config.line, mail.commands(), reactor, log_commands=config.log.commands)
    mail.sessions = server.sessions  # the logged-in users are among the open sessions
    server.status_sources.append(mail.status_lines)
    factory = LineFactory(server, reactor)
    # Stopped in the reverse order (each stop begins without waiting for the one before):
    # the listeners close, the mail users' IMAP logouts begin, then the clients are told.
    # The last two each finish within line.close_grace.
    CloseClientsOnStop(factory).setServiceParent(top)  # type: ignore[no-untyped-call]
    mail.setServiceParent(top)  # type: ignore[no-untyped-call]
    metrics = Metrics(server, mail, None)  # read at each scrape; counting only when served
    if config.metrics.enabled:
        metrics.start_counting()
    listeners = ListenerSet(reactor, top, Listener,
                            {"line.listen": factory, "line.daytime": DaytimeFactory(server),
                             "metrics.listen": metrics_site(metrics.registry)})
    listeners.add_all(_endpoints(config))
    accounts = AccountsService(config.accounts, reactor)  # none yet: a reload may add some
    accounts.setServiceParent(top)  # type: ignore[no-untyped-call]
    server.status_sources.append(accounts.status_lines)
    metrics.watch_accounts(accounts)
    # SIGHUP re-reads the file, with this command line over it again (it keeps precedence).
    reloader = Reloader(config, lambda: reload_config(options, reactor))
    add_parts(reloader, listeners=listeners, server=server, factory=factory, bridge=mail,
              accounts=accounts)
    # [metrics] turned on by a reload: count requests from then on (its listener is above)
    reloader.add("metrics", lambda old, new: Change(
        commit=metrics.start_counting if new.metrics.enabled else lambda: None))
    sighup = SighupReload(reloader, reactor)
    sighup.setServiceParent(top)  # type: ignore[no-untyped-call]
    sighup.install()  # before the listeners are bound: a SIGHUP from then on is a reload
    notifier, watchdog = notifier_from_environ()
    if notifier is not None:  # under systemd (Type=notify): last, so it says STOPPING first
        systemd = SystemdNotify(notifier, reactor, lambda: status_summary(
            server, mail, accounts, reloader), watchdog)
        reloader.on_reloading.append(systemd.reloading)
        reloader.on_reloaded.append(systemd.reloaded)
        systemd.setServiceParent(top)  # type: ignore[no-untyped-call]
    listen_before_daemonizing(top)
    return top


def reload_config(options: Options, reactor: Any) -> Config:
    """The configuration a reload applies: the file read again, the same command-line
    options over it, every start-up check passed."""
    return check_configuration(options["config"], options.overrides(), reactor)


__all__ = ["DEFAULT_LISTEN", "Options", "makeService"]
