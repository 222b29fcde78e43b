"""The reading commands' replies without sockets (issue 11 items 10 and 12): ``list``
summarizes in the thread pool, as ``read`` renders, so the reactor serves others meanwhile; and
no mailbox name, typed or sent by the server, reaches a client with a bidi override or a C1
control in it (``check``, ``mailboxes``, the ``list`` and ``read`` head lines, ``delete``,
``watch`` and ``* new mail:``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from linerig import Rig, take
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from userrig import CAPS, UserRig, imap_config
from zope.interface import implementer

from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.commands import MailBridge
from mailsocketd.line.mail.state import BridgeReactor
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import TlsPolicy
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import UserSession, start_user_session

PASSWORD = "correct-horse-battery-staple-7731"  # noqa: S105 - a test password
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "\u202egpj.exe" shows as "exe.jpg"
CSI = "\x9b"  # the C1 control sequence introducer; "&AJs-" in modified UTF-7


class Pool:
    """A thread pool that runs its jobs only when told (``run``)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., None], Callable[..., Any], tuple[Any, ...],
                              dict[str, Any]]] = []

    def callInThreadWithCallback(self, on_result: Callable[..., None],
                                 f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.jobs.append((on_result, f, args, kw))

    def run(self) -> list[str]:
        """Run the waiting jobs; the names of the functions run."""
        names = []
        while self.jobs:
            on_result, f, args, kw = self.jobs.pop(0)
            names.append(f.__name__)
            on_result(True, f(*args, **kw))
        return names


@implementer(IReactorFromThreads)
class Reactor:
    """What the bridge uses of the reactor here: the thread pool and callFromThread."""

    def __init__(self) -> None:
        self.pool = Pool()

    def getThreadPool(self) -> Pool:
        return self.pool

    def callFromThread(self, callable: Callable[..., Any], *args: object,
                       **kwargs: object) -> None:
        callable(*args, **kwargs)


def bridge_rig(**line: Any) -> tuple[Rig, MailBridge, Reactor, list[UserRig]]:
    clock, reactor, rigs = Clock(), Reactor(), []

    async def opener(imap: ImapConfig, user: str, password: Secret, *_: Any) -> UserSession:
        rig = UserRig(imap, clock=clock).connect()
        rigs.append(rig)
        return await start_user_session(rig.client, imap, user, password, clock=clock)

    bridge = MailBridge(cast(BridgeReactor, reactor), LineConfig(**line), imap_config(), None,
                        clock=clock, opener=opener)
    rig = Rig(bridge.commands(), clock=clock, **line)
    bridge.sessions = rig.server.sessions
    return rig, bridge, reactor, rigs


def logged_in(**line: Any) -> tuple[Rig, Reactor, Any, Any, UserRig]:
    rig, _, reactor, rigs = bridge_rig(**line)
    proto, tr = rig.connect("127.0.0.1")
    proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    imap = rigs[-1]
    imap.greet("IMAP4rev1 AUTH=PLAIN")
    imap.plain_login(user=b"alice", password=PASSWORD.encode(), caps_after=CAPS)
    imap.select(exists=3)
    assert take(tr) == b"ok logged in as alice\r\n"
    return rig, reactor, proto, tr, imap


def fetch_line(seq: int, uid: int, header: bytes) -> bytes:
    return (f"* {seq} FETCH (UID {uid} FLAGS () RFC822.SIZE 100 "
            f"BODY[HEADER.FIELDS (DATE FROM SUBJECT CONTENT-TYPE)]<0> {{{len(header)}}}\r\n"
            ).encode() + header + b")\r\n"


def name_of(args: bytes) -> bytes:
    """The mailbox name of a STATUS or EXAMINE, as sent (an atom or a quoted string)."""
    return args.split(b" (")[0].strip(b'"')


def answer_list(imap: UserRig, mailbox: str = "INBOX") -> None:
    """The FETCH of ``list 2`` of the selected INBOX (after its NOOP)."""
    if mailbox == "INBOX":
        imap.answer(b"NOOP")
    else:
        imap.select(b"EXAMINE", mailbox, exists=3)
    imap.expect(b"FETCH")
    imap.client.dataReceived(
        fetch_line(2, 2, b"From: Bob <bob@example.test>\r\nSubject: older\r\n\r\n")
        + fetch_line(3, 3, b"From: Carol <c@example.test>\r\nSubject: new\r\n\r\n")
        + imap.last_tag + b" OK Fetch completed\r\n")


def test_list_summarizes_in_the_thread_pool_while_others_are_served():
    rig, reactor, proto, tr, imap = logged_in()
    other, other_tr = rig.connect("127.0.0.1")
    proto.dataReceived(b"list 2\n")
    answer_list(imap)
    assert take(tr) == b""  # the headers are in; the summaries are being made elsewhere
    other.dataReceived(b"time\n")
    assert take(other_tr).startswith(b"20")  # the reactor serves another client meanwhile
    assert reactor.pool.run() == ["summary_lines"]
    reply = take(tr).decode().split("\r\n")
    assert reply[0] == "ok 2 of 3 messages in INBOX, newest first (uidvalidity 7)"
    assert reply[1].startswith("3 N ") and "Carol" in reply[1] and reply[1].endswith("new")
    assert reply[2].startswith("2 N ") and reply[3:] == [".", ""]


def test_mailbox_names_from_the_server_are_cleaned_in_mailboxes():
    _, _, proto, tr, imap = logged_in()
    proto.dataReceived(b"mailboxes\n")
    imap.expect(b"LIST")
    imap.reply('LIST () "/" INBOX', 'LIST () "/" "&AJs-2J"', 'LIST () "/" "&IC4-gpj.exe"',
               'LIST (\\Noselect) "/" "x&AJs-[2J"')
    imap.status_of("INBOX", messages=3, unseen=1)
    for encoded in ("&AJs-2J", "&IC4-gpj.exe"):
        assert name_of(imap.expect(b"STATUS")) == encoded.encode()
        imap.reply(f'STATUS "{encoded}" (MESSAGES 1 UNSEEN 1 RECENT 0 UIDNEXT 2 '
                   "UIDVALIDITY 9)")
    reply = take(tr).decode("utf-8")
    assert reply == ("ok 4 mailboxes\r\n"
                     "messages=3 unseen=1 INBOX\r\n"
                     "messages=1 unseen=1 ?2J\r\n"
                     "messages=1 unseen=1 ?gpj.exe\r\n"
                     "messages=- unseen=- x?[2J\r\n"
                     ".\r\n")


def test_typed_and_pushed_mailbox_names_are_cleaned_everywhere():
    _, reactor, proto, tr, imap = logged_in()
    name = f"{RLO}gpj.exe"  # modified UTF-7: &IC4-gpj.exe (a typed C1 control is refused)
    wire = b"&IC4-gpj.exe"
    shown = "?gpj.exe"
    proto.dataReceived(f"check {name}\n".encode())
    assert name_of(imap.expect(b"STATUS")) == wire
    imap.reply(f"STATUS {wire.decode()} (MESSAGES 3 UNSEEN 1 RECENT 0 UIDNEXT 4 UIDVALIDITY 7)")
    assert take(tr).decode() == f"ok {shown} messages=3 unseen=1 recent=0\r\n"

    proto.dataReceived(f"list 2 {name}\n".encode())
    assert name_of(imap.expect(b"EXAMINE")) == wire
    imap.reply("3 EXISTS", "OK [UIDVALIDITY 7] ok", "OK [UIDNEXT 4] ok", text="[READ-ONLY] ok")
    imap.expect(b"FETCH")
    imap.client.dataReceived(fetch_line(3, 3, b"Subject: new\r\n\r\n")
                             + imap.last_tag + b" OK Fetch completed\r\n")
    reactor.pool.run()
    head = take(tr).decode().split("\r\n")[0]
    assert head == f"ok 1 of 3 messages in {shown}, newest first (uidvalidity 7)"

    proto.dataReceived(f"watch on {name}\n".encode())
    assert imap.expect(b"NOOP") == b""  # the selected mailbox: NOOP, then STATUS
    imap.reply()
    assert name_of(imap.expect(b"STATUS")) == wire
    imap.reply(f"STATUS {wire.decode()} (MESSAGES 3 UNSEEN 1 RECENT 0 UIDNEXT 4 UIDVALIDITY 7)")
    assert take(tr).decode() == f"ok watching {shown} messages=3 unseen=1 recent=0\r\n"
    imap.idle()
    imap.server("* 4 EXISTS")
    imap.done()
    imap.fresh_status_of(wire.decode(), messages=4, unseen=2, uidnext=5)
    assert take(tr).decode() == f"* new mail: {shown} messages=4 unseen=2\r\n"


def test_a_typed_control_character_is_refused_not_echoed():
    _, _, proto, tr, imap = logged_in()
    proto.dataReceived(f"check x{CSI}2J\n".encode())
    assert take(tr) == b"error: bad mailbox name: control characters are not allowed\r\n"
    assert imap.sent() == []


def test_a_watching_client_is_not_closed_by_the_idle_timeout():
    """Issue 11 item 11: ``watch on`` was ended by the idle timeout (idle_timeout = 5: pushed
    at 3.6 s, closed at 6.0 s).  While it watches it is kept; after ``watch off`` the limit
    applies again."""
    rig, _, proto, tr, imap = logged_in(idle_timeout=30.0)
    proto.dataReceived(b"watch on\n")
    imap.fresh_status_of(messages=3, unseen=1)
    assert take(tr) == b"ok watching INBOX messages=3 unseen=1 recent=0\r\n"
    imap.idle()
    rig.clock.advance(25)
    imap.server("* 4 EXISTS")
    imap.done()
    imap.fresh_status_of(messages=4, unseen=2, uidnext=5)
    assert take(tr) == b"* new mail: INBOX messages=4 unseen=2\r\n"
    imap.idle()
    for _ in range(20):  # ten minutes of silence from the client (a STATUS each 30 s)
        rig.clock.advance(30)
        imap.done()
        imap.fresh_status_of(messages=4, unseen=2, uidnext=5)
        imap.idle()
    assert take(tr) == b"" and not proto.closing
    proto.dataReceived(b"watch off\n")
    imap.done()
    assert take(tr) == b"ok not watching\r\n"
    rig.clock.advance(31)
    assert take(tr) == b"error: idle timeout (30 s), closing\r\n" and proto.closing


def test_an_unusable_ca_file_at_login_shows_no_server_path(tmp_path):
    """Issue 11 item 16: a ca_file made unusable after start-up (start-up refuses it) showed
    the user ``error: ca_file /path/...: cannot read``.  The user now reads that the server's
    TLS settings are broken; the path is in the log, for the operator."""
    missing = tmp_path / "secret-dir" / "ca.pem"

    async def opener(imap: ImapConfig, user: str, password: Secret, *_: Any) -> UserSession:
        TlsPolicy(str(missing)).options("imap.example.test")  # as connecting reads it
        raise AssertionError("not reached")

    clock = Clock()
    bridge = MailBridge(cast(BridgeReactor, Reactor()), LineConfig(), imap_config(), None,
                        clock=clock, opener=opener)
    rig = Rig(bridge.commands(), clock=clock)
    bridge.sessions = rig.server.sessions
    proto, tr = rig.connect("127.0.0.1")
    with capturedLogs() as events:
        proto.dataReceived(f"login alice {PASSWORD}\n".encode())
    reply = take(tr).decode()
    assert reply == ("error: cannot reach the mail server: this server's TLS settings are "
                     "broken (its ca_file; the details are in its log)\r\n")
    assert "secret-dir" not in reply
    logged = [e for e in events if e.get("event") == "ca_file_unusable"]
    assert len(logged) == 1 and str(missing) in logged[0]["error"]


def test_an_alert_during_read_is_pushed_to_the_user_cleaned():
    """Issue 15, 5: Courier sent ``* OK [ALERT] Message 7 appears to be a Unicode message...``
    during ``read 7`` (the exact line below); it was dropped.  RFC 3501 7.1: the text MUST be
    shown to the user."""
    _, reactor, proto, tr, imap = logged_in()
    with capturedLogs() as events:
        proto.dataReceived(b"read 7\n")
        imap.select(b"SELECT")
        imap.expect(b"UID")
        data = "From: Jürgen <j@x>\r\nSubject: Привет\r\n\r\nhi\r\n".encode()
        imap.client.dataReceived(
            f"* 7 FETCH (UID 7 RFC822.SIZE {len(data)} BODY[]<0> {{{len(data)}}}\r\n".encode()
            + data + b")\r\n"
            b"* OK [ALERT] Message 7 appears to be a Unicode message and your E-mail reader did"
            b" not enable Unicode support. Please use an E-mail reader that supports IMAP with "
            b"UTF-8 (see https://tools.ietf.org/html/rfc6855.html)\r\n"
            b"* 7 FETCH (FLAGS (\\Seen))\r\n" + imap.last_tag + b" OK FETCH completed.\r\n")
        reactor.pool.run()
    lines = take(tr).decode().split("\r\n")
    assert lines[0] == ("* mail server alert: Message 7 appears to be a Unicode message and "
                        "your E-mail reader did not enable Unicode support. Please use an E-mail "
                        "reader that supports IMAP with UTF-8 (see "
                        "https://tools.ietf.org/html/rfc6855.html)")
    assert lines[1].startswith("ok message 7 in INBOX")
    (event,) = [e for e in events if e.get("event") == "imap_alert"]
    assert event["user"] == "alice" and event["text"].startswith("Message 7 appears")
    proto.dataReceived(b"check\n")  # with any command, cleaned like every echo
    imap.answer(b"NOOP", b"OK [ALERT] \x1b[2Jdisk quota\x85exceeded \xe2\x80\xae!")
    imap.status_of()
    assert take(tr).decode() == ("* mail server alert: [2Jdisk quota\ufffdexceeded  !\r\n"
                                 "ok INBOX messages=3 unseen=1 recent=0\r\n")
