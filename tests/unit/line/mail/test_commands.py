"""The mail bridge without sockets: line clients through the real command table and server, a
real UserSession per login, and a scripted IMAP server (userrig) behind each, all on one
task.Clock.

Login policy, throttling and arguments; what reaches the IMAP server (the password and mailbox
names byte for byte); one login state on the line Session; mail-side failures as ``error:``
lines; and the bridge's stopService logging every user out within the grace period.
"""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace
from typing import Any, cast

import pytest
from linerig import Rig, lose, take
from mailrig import STATUS_ITEMS, MailReactorClock, account
from twisted.application.service import MultiService
from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from userrig import CAPS, UserRig, imap_config

from mailsocketd.line.config import LineConfig
from mailsocketd.line.factory import peer_uid
from mailsocketd.line.mail.commands import MailBridge, as_user_error
from mailsocketd.line.mail.state import BridgeReactor, MailUser
from mailsocketd.line.mail.throttle import MAX_DELAY
from mailsocketd.line.replies import CommandError
from mailsocketd.mail.accounts.service import AccountsService
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
        self.client_ips: list[str | None] = []  # what each login was told to send with ID

    async def open(self, imap: ImapConfig, user: str, password: Secret,
                   client_ip: str | None = None) -> UserSession:
        rig = UserRig(imap, clock=self.clock).connect()
        self.rigs.append(rig)
        self.client_ips.append(client_ip)
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


def test_a_password_with_a_no_break_space_reaches_the_imap_server_as_typed():
    """Issue 11, item 7: str.split() took U+00A0 for a separator, so this user could not log
    in (and each try counted toward the lockout)."""
    rig, _, servers = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived("login alice pass\u00a0word\r\n".encode())
    accept(servers.last, password="pass\u00a0word".encode())
    assert take(tr) == b"ok logged in as alice\r\n"


def test_mailbox_names_reach_the_imap_server_with_their_spacing():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"check Sent  Items\n")
    assert imap.expect(b"STATUS") == b'"Sent  Items" ' + STATUS_ITEMS
    imap.reply('STATUS "Sent  Items" (MESSAGES 12 UNSEEN 3 RECENT 0 UIDNEXT 13 UIDVALIDITY 7)')
    assert take(tr) == b"ok Sent  Items messages=12 unseen=3 recent=0\r\n"


def test_status_forgets_a_lockout_once_it_is_over_without_another_attempt():
    """Issue 16: 396 s after the last failure, with a 300 s lockout, status still said
    'failed logins on record from 1 addresses' (the record was pruned only when used)."""
    rig, bridge, servers = bridge_rig(login_failures=3, login_lockout=300.0)
    proto, _ = connect(rig, "127.0.0.1")
    for delay in (1.0, 2.0, 4.0):
        proto.dataReceived(b"login alice wrong\n")
        refuse(servers.last)
        rig.clock.advance(delay)
    assert bridge.status_lines()[0].endswith("failed logins on record from 1 addresses")
    rig.clock.advance(396.0 - 7.0)
    assert bridge.status_lines()[0].endswith("failed logins on record from 0 addresses")


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
    rig.clock.advance(1)  # IDLE_MIN_SPACING
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


def test_a_lost_session_is_a_pushed_line_and_the_next_mail_command_says_so():
    """Issue 11 item 19: the notice is a ``* `` line (a script reading one reply per command
    skips it); the next mail command answers ``error:``, then login is needed again."""
    rig, bridge, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    imap.transport.loseConnection()
    rig.clock.advance(0)
    assert take(tr) == (b"* mail session lost (the mail server closed the connection); "
                        b"login again\r\n")
    assert bridge.status_lines()[0].startswith("mail sessions: 0 logged in")
    proto.dataReceived(b"time\ncheck\ncheck\n")
    lines = take(tr).split(b"\r\n")
    assert lines[1:] == [b"error: the mail session was lost (the mail server closed the "
                         b"connection); login again", b"error: login first", b""]
    assert proto.session.user is None


