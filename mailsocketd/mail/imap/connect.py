"""Connecting to an IMAP server: one client factory and one connect path for every caller.

The account watchers (through a ClientService, which reconnects), ``mailsocketd-check`` and a
line user's ``login`` all connect here, so they share what matters:

* the endpoint (``mail.tls.server_endpoint``): verified TLS for ``tls:`` servers, built afresh at
  each attempt so a renewed CA file is read again;
* the timeout: an attempt not connected within ``timeout`` seconds, name resolution included
  (HostnameEndpoint's own timeout bounds only each TCP attempt), is cancelled and fails with
  ``CheckTimeout("the connection", timeout)``;
* the factory, ``ImapClientFactory``, parametrised by what differs: which client (class,
  limits, label, command timeout), an overall deadline, a callback when connected.

Nothing here knows accounts or users: callers pass an address, a ``TlsPolicy`` and a client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as TCPTimeout
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.errors import CheckTimeout, MailError
from mailsocketd.mail.imap.client import ImapClient
from mailsocketd.mail.tls import ConnectReactor, TlsPolicy, server_endpoint

__all__ = ["CONNECT_STEP", "ImapClientFactory", "ImapEndpoint", "QuietClientService", "connect"]

C = TypeVar("C", bound=ImapClient)
CONNECT_STEP = "the connection"


class ImapClientFactory(Factory[C]):
    """One client per connection: ``build`` makes it (class, limits, label, command timeout);
    each gets the ``deadline`` no step may outlive and the ``on_connected`` callback."""

    noisy = False

    def __init__(self, build: Callable[[], C], *, deadline: float | None = None,
                 on_connected: Callable[[ImapClient], None] | None = None) -> None:
        self.build = build
        self.deadline = deadline
        self.on_connected = on_connected

    def buildProtocol(self, addr: IAddress | None) -> C:
        client = self.build()
        client.factory = self
        client.deadline = self.deadline
        client.on_connected = self.on_connected
        return client


def _timed_out(result: object, seconds: float) -> object:
    """addTimeout's translation: the cancelled attempt is a CheckTimeout.  (HostnameEndpoint
    fails a cancelled attempt with ConnectingCancelledError, not CancelledError.)"""
    if isinstance(result, Failure):
        result.trap(CancelledError, ConnectingCancelledError)
        raise CheckTimeout(CONNECT_STEP, seconds)
    return result


@implementer(IStreamClientEndpoint)
class ImapEndpoint:
    """The server's endpoint with the connect timeout; told of each attempt and each failure
    to connect (the account watcher's state)."""

    def __init__(self, reactor: ConnectReactor, address: ServerAddress, tls: TlsPolicy,
                 timeout: float, *, on_attempt: Callable[[], None] | None = None,
                 on_failure: Callable[[Failure], None] | None = None) -> None:
        self.reactor = reactor
        self.address = address
        self.tls = tls
        self.timeout = timeout
        self.on_attempt = on_attempt
        self.on_failure = on_failure

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if self.on_attempt is not None:
            self.on_attempt()
        d: Deferred[IProtocol]
        try:
            endpoint = server_endpoint(self.reactor, self.address, self.tls, self.timeout)
        except MailError as e:  # an unusable CA file
            d = fail(e)
        else:
            d = endpoint.connect(protocolFactory)
            d.addTimeout(self.timeout, IReactorTime(self.reactor), _timed_out)
        return d.addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(TCPTimeout):  # HostnameEndpoint's own, for one TCP attempt
            failure = Failure(CheckTimeout(CONNECT_STEP, self.timeout))
        if self.on_failure is not None:
            self.on_failure(failure)
        return failure

    def __repr__(self) -> str:
        return f"<IMAP endpoint, {self.address.scheme}: {self.address}>"


async def connect(reactor: ConnectReactor, address: ServerAddress, tls: TlsPolicy,
                  factory: ImapClientFactory[C], timeout: float) -> C:
    """One connection to ``address``: the client ``factory`` built, connected within
    ``timeout`` seconds (CheckTimeout otherwise)."""
    client = await ImapEndpoint(reactor, address, tls, timeout).connect(factory)
    return cast(C, client)


@implementer(ILogObserver)
class _WarningsOnly:
    """Passes on the events of warning level and above."""

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_level", LogLevel.info) >= LogLevel.warn:
            globalLogPublisher(event)


class QuietClientService(ClientService):
    """ClientService without its info line at every retry (``Scheduling retry N to connect
    ...``): the account's own state already logs each failure and the wait before the next
    attempt.  Its warnings still reach the log.  (``_log`` is Twisted-private: twisted_private.)
    """

    _log = Logger(observer=_WarningsOnly())
