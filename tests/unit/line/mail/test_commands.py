"""The mail bridge without sockets: line clients through the real command table and server, a
real UserSession per login, and a scripted IMAP server (userrig) behind each, all on one
task.Clock.

Login policy, throttling and arguments; what reaches the IMAP server (the password and mailbox
names byte for byte); one login state on the line Session; mail-side failures as ``error:``
lines; and the bridge's stopService logging every user out within the grace period.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from linerig import Rig, lose, take
from mailrig import STATUS_ITEMS
from twisted.application.service import MultiService
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from userrig import CAPS, UserRig, imap_config

from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.commands import BridgeReactor, MailBridge, MailUser, as_user_error
from mailsocketd.line.replies import CommandError
from mailsocketd.mail.errors import MailError
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import UserSession, start_user_session
from mailsocketd.net import is_local
from mailsocketd.tap import CloseClientsOnStop

PASSWORD = "correct-horse-battery-staple-7731"  # noqa: S105 - a test password
IMAP = imap_config()


class Servers:
    """The scripted IMAP server of each login, on the line rig's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rigs: list[UserRig] = []

    async def open(self, imap: ImapConfig, user: str, password: Secret) -> UserSession:
        rig = UserRig(imap, clock=self.clock).connect()
        self.rigs.append(rig)
        return await start_user_session(rig.client, imap, user, password, clock=self.clock)

    @property
    def last(self) -> UserRig:
        return self.rigs[-1]


def accept(rig: UserRig, user: bytes = b"alice", password: bytes = PASSWORD.encode()) -> None:
    """The server takes the login (AUTHENTICATE PLAIN of exactly these bytes), INBOX opens."""
    rig.greet("IMAP4rev1 AUTH=PLAIN")
    rig.plain_login(user=user, password=password, caps_after=CAPS)
    rig.select(exists=3)


def refuse(rig: UserRig) -> None:
    """The server refuses the password."""
    rig.greet("IMAP4rev1 AUTH=PLAIN")
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")


def bridge_rig(imap: ImapConfig | None = IMAP, **line: Any
               ) -> tuple[Rig, MailBridge, Servers]:
    clock = Clock()
    servers = Servers(clock)
    config = LineConfig(**line)
    # No reactor: the clock and the scripted servers' opener stand in for all it would do here
    # (no message is rendered in its thread pool, no [smtp] to send with).
    bridge = MailBridge(cast(BridgeReactor, None), config, imap, None, clock=clock,
                        opener=servers.open)
    rig = Rig(bridge.commands(), clock=clock, **line)
    bridge.sessions = rig.server.sessions
    return rig, bridge, servers


def connect(rig: Rig, host: str = "127.0.0.1", secure: bool = False) -> tuple[Any, Any]:
    proto, tr = rig.connect(host)
    proto.session.secure = secure
    return proto, tr


def logged_in(rig: Rig, servers: Servers, user: str = "alice") -> tuple[Any, Any, UserRig]:
    proto, tr = connect(rig)
    proto.dataReceived(f"login {user} {PASSWORD}\n".encode())
    accept(servers.last, user=user.encode())
    assert take(tr) == f"ok logged in as {user}\r\n".encode()
    return proto, tr, servers.last


def test_loopback_and_unix_are_local_other_addresses_are_not():
    assert is_local("127.0.0.1") and is_local("127.8.9.10") and is_local("::1")
    assert is_local("unix")
    assert is_local("::ffff:127.0.0.1") and not is_local("::ffff:192.0.2.1")  # dual stack
    assert not is_local("192.0.2.1") and not is_local("2001:db8::1") and not is_local("bogus")


def test_login_over_a_network_in_clear_is_refused_before_any_password_is_used():
    rig, _, servers = bridge_rig()
    proto, tr = connect(rig, "192.0.2.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: login refused: this connection is neither encrypted "
                               b"nor local")
    assert servers.rigs == []
    secure, tr2 = connect(rig, "192.0.2.1", secure=True)  # a TLS listener
    secure.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr2) == b"ok logged in as alice\r\n"


