"""The mail commands' line-side rules without servers: login policy, throttling, arguments.

The IMAP session is replaced by a stand-in here; the real thing is exercised against Dovecot in
tests/integration/test_mail_commands.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from linerig import Rig, lose, take
from twisted.internet.task import Clock

import mailsocketd.line.mail.commands as mailcommands
from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.commands import MailCommands, is_local
from mailsocketd.mail.address import parse_server
from mailsocketd.mail.errors import AuthFailed
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.users.config import ImapConfig

PASSWORD = "correct-horse-battery-staple-7731"  # noqa: S105 - a test password
IMAP = ImapConfig(server="tls:imap.example.test", address=parse_server("tls:imap.example.test", "s"))


class StandIn:
    """What the line side uses of a UserSession."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.on_lost: Any = None
        self.alive = True
        self.logged_out = False

    async def check(self, mailbox: str = "INBOX") -> MailboxCounts:
        return MailboxCounts(12, 3, 0, 100, 7)

    async def watch(self, mailbox: str, notify: Any, ended: Any = None) -> MailboxCounts:
        self.notify, self.ended = notify, ended
        return MailboxCounts(12, 3, 0, 100, 7)

    async def logout(self) -> None:
        self.logged_out = True
        self.alive = False


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[StandIn]:
    opened: list[StandIn] = []

    async def open_user_session(reactor: Any, imap: ImapConfig, user: str, password: Any,
                                *, clock: Any = None) -> StandIn:
        if password.reveal() != PASSWORD.encode():
            raise AuthFailed(f"login refused for user {user}: NO [AUTHENTICATIONFAILED]")
        opened.append(StandIn(user))
        return opened[-1]

    monkeypatch.setattr(mailcommands, "open_user_session", open_user_session)
    return opened


def mail_rig(imap: ImapConfig | None = IMAP, **line: Any) -> tuple[Rig, MailCommands]:
    mail = MailCommands(None, Clock(), replace(LineConfig(), **line), imap, None)
    rig = Rig(mail.commands(), **line)
    mail.clock = mail.throttle.clock = rig.clock  # the rig's clock drives both
    return rig, mail


def connect(rig: Rig, host: str, secure: bool = False) -> tuple[Any, Any]:
    proto, tr = rig.connect(host)
    proto.session.secure = secure
    return proto, tr


def test_loopback_and_unix_are_local_other_addresses_are_not():
    assert is_local("127.0.0.1") and is_local("127.8.9.10") and is_local("::1")
    assert is_local("unix")
    assert is_local("::ffff:127.0.0.1") and not is_local("::ffff:192.0.2.1")  # dual stack
    assert not is_local("192.0.2.1") and not is_local("2001:db8::1") and not is_local("bogus")


def test_login_over_a_network_in_clear_is_refused_before_any_password_is_used(sessions):
    rig, _ = mail_rig()
    proto, tr = connect(rig, "192.0.2.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: login refused: this connection is neither encrypted "
                               b"nor local")
    assert sessions == []
    secure, tr2 = connect(rig, "192.0.2.1", secure=True)  # a TLS listener
    secure.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr2) == b"ok logged in as alice\r\n"


def test_cleartext_login_allowed_only_when_configured(sessions):
    rig, _ = mail_rig(allow_cleartext_login=True)
    proto, tr = connect(rig, "192.0.2.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr) == b"ok logged in as alice\r\n"


def test_failed_logins_are_held_back_then_the_address_is_locked_out(sessions):
    rig, mail = mail_rig(login_failures=3, login_lockout=60.0)
    proto, tr = connect(rig, "127.0.0.1")
    expected = b"error: login failed: wrong user name or password\r\n"
    for delay in (1.0, 2.0, 4.0):
        proto.dataReceived(b"login alice wrong\n")
        rig.clock.advance(delay - 0.01)
        assert take(tr) == b""  # held back
        rig.clock.advance(0.01)
        assert take(tr) == expected
    other, tr2 = connect(rig, "127.0.0.2")  # the lock-out is per address
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: too many failed logins from your address; try again in ")
    other.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr2) == b"ok logged in as alice\r\n"
    rig.clock.advance(60.0)
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr) == b"ok logged in as alice\r\n"
    assert mail.throttle.addresses() == 0


