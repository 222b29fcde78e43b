"""The account watcher against REAL servers, in this reactor.

Counts, one STATUS for 10,000 messages, new mail through IDLE within 2 s, a debounced hook,
the server killed and restarted, wrong password (and its backoff), wrong CA (implicit TLS and
STARTTLS), host name mismatch, no password sent when the server offers no STARTTLS; and a
hostile (fake, loopback) server that is dropped.  What is server behaviour (counts, IDLE,
the hook, a restart, a refused login, odd mailbox names) runs against Dovecot, Cyrus and
Courier (``imap_server``, conftest.py); the rest against the Dovecot (and Postfix) of
``mailserver``.  Loopback only; 127.0.0.2 is used for a forwarder whose address is not in the
server certificate.
"""

from __future__ import annotations

import sys
import time
import uuid

import pytest
import pytest_twisted
from checkrig import (
    DISTINCTIVE,
    DovecotLog,
    cleartext_lines,
    command_names,
    make_unrelated_ca,
)
from logrig import LogEvents, global_log_events
from mailrig import global_reactor, parsed_account, write_password
from processrig import ended
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent, globalLogPublisher
from twisted.protocols import portforward
from twisted.protocols.basic import LineReceiver

from mailsocketd.mail.accounts.service import AccountWatcher

pytestmark = pytest.mark.timeout(90)


async def eventually(predicate, timeout=10.0, what="the condition"):
    """Poll (without blocking the reactor) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await deferLater(reactor, 0.02)


def state_of(watcher):
    return watcher.state.state


def counts_of(watcher, mailbox="INBOX"):
    return watcher.state.mailboxes[mailbox].counts


def error_of(watcher):
    line = watcher.state.status_lines()[0]
    return line.split(" error=", 1)[1]


class Watching:
    """Start a watcher; stop it at the end and check that it left no timer behind."""

    def __init__(self, account, environ=None):
        self.before = set(reactor.getDelayedCalls())
        self.watcher = AccountWatcher(account, global_reactor(), environ)

    async def __aenter__(self):
        self.watcher.startService()
        return self.watcher

    async def __aexit__(self, *exc):
        await self.watcher.stopService()
        await deferLater(reactor, 0.05)
        left = [c for c in reactor.getDelayedCalls()
                if c not in self.before and c.active() and "mailsocketd" in repr(c)]
        assert left == [], left
        assert self.watcher.state.state == "stopped"


def imaps_account(mailserver, tmp_path, **keys):
    keys.setdefault("server", f"tls:127.0.0.1:{mailserver.imaps_port}")
    keys.setdefault("user", "alice")
    keys.setdefault("ca_file", str(mailserver.ca_file))
    if not any(k.startswith("password_") for k in keys):
        keys["password_file"] = write_password(tmp_path)
    return parsed_account("work", **keys)


def unique_mailbox(server):
    """A new mailbox name in the server's personal namespace (``INBOX.T...`` on Cyrus)."""
    return server.mailbox("T" + uuid.uuid4().hex[:10])


@pytest_twisted.ensureDeferred
async def test_counts_of_a_known_mailbox_over_starttls_and_imaps(imap_server, tmp_path):
    box = unique_mailbox(imap_server)
    await threads.deferToThread(imap_server.populate, "alice", 25, box)
    for server in (f"tcp:localhost:{imap_server.imap_port}",
                   f"tls:127.0.0.1:{imap_server.imaps_port}"):
        account = imaps_account(imap_server, tmp_path, server=server, mailboxes=[box])
        async with Watching(account) as w:
            await eventually(lambda w=w: counts_of(w, box) is not None, what="the first check")
            counts = counts_of(w, box)
            assert (counts.messages, counts.unseen) == (25, 25)
            # Courier: APPENDed messages are not \Recent (populate APPENDs there)
            assert counts.recent == (0 if imap_server.name == "courier" else 25)
            assert counts.uidnext == 26
            await eventually(lambda w=w: state_of(w) == "idling", what="idling")
            assert w.session.client.encrypted
            line = w.state.status_lines()[0]
            assert line.startswith(f"account work {box}: state=idling messages=25 unseen=25 ")
            assert line.endswith(" error=-")