def test_cleartext_login_allowed_only_when_configured():
    rig, _, servers = bridge_rig(allow_cleartext_login=True)
    proto, tr = connect(rig, "192.0.2.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr) == b"ok logged in as alice\r\n"


def test_the_password_reaches_the_imap_server_byte_for_byte():
    rig, _, servers = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"login alice  two  spaces\tand\t\ttabs \r\n")
    accept(servers.last, password=b"two  spaces\tand\t\ttabs ")  # AUTHENTICATE PLAIN
    assert take(tr) == b"ok logged in as alice\r\n"
    other, _ = connect(rig)
    other.dataReceived(b"login bob a  b\t c\n")
    servers.last.greet("IMAP4rev1")  # no AUTH=PLAIN: LOGIN, the password a quoted string
    assert servers.last.expect(b"LOGIN") == b'"bob" "a  b\t c"'


def test_mailbox_names_reach_the_imap_server_with_their_spacing():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"check Sent  Items\n")
    assert imap.expect(b"STATUS") == b'"Sent  Items" ' + STATUS_ITEMS
    imap.reply('STATUS "Sent  Items" (MESSAGES 12 UNSEEN 3 RECENT 0 UIDNEXT 13 UIDVALIDITY 7)')
    assert take(tr) == b"ok Sent  Items messages=12 unseen=3 recent=0\r\n"


def test_failed_logins_are_held_back_then_the_address_is_locked_out():
    rig, bridge, servers = bridge_rig(login_failures=3, login_lockout=60.0)
    proto, tr = connect(rig, "127.0.0.1")
    expected = b"error: login failed: wrong user name or password\r\n"
    for delay in (1.0, 2.0, 4.0):
        proto.dataReceived(b"login alice wrong\n")
        refuse(servers.last)
        rig.clock.advance(delay - 0.01)
        assert take(tr) == b""  # held back
        rig.clock.advance(0.01)
        assert take(tr) == expected
    asked = len(servers.rigs)
    other, tr2 = connect(rig, "127.0.0.2")  # the lock-out is per address
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: too many failed logins from your address; try again in ")
    assert len(servers.rigs) == asked  # refused without asking the IMAP server
    other.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr2) == b"ok logged in as alice\r\n"
    rig.clock.advance(60.0)
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr) == b"ok logged in as alice\r\n"
    assert bridge.throttle.addresses() == 0


def test_one_login_state_on_the_session_and_closing_logs_out():
    rig, bridge, servers = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"check\n")
    assert take(tr) == b"error: login first\r\n"
    proto.dataReceived(f"login alice {PASSWORD}\ncheck\n".encode())
    imap = servers.last
    accept(imap)
    imap.fresh_status_of(messages=12, unseen=3)
    assert take(tr) == (b"ok logged in as alice\r\n"
                        b"ok INBOX messages=12 unseen=3 recent=0\r\n")
    user = proto.session.user
    assert isinstance(user, MailUser) and user.name == "alice" and user.imap.alive
    proto.dataReceived(f"login bob {PASSWORD}\n".encode())
    assert take(tr) == b"error: already logged in as alice; 'logout' first\r\n"
    assert bridge.status_lines() == ["mail sessions: 1 logged in, 0 watching; failed logins on "
                                     "record from 0 addresses"]
    lose(proto, tr)
    assert proto.session.user is None
    imap.expect(b"LOGOUT")
    assert bridge.status_lines()[0].startswith("mail sessions: 0 logged in")


def test_logout_then_login_again_on_one_connection():
    rig, bridge, servers = bridge_rig()
    proto, tr, first = logged_in(rig, servers)
    proto.dataReceived(b"logout\ncheck\n")
    assert take(tr) == b"ok logged out\r\nerror: login first\r\n"
    first.expect(b"LOGOUT")
    proto, tr2, second = logged_in(rig, servers, "bob")
    assert bridge.status_lines()[0].startswith("mail sessions: 1 logged in")
    lose(proto, tr2)
    second.expect(b"LOGOUT")
    assert first.sent() == []  # logged out once


