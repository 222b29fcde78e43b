"""The daemon's listening endpoints as one reloadable set.

A reload opens the endpoints that are new in the configuration (before anything else changes:
a port that cannot be had aborts the reload), stops listening on those that are gone (the
connections they accepted stay open) and, for every TLS listener (``ssl:``) it keeps, reads its
certificate and key from disk again: a renewed certificate is served to the next handshake, with
no port closed even for a moment.

TLS listeners get that by a context factory that delegates to a replaceable one: the
``ssl:`` endpoint that ``serverFromString`` builds is given ours instead of its own
(``SSL4ServerEndpoint._sslContextFactory``, see ``twisted_private``), and a reload parses the
description again (which loads the files) and hands the fresh options to ours.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any

from OpenSSL.SSL import Connection, Context
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from mailsocketd.config import Config
from mailsocketd.reload import Change, ReloadError

__all__ = ["ListenerSet", "ReplaceableTls", "tls_endpoint"]

# (config key, endpoint description): what identifies a listener across reloads.
ListenerKey = tuple[str, str]
# Builds a listener service for a key, description and protocol factory (tap.Listener).
MakeListener = Callable[[Any, str, str, Any], IService]


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ReplaceableTls:
    """A TLS server context that another can replace between two handshakes."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def serverConnectionForTLS(self, protocol: Any) -> Connection:
        current = self.options
        if IOpenSSLServerConnectionCreator.providedBy(current):
            connection: Connection = current.serverConnectionForTLS(protocol)
            return connection
        return Connection(self.getContext(), None)

    def getContext(self) -> Context:
        context: Context = self.options.getContext()
        return context


def tls_endpoint(endpoint: object) -> SSL4ServerEndpoint | None:
    """The ``ssl:`` endpoint, if this is one."""
    return endpoint if isinstance(endpoint, SSL4ServerEndpoint) else None


def make_tls_replaceable(endpoint: object) -> ReplaceableTls | None:
    """Give an ``ssl:`` endpoint a ReplaceableTls over its own options (before it listens)."""
    tls = tls_endpoint(endpoint)
    if tls is None:
        return None
    replaceable = ReplaceableTls(tls._sslContextFactory)
    tls._sslContextFactory = replaceable
    return replaceable


class ListenerSet:
    """The listeners of the line and daytime services, under ``parent``."""

    log = Logger()

    def __init__(self, reactor: Any, parent: MultiService, make: MakeListener,
                 factories: dict[str, Any]) -> None:
        self.reactor = reactor
        self.parent = parent
        self.make = make
        self.factories = factories  # config key -> protocol factory
        self.services: dict[ListenerKey, IService] = {}
        self.tls: dict[ListenerKey, ReplaceableTls] = {}

    def add(self, key: str, description: str) -> IService:
        """Build the listener (not started: its parent starts it)."""
        service = self.make(self.reactor, key, description, self.factories[key])
        replaceable = make_tls_replaceable(getattr(service, "endpoint", None))
        if replaceable is not None:
            self.tls[(key, description)] = replaceable
        self.services[(key, description)] = service
        return service

    def add_all(self, wanted: Sequence[ListenerKey]) -> None:
        for key, description in wanted:
            self.add(key, description).setServiceParent(self.parent)

    # -- reload ----------------------------------------------------------------------------

    async def prepare(self, wanted: Sequence[ListenerKey]) -> Change:
        """Open the new listeners and read the kept TLS listeners' files; a failure undoes
        what was done and raises ReloadError."""
        gone = [k for k in self.services if k not in wanted]
        new = [k for k in wanted if k not in self.services]
        fresh_tls = self._reread_tls([k for k in self.tls if k in wanted])
        closed_early: list[ListenerKey] = []
        try:
            opened = self._open(new)
        except _PortInUse as e:
            if not gone:
                raise ReloadError(e.reason) from None
            # Moving a listener to other options on the same port: the old one must go first
            # (and its socket is closed only once the reactor has run again).
            closed_early = list(gone)
            await DeferredList([self._close(k) for k in closed_early])
            try:
                opened = self._open(new)
            except (_PortInUse, ReloadError) as again:
                self._restore(closed_early)
                raise ReloadError(getattr(again, "reason", str(again))) from None

        def commit() -> None:
            for k in gone:
                self._close(k)
            for k, options in fresh_tls.items():
                self.tls[k].options = options

        def abort() -> None:
            self._undo(opened)
            self._restore(closed_early)

        summary = tuple([f"listening on {d!r}" for _, d in new]
                        + [f"no longer listening on {d!r}" for _, d in gone]
                        + [f"TLS certificate and key of {d!r} read again"
                           for _, d in fresh_tls])
        return Change(commit=commit, abort=abort, summary=summary)

    def _reread_tls(self, keys: list[ListenerKey]) -> dict[ListenerKey, Any]:
        """Build each TLS listener again, without listening: parsing its description reads
        its files (``haproxy:ssl:...`` included: the listener unwraps it)."""
        fresh: dict[ListenerKey, Any] = {}
        for key, description in keys:
            try:
                service = self.make(self.reactor, key, description, self.factories[key])
            except Exception as e:
                raise ReloadError(f"{key}: cannot read the TLS files of {description!r}: "
                                  f"{e!r}") from None
            tls = tls_endpoint(getattr(service, "endpoint", None))
            if tls is not None:
                fresh[(key, description)] = tls._sslContextFactory
        return fresh

    def _open(self, new: list[ListenerKey]) -> dict[ListenerKey, IService]:
        """Start listening on each of ``new``, all or none."""
        opened: dict[ListenerKey, IService] = {}
        for k in new:
            try:
                opened[k] = self._start(k)
            except BaseException:
                self._undo(opened)
                raise
        return opened

    def _start(self, k: ListenerKey) -> IService:
        key, description = k
        try:
            service = self.add(key, description)
        except Exception as e:
            raise ReloadError(f"{key}: bad endpoint {description!r}: {e!r}") from None
        try:
            service.setServiceParent(self.parent)
        except (Exception, SystemExit) as e:  # tap.Listener stops twistd at start-up: not here
            self.services.pop(k, None)
            self.tls.pop(k, None)
            if service.parent is not None:
                service.disownServiceParent()
            text = str(e.code if isinstance(e, SystemExit) else e).removeprefix("twistd: ")
            if _in_use(text):
                raise _PortInUse(text) from None
            raise ReloadError(text) from None
        return service

    def _undo(self, opened: dict[ListenerKey, IService]) -> None:
        for k in opened:
            self._close(k)

    def _restore(self, keys: list[ListenerKey]) -> None:
        """Listen again where a failed reload stopped listening (best effort)."""
        for k in keys:
            try:
                self._start(k)
            except (_PortInUse, ReloadError) as e:
                self.log.error("{key}: cannot listen again on {description!r}: {error}",
                               key=k[0], description=k[1], error=str(e), event="listen_failed")

    def _close(self, k: ListenerKey) -> Deferred[object]:
        """Stop listening (the connections it accepted stay open); fires once closed."""
        service = self.services.pop(k, None)
        self.tls.pop(k, None)
        if service is not None and service.parent is not None:
            return maybeDeferred(service.disownServiceParent)
        return succeed(None)


class _PortInUse(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _in_use(text: str) -> bool:
    return "Address already in use" in text or f"[Errno {errno.EADDRINUSE}]" in text


def wanted_listeners(config: Config) -> list[ListenerKey]:
    """The listeners a configuration asks for, in order."""
    return ([("line.listen", d) for d in config.line.listen]
            + [("line.daytime", d) for d in config.line.daytime]
            + [("metrics.listen", d) for d in config.metrics.listen])