@pytest_twisted.ensureDeferred
async def test_ten_thousand_messages_are_still_one_status(mailserver, tmp_path):
    box = "T" + uuid.uuid4().hex[:10]  # Dovecot's namespace has no prefix
    await threads.deferToThread(mailserver.populate, "alice", 10000, box)
    account = imaps_account(mailserver, tmp_path, mailboxes=[box], idle=False)
    async with Watching(account) as w:
        await eventually(lambda: counts_of(w, box) is not None, what="the first check")
        client = w.session.client
        assert counts_of(w, box).messages == 10000
        assert counts_of(w, box).unseen == 10000
        # greeting..login..post-login CAPABILITY..one STATUS: a handful of commands and lines
        assert client.commands_sent == {"AUTHENTICATE": 1, "CAPABILITY": 1, "STATUS": 1}
        assert client.lines_received < 10
        assert w.state.mailboxes[box].latency < 2.0
        print(f"10000 messages: {dict(client.commands_sent)}, {client.lines_received} lines "
              f"received, STATUS in {w.state.mailboxes[box].latency:.4f} s")


@pytest_twisted.ensureDeferred
async def test_smtp_delivery_is_noticed_through_idle_within_2_seconds(imap_server, tmp_path):
    await threads.deferToThread(imap_server.clear_mailbox, "bob")
    account = imaps_account(imap_server, tmp_path, user="bob", interval=3600)
    async with Watching(account) as w:
        await eventually(lambda: state_of(w) == "idling", what="idling")
        before = counts_of(w)
        started = time.monotonic()
        await threads.deferToThread(imap_server.deliver, "bob", "through IDLE", wait=False)
        await eventually(lambda: counts_of(w).messages == before.messages + 1, timeout=2.0,
                         what="the delivered message")
        noticed = time.monotonic() - started
        assert noticed < 2.0
        assert w.state.mailboxes["INBOX"].new_mail == 1
        assert w.session.client.commands_sent["STATUS"] == 2  # the first check + this one
        print(f"delivered and noticed in {noticed:.3f} s")


@pytest_twisted.ensureDeferred
async def test_a_burst_of_mail_runs_the_hook_once(imap_server, tmp_path):
    await threads.deferToThread(imap_server.clear_mailbox, "bob")
    runs = tmp_path / "runs"
    hook = [sys.executable, "-c",
            "import os, sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + ' ' "
            "+ os.environ['MAILSOCKETD_NEW'] + chr(10))", str(runs)]
    account = imaps_account(imap_server, tmp_path, user="bob", on_new_mail=hook,
                            on_new_mail_delay=1.5)
    async with Watching(account) as w:
        await eventually(lambda: state_of(w) == "idling", what="idling")

        def burst():
            for n in range(20):
                imap_server.deliver("bob", f"burst {n}", wait=False)

        await threads.deferToThread(burst)
        await eventually(lambda: counts_of(w).messages == 20, what="all 20 messages")
        await eventually(runs.exists, timeout=5, what="the hook run")
        await deferLater(reactor, 2.0)  # no second run follows
        lines = runs.read_text().splitlines()
        assert len(lines) == 1, lines
        account_name, mailbox, new, messages, unseen, env_new = lines[0].split()
        assert (account_name, mailbox, messages, unseen) == ("work", "INBOX", "20", "20")
        assert new == env_new and int(new) >= 1


@pytest_twisted.ensureDeferred
async def test_dovecot_killed_while_idling_then_restarted(imap_server, tmp_path):
    """The server (Dovecot, Cyrus or Courier) killed under an idling account, then started."""
    box = unique_mailbox(imap_server)
    await threads.deferToThread(imap_server.populate, "alice", 3, box)
    account = imaps_account(imap_server, tmp_path, mailboxes=[box])
    seen: list[str] = []
    async with Watching(account) as w:
        await eventually(lambda: state_of(w) == "idling", what="idling")
        w.state.set_state = _recording(w.state.set_state, seen)
        try:
            await threads.deferToThread(imap_server.kill)
            await eventually(lambda: state_of(w) == "backing-off", timeout=5,
                             what="noticing the dead server")
            await eventually(lambda: "connection refused" in error_of(w), timeout=10,
                             what="a refused reconnection attempt")
        finally:
            await threads.deferToThread(imap_server.start)
        await eventually(lambda: state_of(w) == "idling", timeout=30, what="idling again")
        assert counts_of(w, box).messages == 3 and error_of(w) == "-"
    assert seen.index("backing-off") < seen.index("connecting") < len(seen) - 1
    assert seen[-1] == "stopped" and "idling" in seen[seen.index("backing-off"):]


