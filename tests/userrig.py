"""A scripted IMAP server for socket-free tests of a line user's session (UserSession).

``UserRig`` is mailrig's Rig with a UserImapClient (sized by an ImapConfig); ``logged_in``
returns a rig and a UserSession after a scripted greeting and AUTHENTICATE PLAIN.  Helpers play
the common replies (SELECT/EXAMINE, STATUS, IDLE) so each test shows only what it is about.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mailrig import STATUS_ITEMS, Rig
from twisted.internet.defer import Deferred, ensureDeferred

from mailsocketd.mail.address import parse_server
from mailsocketd.mail.imap.commands import UserImapClient
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import UserSession, start_user_session

CAPS = "IMAP4rev1 IDLE UIDPLUS MOVE"
PASSWORD = "s3cret-Pa55"  # noqa: S105 - a test password, looked for in messages


def imap_config(**overrides: Any) -> ImapConfig:
    server = overrides.pop("server", "tls:mail.example.test:993")
    return replace(ImapConfig(server=server, address=parse_server(server, "server")),
                   **overrides)


class UserRig(Rig):
    """A UserImapClient and the scripted server it talks to."""

    client: UserImapClient

    def __init__(self, imap: ImapConfig | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.imap = imap or imap_config()
        self.client = UserImapClient(self.clock, self.imap.timeout, "test",
                                     read_limit=self.imap.read_limit,
                                     list_max=self.imap.list_max)

    def commands(self) -> list[bytes]:
        """The command names (after the tag) the client sent since the last call."""
        return [b" ".join(line.split(b" ")[1:3]) if line.split(b" ")[1] == b"UID"
                else line.split(b" ")[1] for line in self.sent()]

    def select(self, verb: bytes = b"EXAMINE", mailbox: str = "INBOX", exists: int = 3,
               uidvalidity: int = 7, uidnext: int = 4) -> None:
        args = self.expect(verb)
        assert args == mailbox.encode(), args
        mode = "READ-ONLY" if verb == b"EXAMINE" else "READ-WRITE"
        self.reply(f"{exists} EXISTS", "0 RECENT", f"OK [UIDVALIDITY {uidvalidity}] ok",
                   f"OK [UIDNEXT {uidnext}] ok", "FLAGS (\\Seen \\Deleted)",
                   text=f"[{mode}] selected")

    def status_of(self, mailbox: str = "INBOX", messages: int = 3, unseen: int = 1,
                  uidnext: int = 4, uidvalidity: int = 7) -> None:
        args = self.expect(b"STATUS")
        assert args == mailbox.encode() + b" " + STATUS_ITEMS, args
        self.reply(f"STATUS {mailbox} (MESSAGES {messages} UNSEEN {unseen} RECENT 0 "
                   f"UIDNEXT {uidnext} UIDVALIDITY {uidvalidity})")

    def fresh_status_of(self, *args: Any, **kw: Any) -> None:
        """NOOP, then STATUS: how the session asks for the counts of the mailbox it has
        selected (UserSession.status)."""
        self.answer(b"NOOP")
        self.status_of(*args, **kw)

    def idle(self) -> None:
        """The client sends IDLE; the server accepts it."""
        self.expect(b"IDLE")
        self.server("+ idling")

    def done(self) -> None:
        """The client sends DONE; the server ends IDLE."""
        assert self.sent() == [b"DONE"]
        self.reply(text="IDLE terminated")


def logged_in(caps: str = CAPS, inbox: int | None = 3, **imap: Any
              ) -> tuple[UserRig, UserSession]:
    """A rig and a UserSession logged in as alice (AUTHENTICATE PLAIN), with INBOX opened
    (EXAMINE; ``inbox`` messages) as the session does after login; ``inbox=None`` refuses it."""
    rig = UserRig(imap_config(**imap), timeout=imap.get("timeout", 30.0)).connect()
    d = ensureDeferred(start_user_session(rig.client, rig.imap, "alice",
                                          Secret(PASSWORD.encode()), clock=rig.clock))
    rig.greet("IMAP4rev1 AUTH=PLAIN")
    rig.plain_login(password=PASSWORD.encode(), caps_after=caps)
    session = result_of(d)
    if inbox is None:
        rig.expect(b"EXAMINE")
        rig.reply(status="NO", text="[NONEXISTENT] no INBOX here")
    else:
        rig.select(exists=inbox)
    return rig, session


def run(coroutine: Any) -> Deferred[Any]:
    return ensureDeferred(coroutine)


def result_of(d: Deferred[Any]) -> Any:
    """The result of a fired Deferred (its exception raised)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def error_of(d: Deferred[Any]) -> BaseException:
    """The exception a fired Deferred failed with."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    assert hasattr(results[0], "value"), f"no failure: {results[0]!r}"
    error: BaseException = results[0].value
    return error
