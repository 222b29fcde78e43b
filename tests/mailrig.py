"""A scripted IMAP server for socket-free tests of the mail client.

``Rig`` connects a ImapClient to an in-memory transport on a task.Clock.  The test plays the
server: ``rig.expect(b"STATUS")`` takes the client's next command (asserting its name) and
``rig.reply(...)`` answers it; ``rig.server(...)`` sends raw lines.  Closing the transport
(loseConnection / abortConnection) delivers connectionLost on the next ``clock.advance(0)``,
as a real reactor would deliver it later, not inside the call.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Self, cast

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IProcessProtocol,
    IProcessTransport,
    IReactorPluggableNameResolver,
    ISSLTransport,
    ITLSTransport,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsocketd.mail.accounts.config import AccountConfig, parse_accounts
from mailsocketd.mail.address import parse_server
from mailsocketd.mail.imap.client import ImapClient
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import PasswordSource
from mailsocketd.table import Table

STATUS_ITEMS = b"(MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)"


def account(**overrides: Any) -> AccountConfig:
    """A test account (TLS to mail.example.test, password from an env variable)."""
    server = overrides.pop("server", "tls:mail.example.test:993")
    base = AccountConfig(name="work", server=server, address=parse_server(server, "server"),
                         user="alice", password=PasswordSource("env", env="PW"))
    return replace(base, **overrides)


class Transport(StringTransport):
    """StringTransport whose close reaches the protocol (later, via the clock)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.clock = clock
        self.closed = False
        self.protocol: Any = None
        self.tls_started_with: Any = None

    def _close(self, reason: type[Exception]) -> None:
        if not self.closed:
            self.closed = True
            self.clock.callLater(0, self.protocol.connectionLost, Failure(reason()))

    def loseConnection(self) -> None:
        super().loseConnection()  # type: ignore[no-untyped-call]
        self._close(ConnectionDone)

    def abortConnection(self) -> None:
        super().abortConnection()  # type: ignore[no-untyped-call]
        self._close(ConnectionAborted)


# Only what the client uses of ITLSTransport (not the TCP options): a test transport.
@implementer(ITLSTransport)
class StartTLSTransport(Transport):  # type: ignore[misc]
    """A plain connection that can be switched to TLS (records the options it got)."""

    def startTLS(self, contextFactory: Any) -> None:
        self.tls_started_with = contextFactory


@implementer(ISSLTransport)
class TLSTransport(Transport):  # type: ignore[misc]
    """An implicit-TLS connection."""

    def getPeerCertificate(self) -> None:
        return None


class MailReactorClock(MemoryReactorClock):
    """A ``MailReactor`` (mailsocketd.mail.reactor) for tests on a clock: connections are
    recorded, not made (``tcpClients``), time is the test's (``advance``), and running a program
    fails the test (none is configured where this is used)."""

    def spawnProcess(self, processProtocol: IProcessProtocol, executable: bytes | str,
                     args: Sequence[bytes | str], *, env: Mapping[str, str] | None = None,
                     path: bytes | str | None = None, uid: int | None = None,
                     gid: int | None = None, usePTY: bool = False,
                     childFDs: Mapping[int, int | str] | None = None) -> IProcessTransport:
        raise AssertionError(f"no program should run here: {executable!r} was started")


def global_reactor() -> MailReactor:
    """Twisted's global reactor as the MailReactor it is: Twisted types it ``_IReactorCommon``,
    which leaves out IReactorPluggableNameResolver (``nameResolver``), provided all the same."""
    from twisted.internet import reactor  # installs the default reactor if none is yet

    assert IReactorPluggableNameResolver.providedBy(reactor)
    return cast(MailReactor, reactor)


class Rig:
    """A ImapClient and the scripted server it talks to."""

    def __init__(self, transport: type[Transport] = TLSTransport, timeout: float = 30.0,
                 clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.client = ImapClient(self.clock, timeout, label="test")
        self.transport = transport(self.clock)
        self.last_tag = b""

    def connect(self) -> Self:
        self.transport.protocol = self.client
        self.client.makeConnection(self.transport)  # type: ignore[no-untyped-call]
        return self

    def server(self, *lines: bytes | str) -> None:
        data = b"".join((x.encode() if isinstance(x, str) else x) + b"\r\n" for x in lines)
        self.client.dataReceived(data)

    def sent(self) -> list[bytes]:
        """The lines the client sent since the last call."""
        data: bytes = self.transport.value()  # type: ignore[no-untyped-call]
        self.transport.clear()  # type: ignore[no-untyped-call]
        return [line for line in data.split(b"\r\n") if line]

    def expect(self, command: bytes) -> bytes:
        """The client's next (single) line must be ``TAG COMMAND ...``; returns its args."""
        lines = self.sent()
        assert len(lines) == 1, lines
        tag, name, *rest = lines[0].split(b" ", 2)
        assert name == command, lines[0]
        self.last_tag = tag
        return rest[0] if rest else b""

    def reply(self, *untagged: bytes | str, status: str = "OK", text: str = "done") -> None:
        tag = self.last_tag.decode()
        self.server(*[b"* " + (u.encode() if isinstance(u, str) else u) for u in untagged],
                    f"{tag} {status} {text}")

    def answer(self, command: bytes, *untagged: bytes | str, status: str = "OK") -> bytes:
        args = self.expect(command)
        self.reply(*untagged, status=status)
        return args

    def greet(self, caps: str = "IMAP4rev1 IDLE AUTH=PLAIN") -> None:
        self.server(f"* OK [CAPABILITY {caps}] ready")

    def plain_login(self, user: bytes = b"alice", password: bytes = b"pw",
                    caps_after: str = "IMAP4rev1 IDLE") -> None:
        """Play AUTHENTICATE PLAIN then the post-login CAPABILITY."""
        assert self.expect(b"AUTHENTICATE") == b"PLAIN"
        self.server("+ ")
        assert self.sent() == [base64.b64encode(b"\0" + user + b"\0" + password)]
        self.reply()
        self.answer(b"CAPABILITY", f"CAPABILITY {caps_after}")

    def status(self, mailbox: str = "INBOX", messages: int = 12, unseen: int = 3,
               uidnext: int = 13, uidvalidity: int = 1) -> None:
        args = self.expect(b"STATUS")
        assert args == mailbox.encode() + b" " + STATUS_ITEMS, args
        self.reply(f"STATUS {mailbox} (MESSAGES {messages} UNSEEN {unseen} RECENT 0 "
                   f"UIDNEXT {uidnext} UIDVALIDITY {uidvalidity})")


# -- helpers for the integration tests against the real Dovecot --------------------------------

def write_password(directory: Any, password: str = "pw",  # noqa: S107 - the test users'
                   name: str = "password") -> str:
    """A password file only its owner may read, as the daemon demands."""
    path = directory / name
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def account_toml(name: str, **keys: Any) -> str:
    """One ``[accounts.NAME]`` table."""
    lines = [f"[accounts.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def parsed_account(name: str = "work", **keys: Any) -> AccountConfig:
    """An AccountConfig through the real parser (so the tests use the documented keys)."""
    return parse_accounts(Table({name: keys}, "accounts"))[0]