def _recording(set_state, seen):
    def record(state):
        if not seen or seen[-1] != state:
            seen.append(state)
        set_state(state)
    return record


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_reported_and_not_hammered(imap_server, tmp_path):
    account = imaps_account(imap_server, tmp_path,
                            password_file=write_password(tmp_path, DISTINCTIVE, "bad"))
    with global_log_events() as events:
        async with Watching(account) as w:
            await eventually(lambda: state_of(w) == "auth-failed", what="auth-failed")
            assert error_of(w).startswith("login refused for user alice: NO "), error_of(w)
            if imap_server.name == "dovecot":
                assert error_of(w) == ("login refused for user alice: NO [AUTHENTICATIONFAILED] "
                                       "Authentication failed.")
            await deferLater(reactor, 1.5)
            assert w.backoff.auth_failures == 1  # one attempt; the next is minutes away
            assert state_of(w) == "auth-failed"
            lines = w.state.status_lines()
    failed = [e for e in events if e.get("event") == "connection_failed"]
    assert len(failed) == 1 and failed[0]["state"] == "auth-failed"
    assert 225 <= failed[0]["retry_in"] <= 375  # 300 s, jittered by a quarter at most
    texts = lines + [formatEvent(e) for e in events] + [repr(e) for e in events]
    assert not [t for t in texts if DISTINCTIVE in t or DISTINCTIVE[:12] in t]


@pytest.mark.parametrize("which", ["unrelated CA", "system CAs"])
@pytest_twisted.ensureDeferred
async def test_a_certificate_from_another_ca_is_refused(mailserver, tmp_path, which):
    keys = {"ca_file": make_unrelated_ca(tmp_path / "ca.pem")} if which == "unrelated CA" else {}
    account = imaps_account(mailserver, tmp_path, **keys)
    if not keys:
        account = parsed_account("work", server=account.server, user="alice",
                                 password_file=write_password(tmp_path))
    async with Watching(account) as w:
        await eventually(lambda: "TLS failure" in error_of(w), what="a TLS failure")
        assert error_of(w) == "TLS failure: certificate verify failed"
        assert state_of(w) == "backing-off" and counts_of(w) is None


@pytest_twisted.ensureDeferred
async def test_starttls_with_a_certificate_of_another_ca_sends_no_password(mailserver, tmp_path):
    dovecot = DovecotLog(mailserver.dovecot_log)
    port, factory = forwarder(mailserver.imap_port, interface="127.0.0.1")
    try:
        account = imaps_account(mailserver, tmp_path,
                                server=f"tcp:127.0.0.1:{port.getHost().port}",
                                ca_file=make_unrelated_ca(tmp_path / "ca.pem"),
                                password_file=write_password(tmp_path, DISTINCTIVE, "canary"))
        async with Watching(account) as w:
            await eventually(lambda: "TLS failure" in error_of(w), what="a TLS failure")
            assert error_of(w) == "TLS failure: certificate verify failed"
            assert state_of(w) == "backing-off" and counts_of(w) is None
        streams = [bytes(stream) for stream in factory.streams]
        await eventually(lambda: dovecot.new_text().count("Disconnected") >= len(streams),
                         what="Dovecot logging each disconnect")
    finally:
        await port.stopListening()
    # Each attempt: capabilities and STARTTLS in clear, then a TLS handshake that failed (an
    # attempt cut short by the stop may have got less far).  Never LOGIN or AUTHENTICATE.
    complete = 0
    for sent in streams:
        lines, rest = cleartext_lines(sent)
        names = command_names(lines)
        assert set(names) <= {b"CAPABILITY", b"STARTTLS"}, lines
        assert rest[:1] in (b"", b"\x16") and DISTINCTIVE.encode() not in sent
        complete += names[-1:] == [b"STARTTLS"] and rest[:1] == b"\x16"
    assert complete >= 1, streams
    logged = dovecot.new_text()
    assert "no auth attempts" in logged and "TLS handshaking" in logged, logged
    assert "Login: user=" not in logged and "auth failed" not in logged, logged