def test_a_session_lost_while_watching_ends_the_watch_with_its_line_first():
    """Issue 15, 3: Dovecot ends the session whose selected (watched) mailbox another client
    deleted (the line below); the watch ends with ``* watch ended``, as on Cyrus and Courier."""
    rig, bridge, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"watch on Work\n")
    imap.status_of("Work")
    imap.select(b"EXAMINE", "Work")
    imap.idle()
    take(tr)
    imap.server("* BYE IMAP session state is inconsistent, please relogin.")
    imap.transport.loseConnection()
    rig.clock.advance(0)
    assert take(tr) == (b"* watch ended: the mail session was lost\r\n"
                        b"* mail session lost (the mail server closed the connection (IMAP "
                        b"session state is inconsistent, please relogin.)); login again\r\n")
    assert bridge.status_lines()[0].startswith("mail sessions: 0 logged in, 0 watching;")


def test_a_lost_session_notice_between_a_command_and_its_reply_is_a_pushed_line():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    proto.dataReceived(b"check Work\n")
    imap.expect(b"STATUS")
    imap.transport.loseConnection()
    rig.clock.advance(0)
    lines = take(tr).split(b"\r\n")
    assert lines[0] == b"* mail session lost (the mail server closed the connection); login again"
    assert lines[1].startswith(b"error: ") and lines[2:] == [b""]


def test_login_again_after_a_lost_session_needs_no_logout():
    rig, _, servers = bridge_rig()
    proto, tr, imap = logged_in(rig, servers)
    imap.transport.loseConnection()
    rig.clock.advance(0)
    take(tr)
    proto.dataReceived(f"login bob {PASSWORD}\n".encode())
    accept(servers.last, user=b"bob")
    assert take(tr) == b"ok logged in as bob\r\n"


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
                       b"send a@b.example\n.\nlogout\ncheck\n")
    assert take(tr).decode().splitlines() == [
        "error: not a UID: '0' (UIDs are the numbers 'list' shows)",
        "error: not a UID: 'x1' (UIDs are the numbers 'list' shows)",
        "error: not a UID: '4294967296' (UIDs are the numbers 'list' shows)",
        "error: COUNT must be 1 to 500",
        "error: usage: watch on|off [MAILBOX]",
        "error: sending is not configured on this server (no [smtp]); the message up to the "
        "lone '.' is discarded",
        "error: not sent: sending is not configured on this server (no [smtp])",
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
                                     b"watch on", b"mailboxes", b"logout"])
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


# -- issue 11 item 6: the lock-out counts logins under way, keyed by client and by user ------

WRONG = b"login alice wrong\n"
REFUSED_ADDRESS = b"error: too many logins from your address are waiting for the mail server"


def test_logins_sent_at_once_on_many_connections_reach_the_server_at_most_limit_times():
    rig, _, servers = bridge_rig(login_failures=5)
    clients = [connect(rig, "127.0.0.1") for _ in range(59)]
    for proto, _ in clients:
        proto.dataReceived(WRONG)
    assert len(servers.rigs) == 5  # the other 54 were refused before the IMAP round trip
    for _, tr in clients[5:]:
        assert take(tr).startswith(REFUSED_ADDRESS)
    for imap in servers.rigs:
        refuse(imap)
    rig.clock.advance(MAX_DELAY)
    last, tr = connect(rig, "127.0.0.1")
    last.dataReceived(f"login alice {PASSWORD}\n".encode())  # the right password, the 60th
    assert take(tr).startswith(b"error: too many failed logins from your address; try again")
    assert len(servers.rigs) == 5


def test_a_login_that_succeeds_frees_its_place_at_once():
    rig, _, servers = bridge_rig(login_failures=2)
    first, tr1 = connect(rig)
    second, _ = connect(rig)
    first.dataReceived(f"login alice {PASSWORD}\n".encode())
    second.dataReceived(f"login bob {PASSWORD}\n".encode())
    third, tr3 = connect(rig)
    third.dataReceived(f"login carol {PASSWORD}\n".encode())
    assert take(tr3).startswith(REFUSED_ADDRESS)
    accept(servers.rigs[0])
    assert take(tr1) == b"ok logged in as alice\r\n"
    third.dataReceived(f"login carol {PASSWORD}\n".encode())
    accept(servers.last, user=b"carol")
    assert take(tr3) == b"ok logged in as carol\r\n"