def test_a_watch_pushes_new_mail_and_says_when_it_ends():
    rig, bridge, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"watch on Work\n")
    imap.status_of("Work", messages=12, unseen=3, uidnext=13)
    assert take(tr) == b"ok watching Work messages=12 unseen=3 recent=0\r\n"
    assert bridge.status_lines()[0].startswith("mail sessions: 1 logged in, 1 watching;")
    imap.select(b"EXAMINE", "Work", exists=12, uidnext=13)
    imap.idle()
    imap.server("* 13 EXISTS")
    imap.done()
    imap.fresh_status_of("Work", messages=13, unseen=4, uidnext=14)
    assert take(tr) == b"* new mail: Work messages=13 unseen=4\r\n"
    rig.clock.advance(60)
    imap.idle()
    proto.dataReceived(b"watch off\n")
    imap.done()
    assert take(tr) == b"ok not watching\r\n"
    assert bridge.status_lines()[0].startswith("mail sessions: 1 logged in, 0 watching;")


def test_a_watch_that_ends_by_itself_is_pushed_and_no_longer_counted():
    rig, bridge, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"watch on Work\n")
    imap.status_of("Work")
    take(tr)
    assert imap.expect(b"EXAMINE") == b"Work"  # the mailbox is gone meanwhile
    imap.reply(status="NO", text="[NONEXISTENT] Mailbox doesn't exist: Work\x1b[2J")
    assert take(tr) == b"* watch ended: mailbox Work: Mailbox doesn't exist: Work [2J\r\n"
    assert bridge.status_lines()[0].startswith("mail sessions: 1 logged in, 0 watching;")


def test_a_lost_session_is_pushed_and_login_is_needed_again():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    imap.transport.loseConnection()
    rig.clock.advance(0)
    assert take(tr) == (b"error: mail session lost (the mail server closed the connection); "
                        b"login again\r\n")
    assert proto.session.user is None
    proto.dataReceived(b"check\n")
    assert take(tr) == b"error: login first\r\n"


def test_mail_server_failures_are_error_lines_not_internal_errors():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"check Nope\n")
    imap.expect(b"STATUS")
    imap.reply(status="NO", text="[NONEXISTENT] Mailbox doesn't exist: Nope")
    assert take(tr) == b"error: mailbox Nope: Mailbox doesn't exist: Nope\r\n"


def test_as_user_error_is_the_one_translation():
    assert str(as_user_error(ConnectionLost())) == "connection lost"
    assert isinstance(as_user_error(ConnectionLost()), CommandError)
    assert str(as_user_error(MailError("timed out after 30 s"))) == "timed out after 30 s"
    bug = RuntimeError("secret detail")
    assert as_user_error(bug) is bug  # a bug stays a bug: logged, "internal error" shown


def test_arguments_are_checked_before_the_mail_server_is_asked():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
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
    assert imap.commands() == [b"LOGOUT"]  # nothing else was asked


def test_digits_that_are_not_ascii_are_not_uids():
    rig, _, servers = bridge_rig()
    proto, tr, _ = logged_in(rig, servers)
    proto.dataReceived("read \u00b2\ndelete \u0663\n".encode())
    assert take(tr).decode().splitlines() == [
        "error: not a UID: '\u00b2' (UIDs are the numbers 'list' shows)",
        "error: not a UID: '\u0663' (UIDs are the numbers 'list' shows)",
    ]


def test_help_names_the_mail_commands_arguments():
    rig, _, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"help login\nhelp list\n")
    assert take(tr).decode().split("\r\n") == [
        "ok login USER PASSWORD",
        "log in with your mail user and password",
        "USER: a word",
        "PASSWORD: the rest of the line, exactly as typed (spaces kept)",
        ".",
        "ok list [COUNT] [MAILBOX]",
        "the newest COUNT (20) messages (after login)",
        "COUNT: optional; a number",
        "MAILBOX: optional; the rest of the line, exactly as typed (spaces kept)",
        ".",
        "",
    ]


def test_without_imap_login_says_mail_is_not_configured():
    rig, _, _ = bridge_rig(imap=None)
    proto, tr = connect(rig)
    proto.dataReceived(b"login alice x\n")
    assert take(tr) == (b"error: mail is not configured on this server "
                        b"(no [imap] in its configuration)\r\n")


