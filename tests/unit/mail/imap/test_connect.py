"""The one connect path and the one client factory, on a memory reactor: the timeout, the CA
file read at each attempt, verified TLS for tls: servers, and the client each caller gets."""

from __future__ import annotations

from typing import Any, cast

from checkrig import make_unrelated_ca
from mailrig import MailReactorClock, account, write_password
from twisted.internet._sslverify import ClientTLSOptions
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.error import TimeoutError as TCPTimeout
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from userrig import error_of, imap_config
from zope.interface import implementer

from mailsocketd.check_command import run_check
from mailsocketd.mail.accounts.check import Limits
from mailsocketd.mail.accounts.service import AccountWatcher
from mailsocketd.mail.address import parse_server
from mailsocketd.mail.errors import CheckTimeout, MailError
from mailsocketd.mail.imap import connect as connect_module
from mailsocketd.mail.imap.client import ImapClient
from mailsocketd.mail.imap.commands import HEADER_LIMIT, UserImapClient
from mailsocketd.mail.imap.connect import ImapClientFactory, ImapEndpoint, connect
from mailsocketd.mail.secrets import PasswordSource, Secret
from mailsocketd.mail.tls import TlsPolicy
from mailsocketd.mail.users.session import open_user_session

TLS_SERVER = parse_server("tls:mail.example.test:993", "server")
TCP_SERVER = parse_server("tcp:127.0.0.1:143", "server")


def factory(clock):
    return ImapClientFactory(lambda: ImapClient(clock, 30.0, "test"))


def outcome(d):
    results: list[object] = []
    d.addBoth(results.append)
    return results


class Failing:
    """An endpoint whose connect fails at once with the next of ``errors``."""

    def __init__(self, errors):
        self.errors = errors

    def connect(self, protocol_factory):
        return fail(next(self.errors))


class NeverEndpoint:
    """An endpoint whose connect never fires; records its cancellation."""

    def __init__(self):
        self.cancelled = []

    def connect(self, protocol_factory):
        return Deferred(self.cancelled.append)


def test_a_connection_that_never_comes_times_out_and_is_cancelled(monkeypatch):
    clock = MailReactorClock()  # connects nowhere: server_endpoint is the test's
    never = NeverEndpoint()
    monkeypatch.setattr(connect_module, "server_endpoint", lambda *args: never)
    results = outcome(ensureDeferred(connect(clock, TCP_SERVER, TlsPolicy(), factory(clock), 5)))
    clock.advance(4.9)
    assert results == [] and never.cancelled == []
    clock.advance(0.1)
    (failure,) = results
    assert failure.check(CheckTimeout)
    assert str(failure.value) == "timed out after 5 s waiting for the connection"
    assert len(never.cancelled) == 1  # the attempt itself was called off
    assert clock.getDelayedCalls() == []


def test_the_timeout_stops_a_real_tcp_attempt():
    reactor = MemoryReactorClock()
    d = ensureDeferred(connect(reactor, TCP_SERVER, TlsPolicy(), factory(reactor), 5))
    reactor.advance(0)
    (host, port, _, tcp_timeout, _), = reactor.tcpClients
    assert (host, port, tcp_timeout) == ("127.0.0.1", 143, 5)
    reactor.advance(5)
    assert isinstance(error_of(d), CheckTimeout)
    assert reactor.connectors[0].stoppedConnecting
    assert reactor.getDelayedCalls() == []


def test_a_connection_in_time_gives_the_built_client_and_leaves_no_timer():
    reactor = MemoryReactorClock()
    results = outcome(ensureDeferred(
        connect(reactor, TCP_SERVER, TlsPolicy(), factory(reactor), 5)))
    reactor.advance(0)
    protocol = reactor.tcpClients[0][2].buildProtocol(None)
    assert protocol is not None
    protocol.makeConnection(StringTransport())
    (client,) = results
    assert isinstance(client, ImapClient) and client.label == "test"
    assert client.connected_ok
    assert reactor.getDelayedCalls() == []


def test_attempts_and_failures_are_reported_and_a_tcp_timeout_is_a_check_timeout(monkeypatch):
    errors = iter([ConnectionRefusedError(), TCPTimeout()])
    failing = Failing(errors)
    monkeypatch.setattr(connect_module, "server_endpoint", lambda *args: failing)
    clock = MailReactorClock()  # connects nowhere: server_endpoint is the test's
    attempts: list[int] = []
    failures: list[Failure] = []
    endpoint = ImapEndpoint(clock, TCP_SERVER, TlsPolicy(), 7,
                            on_attempt=lambda: attempts.append(1), on_failure=failures.append)
    first = error_of(endpoint.connect(factory(clock)))
    assert attempts == [1] and failures[0].value is first
    assert isinstance(first, ConnectionRefusedError)
    second = error_of(endpoint.connect(factory(clock)))
    assert attempts == [1, 1] and failures[1].value is second
    assert str(second) == "timed out after 7 s waiting for the connection"
    assert clock.getDelayedCalls() == []