def test_ipv6_clients_of_one_slash_64_share_one_lockout():
    rig, _, servers = bridge_rig(login_failures=2, allow_cleartext_login=True)
    for host in ("2001:db8:1:2::a", "2001:db8:1:2::b"):
        proto, tr = connect(rig, host)
        proto.dataReceived(WRONG)
        refuse(servers.last)
        rig.clock.advance(MAX_DELAY)
    asked = len(servers.rigs)
    proto, tr = connect(rig, "2001:db8:1:2:ffff::1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: too many failed logins from your address")
    assert len(servers.rigs) == asked
    other, tr2 = connect(rig, "2001:db8:1:3::1")  # the next /64 is someone else
    other.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr2) == b"ok logged in as alice\r\n"


def unix_client(rig: Rig, uid: int | None) -> tuple[Any, Any]:
    proto: Any = rig.factory.buildProtocol(UNIXAddress(b"/run/mailsocketd.sock"))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.session.uid = uid  # what SO_PEERCRED said (a StringTransport has no socket)
    return proto, transport


def test_unix_socket_clients_are_locked_out_by_their_peer_uid():
    rig, _, servers = bridge_rig(login_failures=2)
    for _ in range(2):
        proto, tr = unix_client(rig, 1000)
        proto.dataReceived(WRONG)
        refuse(servers.last)
        rig.clock.advance(MAX_DELAY)
    assert servers.client_ips == [None, None]  # no IP address to tell the IMAP server
    proto, tr = unix_client(rig, 1000)
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: too many failed logins from your address")
    other, tr2 = unix_client(rig, 1001)  # another local user is not locked out with uid 1000
    other.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr2) == b"ok logged in as alice\r\n"


def test_the_peer_uid_of_a_unix_socket_is_read_with_so_peercred():
    left, right = socket.socketpair(socket.AF_UNIX)
    try:
        assert peer_uid(SimpleNamespace(socket=left)) == os.getuid()
    finally:
        left.close()
        right.close()
    assert peer_uid(StringTransport()) is None


def test_failures_per_user_name_are_limited_across_addresses():
    rig, _, servers = bridge_rig(login_failures=5, login_user_failures=3,
                                      login_user_lockout=3600.0)
    for n, name in enumerate(("alice", "ALICE", "alice@evil.example")):
        proto, tr = connect(rig, f"127.0.0.{n + 2}")
        proto.dataReceived(f"login {name} wrong\n".encode())
        refuse(servers.last)
        rig.clock.advance(MAX_DELAY)
    asked = len(servers.rigs)
    proto, tr = connect(rig, "127.0.0.9")  # a fresh address, the right password
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr).startswith(b"error: too many failed logins for this user name; try again "
                               b"in ")
    assert len(servers.rigs) == asked
    proto.dataReceived(f"login bob {PASSWORD}\n".encode())  # other users are not affected
    accept(servers.last, user=b"bob")
    assert take(tr) == b"ok logged in as bob\r\n"
    rig.clock.advance(3600.0)
    other, tr2 = connect(rig, "127.0.0.9")
    other.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr2) == b"ok logged in as alice\r\n"


def test_the_per_user_limit_can_be_switched_off():
    rig, _, servers = bridge_rig(login_failures=5, login_user_failures=0)
    for n in range(4):
        proto, tr = connect(rig, f"127.0.0.{n + 2}")
        proto.dataReceived(WRONG)
        refuse(servers.last)
        rig.clock.advance(MAX_DELAY)
    proto, tr = connect(rig, "127.0.0.9")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr) == b"ok logged in as alice\r\n"


# -- issue 11 item 8: IMAP sessions are capped; the client's address goes to the server ------

def test_sessions_per_user_are_capped_counting_logins_under_way():
    rig, _, servers = bridge_rig(mail_sessions_per_user=2)
    logged_in(rig, servers)
    pending, tr = connect(rig)
    pending.dataReceived(f"login Alice {PASSWORD}\n".encode())  # under way, not answered
    third, tr3 = connect(rig)
    third.dataReceived(f"login alice {PASSWORD}\n".encode())
    assert take(tr3) == (b"error: too many mail sessions for this user (2 at most); log out "
                         b"of another first\r\n")
    assert len(servers.rigs) == 2
    third.dataReceived(f"login bob {PASSWORD}\n".encode())  # another user is not capped
    accept(servers.last, user=b"bob")
    assert take(tr3) == b"ok logged in as bob\r\n"
    refuse(servers.rigs[1])  # the one under way fails: its place is free again
    rig.clock.advance(MAX_DELAY)
    pending.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert take(tr).endswith(b"ok logged in as alice\r\n")