class RecordingProxy(portforward.ProxyServer):
    """A forwarder that keeps what the client sent (all of it, and per connection)."""

    def recorder(self) -> RecordingProxyFactory:
        assert isinstance(self.factory, RecordingProxyFactory)
        return self.factory

    def connectionMade(self):
        self.stream = bytearray()
        self.recorder().streams.append(self.stream)
        super().connectionMade()

    def dataReceived(self, data):
        self.recorder().client_bytes.append(data)
        self.stream += data
        super().dataReceived(data)


class RecordingProxyFactory(portforward.ProxyFactory, ServerFactory):
    """ProxyFactory is a plain Factory; listenTCP's annotation asks for a ServerFactory (which
    adds nothing to it)."""

    protocol = RecordingProxy
    noisy = False

    def __init__(self, host, port):
        super().__init__(host, port)
        self.client_bytes: list[bytes] = []
        self.streams: list[bytearray] = []


def forwarder(target_port, interface="127.0.0.2"):
    factory = RecordingProxyFactory("127.0.0.1", target_port)
    return reactor.listenTCP(0, factory, interface=interface), factory


@pytest.mark.parametrize("scheme", ["tls", "tcp"])
@pytest_twisted.ensureDeferred
async def test_a_host_name_not_in_the_certificate_is_refused(mailserver, tmp_path, scheme):
    target = mailserver.imaps_port if scheme == "tls" else mailserver.imap_port
    port, factory = forwarder(target)
    try:
        account = imaps_account(mailserver, tmp_path,
                                server=f"{scheme}:127.0.0.2:{port.getHost().port}")
        async with Watching(account) as w:
            await eventually(lambda: "TLS failure" in error_of(w), what="a TLS failure")
            assert error_of(w).startswith(
                "TLS failure: the certificate does not match the server name")
            assert "127.0.0.2" in error_of(w)
        sent = b"".join(factory.client_bytes)
        assert b"AUTHENTICATE" not in sent and b"LOGIN" not in sent
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_no_starttls_offered_means_no_password_on_the_wire(mailserver_notls, tmp_path):
    port, factory = forwarder(mailserver_notls.imap_port, interface="127.0.0.1")
    try:
        account = parsed_account("work", server=f"tcp:127.0.0.1:{port.getHost().port}",
                                 user="alice",
                                 password_file=write_password(tmp_path, DISTINCTIVE, "canary"))
        async with Watching(account) as w:
            await eventually(lambda: state_of(w) == "auth-failed", what="the refusal")
            assert "refusing to send the password in clear" in error_of(w)
            assert DISTINCTIVE not in error_of(w)
        sent = b"".join(factory.client_bytes)
        assert DISTINCTIVE.encode() not in sent and DISTINCTIVE[:12].encode() not in sent
        assert b"LOGIN" not in sent and b"AUTHENTICATE" not in sent
        assert sent.split() == [b"0001", b"CAPABILITY"] or sent == b""

        # The explicit opt-in works (and is the only way in clear).
        factory.client_bytes.clear()
        allowed = parsed_account("work", server=f"tcp:127.0.0.1:{port.getHost().port}",
                                 user="alice", password_file=write_password(tmp_path),
                                 allow_cleartext=True)
        async with Watching(allowed) as w:
            await eventually(lambda: counts_of(w) is not None, what="a check in clear")
            assert not w.session.client.encrypted
    finally:
        await port.stopListening()