def test_the_password_never_reaches_the_log():
    with capturedLogs() as events:
        rig, _, servers = bridge_rig()
        proto, tr = connect(rig)
        proto.dataReceived(f"login alice {PASSWORD}x\n".encode())
        refuse(servers.last)
        rig.clock.advance(2.0)
        proto.dataReceived(f"login alice {PASSWORD}\n".encode())
        accept(servers.last)
        assert take(tr).endswith(b"ok logged in as alice\r\n")
    assert any(e.get("event") == "login_failed" for e in events)
    assert any(e.get("event") == "login" for e in events)
    assert PASSWORD not in repr(events)


# -- shutdown ------------------------------------------------------------------------------

def test_stop_logs_every_user_out_and_fires_when_all_are_out():
    rig, bridge, servers = bridge_rig()
    _, _, alice = logged_in(rig, servers)
    _, _, bob = logged_in(rig, servers, "bob")
    connect(rig)  # not logged in: nothing to do for it
    bridge.startService()
    stopped = bridge.stopService()
    for imap in (alice, bob):
        imap.expect(b"LOGOUT")
    assert not stopped.called
    alice.reply("BYE Logging out")
    assert not stopped.called
    bob.reply("BYE Logging out")
    rig.clock.advance(0)
    assert stopped.called
    assert bridge.status_lines()[0].startswith("mail sessions: 0 logged in")
    assert [c for c in rig.clock.getDelayedCalls() if c.func.__name__ == "finish"] == []


def test_stop_waits_no_longer_than_the_grace_period():
    rig, bridge, servers = bridge_rig(close_grace=1.5)
    proto, tr, imap = logged_in(rig, servers)
    bridge.startService()
    with capturedLogs() as events:
        stopped = bridge.stopService()
        imap.expect(b"LOGOUT")  # and no answer
        rig.clock.advance(1.4)
        assert not stopped.called
        rig.clock.advance(0.1)
        assert stopped.called
    assert [e["count"] for e in events if e.get("event") == "mail_logout_timeout"] == [1]
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr) == b"error: server shutting down\r\n"


def test_a_login_that_completes_during_shutdown_is_logged_out():
    rig, bridge, servers = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    bridge.startService()
    stopped = bridge.stopService()
    assert stopped.called  # nobody was logged in yet
    accept(servers.last)
    assert take(tr) == b"error: server shutting down\r\n"
    assert proto.session.user is None
    servers.last.expect(b"LOGOUT")


def test_daemon_shutdown_logs_users_out_while_clients_are_told():
    """As tap wires it: the users' IMAP logouts begin as the clients are told, and the whole
    stop ends within the grace period even if the mail server never answers."""
    rig, bridge, servers = bridge_rig(close_grace=2.0)
    proto, tr, imap = logged_in(rig, servers)
    top = MultiService()
    CloseClientsOnStop(rig.factory).setServiceParent(top)
    bridge.setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    imap.expect(b"LOGOUT")
    assert take(tr) == b"error: server shutting down\r\n"  # no "mail session lost" first
    assert proto.session.user is None
    lose(proto, tr)  # the client closes its side
    assert imap.sent() == []  # logged out once
    rig.clock.advance(2.0)
    assert stopped.called


@pytest.mark.parametrize("command", [b"check", b"list", b"read 1", b"delete 1",
                                     b"send bob@example.test", b"watch on", b"mailboxes",
                                     b"logout"])
def test_mail_commands_need_login(command):
    rig, _, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(command + b"\n")
    assert take(tr) == b"error: login first\r\n"


@pytest.mark.parametrize("doc", ["README.md", "docs/protocol.md"])
def test_the_documented_help_is_the_real_help(doc):
    """The help listing in the README and the protocol document, line for line."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[4] / doc).read_text()
    start = text.index("ok 13 commands\n")
    documented = text[start:text.index("\n.\n", start) + 3].splitlines()
    rig, _, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"help\n")
    assert take(tr).decode().split("\r\n")[:-1] == documented