def test_sessions_in_total_are_capped_and_a_logout_frees_a_place():
    rig, _, servers = bridge_rig(mail_sessions=2)
    first, _, _ = logged_in(rig, servers, "alice")
    logged_in(rig, servers, "bob")
    proto, tr = connect(rig)
    proto.dataReceived(f"login carol {PASSWORD}\n".encode())
    assert take(tr) == (b"error: too many mail sessions on this server (2 at most); try "
                        b"again later\r\n")
    first.dataReceived(b"logout\n")
    proto.dataReceived(f"login carol {PASSWORD}\n".encode())
    accept(servers.last, user=b"carol")
    assert take(tr) == b"ok logged in as carol\r\n"


def test_the_default_cap_is_below_dovecots_ten_sessions_per_user_and_address():
    assert LineConfig().mail_sessions_per_user < 10


def test_the_client_address_is_given_to_the_opener_for_the_imap_server():
    rig, _, servers = bridge_rig(allow_cleartext_login=True)
    proto, _ = connect(rig, "192.0.2.44")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    assert servers.client_ips == ["192.0.2.44"]


# -- issue 11 item 13: what `status` shows to whom -------------------------------------------

SECRET_PATH = "/etc/mailsocketd/work.password"  # noqa: S105 - a path, no password


def status_rig(**line: Any) -> tuple[Rig, Servers]:
    """The line server with the mail bridge and one monitored account whose error names a
    file, as tap.py wires them."""
    rig, bridge, servers = bridge_rig(allow_cleartext_login=True, **line)
    accounts = AccountsService([account(name="work")], MailReactorClock(), {})
    accounts.watchers[0].state.connection_failed(
        f"password_file {SECRET_PATH}: permission denied", "backing-off", 60.0)
    rig.server.status_sources += [bridge.status_lines, accounts.status_lines]
    return rig, servers


def status_of(proto: Any, tr: Any) -> list[str]:
    proto.dataReceived(b"status\n")
    return take(tr).decode().split("\r\n")


def test_local_clients_see_the_accounts_with_their_errors():
    rig, _ = status_rig()
    for proto, tr in (connect(rig, "127.0.0.1"), unix_client(rig, 1000)):
        (line,) = [s for s in status_of(proto, tr) if s.startswith("account ")]
        assert line.startswith("account work INBOX: state=backing-off ")
        assert line.endswith(f"error=password_file {SECRET_PATH}: permission denied")


def test_remote_clients_see_no_account_and_no_path():
    rig, servers = status_rig(status_users=("alice",))
    proto, tr = connect(rig, "192.0.2.1")
    shown = status_of(proto, tr)
    assert not [s for s in shown if s.startswith("account ") or SECRET_PATH in s]
    assert [s for s in shown if s.startswith("mail sessions: ")]  # the daemon's numbers stay
    proto.dataReceived(f"login bob {PASSWORD}\n".encode())  # logged in, but not allowed
    accept(servers.last, user=b"bob")
    take(tr)
    assert not [s for s in status_of(proto, tr) if s.startswith("account ")]


def test_an_allowed_remote_user_sees_the_accounts_but_no_error_text():
    rig, servers = status_rig(status_users=("Alice",))
    proto, tr = connect(rig, "192.0.2.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    accept(servers.last)
    take(tr)
    shown = status_of(proto, tr)
    (line,) = [s for s in shown if s.startswith("account ")]
    assert line.startswith("account work INBOX: state=backing-off ")
    assert line.endswith(" error=yes")
    assert not [s for s in shown if SECRET_PATH in s]


def test_status_users_star_allows_every_logged_in_user():
    rig, servers = status_rig(status_users=("*",))
    proto, tr = connect(rig, "192.0.2.1")
    assert not [s for s in status_of(proto, tr) if s.startswith("account ")]
    proto.dataReceived(f"login bob {PASSWORD}\n".encode())
    accept(servers.last, user=b"bob")
    take(tr)
    assert [s for s in status_of(proto, tr) if s.endswith(" error=yes")]