class HostileServer(LineReceiver):
    """Logs anyone in, then answers STATUS with far too much (a literal or a line)."""

    delimiter = b"\r\n"

    def connectionMade(self):
        self.sendLine(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile")
        self.authenticating = None

    def lineReceived(self, line):
        if self.authenticating is not None:
            self.sendLine(self.authenticating + b" OK in")
            self.authenticating = None
            return
        tag, _, rest = line.partition(b" ")
        command = rest.split(b" ")[0].upper()
        if command == b"AUTHENTICATE":
            self.authenticating = tag
            self.sendLine(b"+ ")
        elif command == b"CAPABILITY":
            self.sendLine(b"* CAPABILITY IMAP4rev1")
            self.sendLine(tag + b" OK done")
        elif command == b"STATUS":
            self.factory.statuses += 1
            assert self.transport is not None
            if self.factory.attack == "literal":
                self.transport.write(b"* STATUS {1000000000}\r\n" + b"x" * (1 << 20))
            else:
                self.transport.write(b"* STATUS " + b"x" * (1 << 20))


class HostileFactory(ServerFactory):
    """Its servers' ``attack`` ("literal" or "line"), and how many STATUS they answered."""

    protocol = HostileServer
    noisy = False

    def __init__(self, attack):
        self.attack = attack
        self.statuses = 0


@pytest.mark.parametrize(("attack", "message"), [
    ("literal", "server announced a 1000000000-byte literal (limit 65536)"),
    ("line", "response line longer than 65536 bytes"),
])
@pytest_twisted.ensureDeferred
async def test_a_hostile_server_is_dropped_with_a_logged_error(tmp_path, attack, message):
    factory = HostileFactory(attack)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    events = LogEvents()
    globalLogPublisher.addObserver(events)
    try:
        account = parsed_account("work", server=f"tcp:127.0.0.1:{address.port}",
                                 user="alice", password_file=write_password(tmp_path),
                                 allow_cleartext=True)
        async with Watching(account) as w:
            await eventually(lambda: message in error_of(w), what="the refusal")
            assert state_of(w) == "backing-off" and counts_of(w) is None
    finally:
        globalLogPublisher.removeObserver(events)
        await maybeDeferred(port.stopListening)
    logged = [e for e in events.events if e.get("event") == "protocol_error"]
    assert logged and logged[0]["error"] == message
    assert factory.statuses >= 1


@pytest_twisted.ensureDeferred
async def test_an_account_watching_mailboxes_with_brackets_and_backslashes_settles(
        imap_server, tmp_path):
    """STATUS replies naming ``a[b`` (an atom, as Dovecot sends it) broke the parser: the
    account never settled (issue 11, item 14).  Cyrus refuses a backslash in a name."""
    tag = uuid.uuid4().hex[:6]
    names = [f"a[b{tag}", f"x]y{tag}", f"[Gmail{tag}]"]
    if imap_server.name != "cyrus":
        names.append(f"back\\slash{tag}")
    boxes = [imap_server.mailbox(name) for name in names]

    def create():
        for box in boxes:
            imap_server.create_mailbox("alice", box)

    await threads.deferToThread(create)
    account = imaps_account(imap_server, tmp_path, mailboxes=boxes)
    async with Watching(account) as w:
        await eventually(lambda: all(counts_of(w, box) is not None for box in boxes),
                         what="the first check of every mailbox")
        assert [counts_of(w, box).messages for box in boxes] == [0] * len(boxes)
        await eventually(lambda: state_of(w) == "idling", what="idling")
        assert all(line.endswith(" error=-") for line in w.state.status_lines())


@pytest_twisted.ensureDeferred
async def test_helpers_that_leave_children_behind_neither_stall_nor_leak(mailserver, tmp_path):
    """A password_command and a hook that each leave a 30 s child holding their output: the
    login goes on at once, each new-mail run ends when the hook exits (not 30 or 60 s later),
    and the children are killed with their process groups (issue 11, item 15)."""
    await threads.deferToThread(mailserver.clear_mailbox, "bob")
    pids = tmp_path / "pids"
    runs = tmp_path / "runs"

    def leaving_a_child(then):
        return [sys.executable, "-c",
                "import subprocess, sys\n"
                "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
                f"open({str(pids)!r}, 'a').write(str(c.pid) + chr(10))\n" + then]

    password = leaving_a_child(f"print({mailserver.users['bob']!r})")
    hook = leaving_a_child(f"open({str(runs)!r}, 'a').write('run' + chr(10))")
    account = imaps_account(mailserver, tmp_path, user="bob", password_command=password,
                            on_new_mail=hook, on_new_mail_delay=0.2)
    with capturedLogs() as events:
        async with Watching(account) as w:
            await eventually(lambda: state_of(w) == "idling", timeout=5, what="idling")
            for n in (1, 2):
                await threads.deferToThread(mailserver.deliver, "bob", f"child {n}")
                await eventually(lambda n=n: runs.exists() and
                                 len(runs.read_text().splitlines()) == n, timeout=5,
                                 what=f"hook run {n}")
                await eventually(lambda: not w.hook._running, timeout=5, what="its end")
    outcomes = [e["outcome"] for e in events if e.get("event") == "hook"]
    assert outcomes == ["exited with status 0"] * 2
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 3  # the password command's and two hook runs'
    await eventually(lambda: all(ended(pid) for pid in children), timeout=5,
                     what="the children's end")