def test_tls_servers_get_verifying_options_for_their_host_name(monkeypatch):
    wrapped = []

    def wrap(options, endpoint):
        wrapped.append(options)
        return endpoint

    monkeypatch.setattr("mailsocketd.mail.tls.wrapClientTLS", wrap)
    reactor = MemoryReactorClock()
    ImapEndpoint(reactor, TLS_SERVER, TlsPolicy(), 5).connect(factory(reactor))
    ImapEndpoint(reactor, TCP_SERVER, TlsPolicy(), 5).connect(factory(reactor))
    (options,) = wrapped  # only the tls: server; the tcp: one gets TLS by STARTTLS
    # optionsForClientTLS's options, which verify the chain and this name (CertificateOptions,
    # what an ssl: endpoint string gives, verify nothing by default)
    assert isinstance(options, ClientTLSOptions) and not isinstance(options, CertificateOptions)
    assert options._hostname == "mail.example.test"


def test_the_ca_file_is_read_again_at_each_attempt(tmp_path):
    ca_file = tmp_path / "ca.pem"
    reactor = MemoryReactorClock()
    endpoint = ImapEndpoint(reactor, TLS_SERVER, TlsPolicy(ca_file=str(ca_file)), 5)
    failures = outcome(endpoint.connect(factory(reactor)))
    assert failures[0].check(MailError)
    assert str(failures[0].value).startswith(f"ca_file {ca_file}: cannot read")
    assert reactor.tcpClients == []
    make_unrelated_ca(ca_file)  # the CA appears (or is renewed): no restart needed
    endpoint.connect(factory(reactor))
    reactor.advance(0)
    assert len(reactor.tcpClients) == 1


# -- one factory, the right client for each caller ---------------------------------------------

def test_the_factory_passes_deadline_and_callback_to_each_client():
    clock = Clock()
    connected: list[ImapClient] = []
    made = ImapClientFactory(lambda: ImapClient(clock, 12.0, "x"), deadline=99.0,
                             on_connected=connected.append)
    first, second = made.buildProtocol(None), made.buildProtocol(None)
    assert first is not second and first.factory is made
    assert first.deadline == 99.0 and first.command_timeout == 12.0
    first.makeConnection(StringTransport())
    assert connected == [first]


@implementer(IStreamClientEndpoint)
class Recording:
    """An endpoint that keeps the factory it is given and never connects."""

    def __init__(self):
        # Any: the test looks into what they build (ClientService's private proxy)
        self.factories: list[Any] = []

    def connect(self, protocol_factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.factories.append(protocol_factory)
        return Deferred()


def test_an_account_watcher_builds_plain_clients_that_report_to_it():
    endpoint = Recording()
    watcher = AccountWatcher(account(timeout=17), MailReactorClock(), environ={},
                             endpoint=endpoint)
    watcher.startService()
    client = endpoint.factories[0].buildProtocol(None)._protocol  # ClientService's proxy
    watcher.stopService()
    assert type(client) is ImapClient
    assert (client.label, client.command_timeout, client.deadline) == ("work", 17, None)
    assert client.MAX_LITERAL == ImapClient.MAX_LITERAL
    assert client.on_connected == watcher.connected


def wrapped(protocol: object) -> Any:
    """The client inside the protocol HostnameEndpoint connects: its wrapper is Twisted-private
    (endpoints._WrappingProtocol), untyped here."""
    return cast(Any, protocol)._wrappedProtocol


def test_the_check_builds_clients_bounded_by_its_deadline(tmp_path):
    reactor = MailReactorClock()
    reactor.advance(1000)
    source = PasswordSource("file", file=write_password(tmp_path))
    run_check(reactor, account(server="tcp:127.0.0.1:143", password=source), Limits(timeout=8))
    reactor.advance(0)
    client = wrapped(reactor.tcpClients[0][2].buildProtocol(None))
    assert type(client) is ImapClient
    assert (client.label, client.command_timeout, client.deadline) == ("work", 8, 1008)
    assert client.on_connected is None


def test_a_user_session_builds_a_user_client_sized_by_the_imap_limits():
    reactor = MemoryReactorClock()
    imap = imap_config(server="tcp:127.0.0.1:143", timeout=9, read_limit=8 << 20,
                       list_max=3000)
    ensureDeferred(open_user_session(reactor, imap, "alice", Secret(b"pw")))
    reactor.advance(0)
    client = wrapped(reactor.tcpClients[0][2].buildProtocol(None))
    assert type(client) is UserImapClient
    assert (client.label, client.command_timeout, client.deadline) == ("user alice", 9, None)
    assert client.MAX_LITERAL == 8 << 20
    assert client.MAX_RESPONSE >= 3000 * HEADER_LIMIT