def test_mail_commands_use_the_session_and_closing_logs_out(sessions):
    rig, mail = mail_rig()
    proto, tr = connect(rig, "127.0.0.1")
    proto.dataReceived(b"check\n")
    assert take(tr) == b"error: login first\r\n"
    proto.dataReceived(f"login alice {PASSWORD}\ncheck\ncheck Sent Items\n".encode())
    assert take(tr) == (b"ok logged in as alice\r\n"
                        b"ok INBOX messages=12 unseen=3 recent=0\r\n"
                        b"ok Sent Items messages=12 unseen=3 recent=0\r\n")
    proto.dataReceived(f"login bob {PASSWORD}\n".encode())
    assert take(tr) == b"error: already logged in as alice; 'logout' first\r\n"
    assert mail.status_lines() == ["mail sessions: 1 logged in, 0 watching; failed logins on "
                                   "record from 0 addresses"]
    lose(proto, tr)
    assert sessions[0].logged_out
    assert mail.clients == {}


def test_a_watch_that_ends_by_itself_is_pushed_and_no_longer_counted(sessions):
    rig, mail = mail_rig()
    proto, tr = connect(rig, "127.0.0.1")
    proto.dataReceived(f"login alice {PASSWORD}\nwatch on\n".encode())
    assert take(tr) == (b"ok logged in as alice\r\n"
                        b"ok watching INBOX messages=12 unseen=3 recent=0\r\n")
    assert mail.status_lines()[0].startswith("mail sessions: 1 logged in, 1 watching;")
    sessions[0].notify("INBOX", MailboxCounts(13, 4, 1, 101, 7))
    sessions[0].ended("mailbox INBOX: Mailbox doesn't exist: INBOX\x1b[2J")
    assert take(tr) == (b"* new mail: INBOX messages=13 unseen=4\r\n"
                        b"* watch ended: mailbox INBOX: Mailbox doesn't exist: INBOX [2J\r\n")
    assert mail.status_lines()[0].startswith("mail sessions: 1 logged in, 0 watching;")


def test_a_lost_session_is_pushed_and_login_is_needed_again(sessions):
    rig, _ = mail_rig()
    proto, tr = connect(rig, "127.0.0.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    take(tr)
    sessions[0].alive = False
    sessions[0].on_lost("the mail server closed the connection")
    assert take(tr) == (b"error: mail session lost (the mail server closed the connection); "
                        b"login again\r\n")
    proto.dataReceived(b"check\n")
    assert take(tr) == b"error: login first\r\n"


def test_arguments_are_checked_before_the_mail_server_is_asked(sessions):
    rig, _ = mail_rig()
    proto, tr = connect(rig, "127.0.0.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    take(tr)
    proto.dataReceived(b"read 0\nread x1\ndelete 5 4294967296\nlist 0\nwatch maybe\n"
                       b"send a@b.example\nlogout\ncheck\n")
    assert take(tr).decode().splitlines() == [
        "error: not a UID: '0' (UIDs are the numbers 'list' shows)",
        "error: not a UID: 'x1' (UIDs are the numbers 'list' shows)",
        "error: not a UID: '4294967296' (UIDs are the numbers 'list' shows)",
        "error: COUNT must be 1 to 500",
        "error: usage: watch on|off [MAILBOX]",
        "error: sending is not configured on this server (no [smtp])",
        "ok logged out",
        "error: login first",
    ]


def test_digits_that_are_not_ascii_are_not_uids(sessions):
    rig, _ = mail_rig()
    proto, tr = connect(rig, "127.0.0.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    take(tr)
    proto.dataReceived("read \u00b2\ndelete \u0663\n".encode())
    assert take(tr).decode().splitlines() == [
        "error: not a UID: '\u00b2' (UIDs are the numbers 'list' shows)",
        "error: not a UID: '\u0663' (UIDs are the numbers 'list' shows)",
    ]


def test_without_imap_login_says_mail_is_not_configured(sessions):
    rig, _ = mail_rig(imap=None)
    proto, tr = connect(rig, "127.0.0.1")
    proto.dataReceived(b"login alice x\n")
    assert take(tr) == (b"error: mail is not configured on this server "
                        b"(no [imap] in its configuration)\r\n")


def test_the_password_never_reaches_the_log(sessions):
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        rig, _ = mail_rig()
        proto, tr = connect(rig, "127.0.0.1")
        proto.dataReceived(f"login alice {PASSWORD}x\n".encode())
        rig.clock.advance(2.0)
        proto.dataReceived(f"login alice {PASSWORD}\n".encode())
        assert take(tr).endswith(b"ok logged in as alice\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any(e.get("event") == "login_failed" for e in events)
    assert any(e.get("event") == "login" for e in events)
    assert PASSWORD not in repr(events)
