"""Submitting, socket-free: a scripted SMTP server on a StringTransport, Twisted's own ESMTP
server over iosim, and a sendmail stand-in script for the program path."""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
from mailrig import (
    MailReactorClock,
    StartTLSTransport,
    TLSTransport,
    Transport,
    global_reactor,
)
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.mail import imap4, smtp
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from mailsocketd.mail.address import SMTP_PORTS, parse_server
from mailsocketd.mail.process import PASSED_ENVIRONMENT
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.smtp.submit import (
    RecipientsRefused,
    SendError,
    smtp_data,
    submit,
    submit_smtp,
)
from mailsocketd.mail.text.compose import build_message, parse_typed
from mailsocketd.mail.tls import choose_mechanism
from mailsocketd.net import is_loopback

PEER = IPv4Address("TCP", "mail.example.test", 587)  # whom the client connects to (unused)
PASSWORD = b"c0rrect-h0rse"
PLAIN = base64.b64encode(b"alice\0alice\0" + PASSWORD)
MESSAGE = b"From: alice@example.test\r\nTo: bob@example.test\r\n\r\nhello\r\n.\r\n.dot\r\n"


def config(server="tcp:mail.example.test:587", **keys):
    return SmtpConfig(server=server, address=parse_server(server, "server", SMTP_PORTS),
                      timeout=30.0, from_domain="example.test", **keys)


@implementer(IStreamClientEndpoint)
class Endpoint:
    """Connects the factory's protocol to a scripted transport (or fails to connect)."""

    def __init__(self, clock, transport_class=StartTLSTransport,
                 connected: Deferred[IProtocol] | None = None):
        self.clock = clock
        self.transport_class = transport_class
        self.connected = connected
        self.protocol: Any = None  # once connected: the protocol the factory built
        self.transport: Transport | None = None
        self.attempts = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.attempts += 1
        if self.connected is not None:
            return self.connected
        self.protocol = factory.buildProtocol(PEER)
        self.transport = transport = self.transport_class(self.clock)
        transport.protocol = self.protocol
        self.protocol.makeConnection(transport)
        return succeed(self.protocol)


class Rig:
    """One submission against a server the test plays line by line."""

    def __init__(self, smtp=None, transport_class=StartTLSTransport, connected=None,
                 recipients=("bob@example.test",), message=MESSAGE):
        self.clock = Clock()
        self.smtp = smtp or config()
        self.endpoint = Endpoint(self.clock, transport_class, connected)
        self.results: list[object] = []
        self.d = ensureDeferred(submit_smtp(
            self.endpoint, self.clock, self.smtp, user="alice", password=Secret(PASSWORD),
            sender="alice@example.test", recipients=list(recipients), message=message))
        self.d.addBoth(self.results.append)

    @property
    def transport(self):
        return self.endpoint.transport

    def server(self, *lines):
        self.endpoint.protocol.dataReceived(b"".join(x.encode() + b"\r\n" for x in lines))

    def sent(self):
        while self.transport.producer is not None:  # the message body is pulled
            self.transport.producer.resumeProducing()
        data = self.transport.value()
        self.transport.clear()
        return data

    def expect(self, line):
        assert self.sent() == line.encode() + b"\r\n"

    def outcome(self):
        self.clock.advance(0)
        assert self.results, "submission still running"
        return self.results[0]

    def error(self):
        failure = self.outcome()
        assert failure.check(SendError), failure
        text = str(failure.value)
        assert PASSWORD.decode() not in text and PLAIN.decode() not in text
        return failure.value

    def greet_and_secure(self, after_tls="AUTH PLAIN LOGIN"):
        """Greeting, EHLO, STARTTLS, EHLO again."""
        self.server("220 mx.example.test ESMTP")
        self.expect("EHLO example.test")
        self.server("250-mx.example.test", "250-PIPELINING", "250 STARTTLS")
        self.expect("STARTTLS")
        self.server("220 go ahead")
        assert self.transport.tls_started_with is not None
        self.expect("EHLO example.test")
        self.server("250-mx.example.test", f"250 {after_tls}")

    def login(self):
        self.expect(f"AUTH PLAIN {PLAIN.decode()}")
        self.server("235 2.7.0 Authentication successful")


def test_the_whole_exchange_over_verified_starttls():
    rig = Rig(recipients=("bob@example.test", "carol@example.test"))
    rig.greet_and_secure()
    options = rig.transport.tls_started_with
    assert options._hostnameASCII == "mail.example.test"  # checked against the host name
    rig.login()
    rig.expect("MAIL FROM:<alice@example.test>")
    rig.server("250 2.1.0 Ok")
    rig.expect("RCPT TO:<bob@example.test>")
    rig.server("250 2.1.5 Ok")
    rig.expect("RCPT TO:<carol@example.test>")
    rig.server("250 2.1.5 Ok")
    rig.expect("DATA")
    rig.server("354 End data with <CR><LF>.<CR><LF>")
    assert rig.sent() == (b"From: alice@example.test\r\nTo: bob@example.test\r\n\r\nhello\r\n"
                          b"..\r\n..dot\r\n.\r\n")
    assert rig.results == []  # not before the server took it
    rig.server("250 2.0.0 Ok: queued as 4711")
    assert rig.outcome() is None
    rig.expect("QUIT")
    rig.server("221 2.0.0 Bye")
    assert rig.transport.disconnecting


def test_no_starttls_offered_means_no_auth_and_no_password():
    rig = Rig()
    rig.server("220 mx ESMTP")
    rig.expect("EHLO example.test")
    rig.server("250-mx", "250 AUTH PLAIN LOGIN")
    error = rig.error()
    assert str(error) == ("SMTP server mail.example.test port 587 offers no STARTTLS: refusing "
                          "to send the password in clear (use a tls: server, or set "
                          "allow_cleartext = true in [smtp])")
    assert b"AUTH" not in rig.sent()


def test_a_refused_starttls_is_an_error():
    rig = Rig()
    rig.server("220 mx ESMTP")
    rig.expect("EHLO example.test")
    rig.server("250-mx", "250 STARTTLS")
    rig.expect("STARTTLS")
    rig.server("454 4.7.0 TLS not available due to local problem")
    assert str(rig.error()) == ("SMTP server mail.example.test port 587 refused STARTTLS: "
                                "454 4.7.0 TLS not available due to local problem")
    assert b"AUTH" not in rig.sent()


def test_cleartext_allowed_still_uses_starttls_when_offered():
    rig = Rig(config(allow_cleartext=True))
    rig.greet_and_secure()
    rig.login()
    assert rig.sent() == b"MAIL FROM:<alice@example.test>\r\n"


def test_cleartext_allowed_logs_in_without_tls_when_none_is_offered():
    rig = Rig(config(allow_cleartext=True))
    rig.server("220 mx ESMTP")
    rig.expect("EHLO example.test")
    rig.server("250-mx", "250 AUTH LOGIN PLAIN CRAM-MD5")
    assert rig.sent().startswith(b"AUTH CRAM-MD5")  # in clear the password stays off the wire


@pytest.mark.parametrize(("offered", "encrypted"), [
    ("LOGIN CRAM-MD5", True), ("CRAM-MD5 PLAIN LOGIN", True), ("PLAIN LOGIN", False),
    ("LOGIN PLAIN CRAM-MD5", False),
])
def test_the_mechanism_is_the_one_imap_would_choose(offered, encrypted):
    rig = Rig(config(allow_cleartext=True))
    if encrypted:
        rig.greet_and_secure(after_tls=f"AUTH {offered}")
    else:
        rig.server("220 mx ESMTP")
        rig.expect("EHLO example.test")
        rig.server("250-mx", f"250 AUTH {offered}")
    chosen = choose_mechanism(offered.encode().split(), encrypted)
    assert chosen is not None and rig.sent().split()[:2] == [b"AUTH", chosen]


def test_loopback_without_tls_and_without_auth_sends_anyway():
    rig = Rig(config("tcp:127.0.0.1:2525"))
    rig.server("220 mx ESMTP")
    rig.expect("EHLO example.test")
    rig.server("250-localhost", "250 8BITMIME")
    rig.expect("MAIL FROM:<alice@example.test>")


def test_loopback_that_offers_auth_gets_it():
    rig = Rig(config("tcp:[::1]:2525"))
    rig.server("220 mx ESMTP")
    rig.expect("EHLO example.test")
    rig.server("250-localhost", "250 AUTH PLAIN")
    rig.expect(f"AUTH PLAIN {PLAIN.decode()}")


def test_a_remote_server_without_auth_is_refused():
    rig = Rig(config("tls:mail.example.test"), transport_class=TLSTransport)
    rig.server("220 mx ESMTP")
    rig.expect("EHLO example.test")  # implicit TLS: no STARTTLS
    rig.server("250-mx", "250 8BITMIME")
    assert str(rig.error()) == ("SMTP server mail.example.test port 465 offers no login method "
                                "this client supports (AUTH PLAIN, LOGIN or CRAM-MD5)")
    assert b"MAIL" not in rig.sent()


def test_a_wrong_password_is_named_without_the_password():
    rig = Rig()
    rig.greet_and_secure()
    rig.expect(f"AUTH PLAIN {PLAIN.decode()}")
    rig.server("535 5.7.8 Error: authentication failed")
    rig.sent()  # Twisted tries the other PLAIN form once
    rig.server("535 5.7.8 Error: authentication failed")
    error = rig.error()
    assert str(error) == ("SMTP server mail.example.test port 587: login refused for user alice: "
                          "535 5.7.8 Error: authentication failed")
    assert b"MAIL" not in rig.sent()


def test_some_recipients_refused_names_them_and_who_got_it():
    rig = Rig(recipients=("bob@example.test", "nobody@example.test", "carol@example.test"))
    rig.greet_and_secure()
    rig.login()
    rig.sent()
    rig.server("250 Ok", "250 Ok", "550 5.1.1 <nobody@example.test>: Recipient address rejected",
               "250 Ok", "354 go")
    rig.server("250 2.0.0 Ok: queued")
    error = rig.error()
    assert isinstance(error, RecipientsRefused)
    assert error.accepted == ("bob@example.test", "carol@example.test")
    assert error.refused == (("nobody@example.test", 550,
                              "5.1.1 <nobody@example.test>: Recipient address rejected"),)
    assert str(error) == ("sent to bob@example.test, carol@example.test only; refused: "
                          "nobody@example.test (550 5.1.1 <nobody@example.test>: Recipient "
                          "address rejected)")


def test_all_recipients_refused_sends_no_data():
    rig = Rig(recipients=("x@example.test", "y@example.test"))
    rig.greet_and_secure()
    rig.login()
    rig.sent()
    rig.server("250 Ok", "550 5.1.1 unknown", "450 4.2.0 greylisted")
    error = rig.error()
    assert isinstance(error, RecipientsRefused) and error.accepted == ()
    assert str(error) == ("refused: x@example.test (550 5.1.1 unknown); "
                          "y@example.test (450 4.2.0 greylisted)")
    assert b"DATA" not in rig.sent()


def test_a_refused_sender_and_a_refused_message():
    rig = Rig()
    rig.greet_and_secure()
    rig.login()
    rig.sent()
    rig.server("553 5.7.1 <alice@example.test>: Sender address rejected: not owned by user")
    assert str(rig.error()) == (
        "SMTP server mail.example.test port 587 refused the sender alice@example.test: 553 5.7.1 "
        "<alice@example.test>: Sender address rejected: not owned by user")

    rig = Rig()
    rig.greet_and_secure()
    rig.login()
    rig.sent()
    rig.server("250 Ok", "250 Ok", "354 go")
    rig.server("552 5.3.4 Message size exceeds fixed limit")
    error = rig.error()
    assert not isinstance(error, RecipientsRefused)
    assert str(error) == ("SMTP server mail.example.test port 587 refused the message: "
                          "552 5.3.4 Message size exceeds fixed limit")


def test_a_greeting_refusal():
    rig = Rig()
    rig.server("554 5.3.2 not now")
    assert str(rig.error()) == ("SMTP server mail.example.test port 587 refused the session: "
                                "554 5.3.2 not now")


def test_a_dropped_connection_ends_the_attempt():
    # Through an endpoint Twisted's own result would never fire here.
    rig = Rig()
    rig.greet_and_secure()
    rig.login()
    rig.transport.loseConnection()
    assert str(rig.error()) == ("SMTP server mail.example.test port 587 closed the connection")


def test_a_silent_server_times_out_and_is_dropped():
    rig = Rig()
    rig.clock.advance(29)
    assert rig.results == []
    rig.clock.advance(1)
    assert str(rig.error()) == ("SMTP server mail.example.test port 587: timed out after 30 s "
                                "waiting for the server")
    assert rig.transport.closed
    assert rig.clock.getDelayedCalls() == []


def test_a_server_silent_after_data_times_out_too():
    rig = Rig()
    rig.greet_and_secure()
    rig.login()
    rig.server("250 Ok", "250 Ok", "354 go")
    rig.clock.advance(30)
    assert "timed out after 30 s" in str(rig.error())
    assert rig.clock.getDelayedCalls() == []


def test_no_reply_to_quit_still_closes_the_connection():
    rig = Rig()
    rig.greet_and_secure()
    rig.login()
    rig.server("250 Ok", "250 Ok", "354 go", "250 queued")
    assert rig.outcome() is None
    rig.clock.advance(30)
    assert rig.transport.closed
    assert rig.clock.getDelayedCalls() == []


def test_connection_refused_and_a_connect_that_never_completes():
    rig = Rig(connected=fail(ConnectionRefusedError()))
    assert str(rig.error()) == ("cannot reach SMTP server mail.example.test port 587: "
                                "connection refused")
    rig = Rig(connected=Deferred())
    rig.clock.advance(30)
    assert str(rig.error()) == ("cannot reach SMTP server mail.example.test port 587: "
                                "timed out after 30 s")


def test_an_endless_reply_and_an_overlong_line_are_cut_off():
    rig = Rig()
    rig.server(*["220-spam"] * 101)
    assert "sent a reply of over 100 lines" in str(rig.error())
    assert rig.transport.closed
    rig = Rig()
    rig.endpoint.protocol.dataReceived(b"220 " + b"x" * 5000)
    assert "sent a reply line over 4096 bytes" in str(rig.error())


def test_cancelling_drops_the_connection():
    rig = Rig()
    rig.greet_and_secure()
    rig.d.cancel()
    failure = rig.outcome()
    assert not failure.check(SendError)  # cancelled, not a send error
    assert rig.transport.closed


def test_too_large_a_message_is_refused_before_connecting(monkeypatch):
    smtp = config(max_message_size=1024)
    endpoint_made = []
    monkeypatch.setattr("mailsocketd.mail.smtp.submit.smtp_endpoint",
                        lambda *args: endpoint_made.append(args))
    d = ensureDeferred(submit(MailReactorClock(), smtp, user="alice", password=Secret(PASSWORD),
                              sender="alice@example.test", recipients=["b@x.org"],
                              message=b"x" * 1025))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert str(failures[0].value) == "message too large: 1025 bytes (the limit is 1024)"
    assert endpoint_made == []


@pytest.mark.parametrize(("sender", "recipients", "problem"), [
    ("alice@example.test", [], "no recipient given"),
    ("alice@example.test", ["b@x.org\r\nDATA"], "bad recipient 'b@x.org  DATA': line break"),
    ("al ice@example.test", ["b@x.org"], "cannot send as 'al ice@example.test': space"),
])
def test_the_envelope_is_checked_before_anything_happens(sender, recipients, problem):
    d = ensureDeferred(submit(MailReactorClock(), config(), user="alice", password=Secret(PASSWORD),
                              sender=sender, recipients=recipients, message=MESSAGE))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert str(failures[0].value).startswith(problem)


def test_smtp_data_normalizes_line_ends_and_stuffs_dots():
    assert smtp_data(b"a\nb\r\n.\r.x\r\n\r\nend") == b"a\r\nb\r\n..\r\n..x\r\n\r\nend\r\n"
    assert smtp_data(b".") == b"..\r\n"


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.8.7", "::1", "localhost",
                                        "LOCALHOST.", "[::1]"))
    assert not any(is_loopback(h) for h in ("10.0.0.1", "mail.example.test", "::2",
                                            "localhost.example.test", "128.0.0.1"))


# -- against Twisted's own ESMTP server, over iosim --------------------------------------------

class Stored:
    """IMessage: keeps the lines of one message."""

    def __init__(self, box):
        self.box = box
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.box.append(b"\n".join(self.lines) + b"\n")
        return succeed(b"ok")

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class Delivery:
    def __init__(self, box, refuse=()):
        self.box = box
        self.refuse = refuse
        self.recipients = []

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        if str(user.dest) in self.refuse:
            raise smtp.SMTPBadRcpt(user)
        self.recipients.append(str(user.dest))
        return lambda: Stored(self.box)


@implementer(IRealm)
class Realm:
    def __init__(self, delivery):
        self.delivery = delivery

    def requestAvatar(self, avatarId, mind, *interfaces):
        return smtp.IMessageDelivery, self.delivery, lambda: None


def twisted_server(delivery, password=PASSWORD):
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=password)
    # no STARTTLS: iosim's TLS is make-believe, so this runs as a loopback server in clear
    server = smtp.ESMTP({b"LOGIN": smtp.LOGINCredentials, b"PLAIN": imap4.PLAINCredentials})
    # Twisted's annotations say "portal = None" and "timeout: int"; these are its documented use
    server.portal = Portal(Realm(delivery), [checker])  # type: ignore[assignment]
    server.host = b"mx.example.test"
    server.timeout = None  # type: ignore[assignment]
    return server


@implementer(IStreamClientEndpoint)
class IOSimEndpoint:
    def __init__(self, server, clock):
        self.server = server
        self.clock = clock
        self.pump: iosim.IOPump | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        client = factory.buildProtocol(PEER)
        assert client is not None
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        self.pump = iosim.connect(
            self.server, iosim.FakeTransport(self.server, isServer=True, peerAddress=peer),
            client, iosim.FakeTransport(client, isServer=False), greet=False, clock=self.clock)
        return succeed(client)


def iosim_submit(server, message, recipients=("bob@example.test",)):
    clock = Clock()
    endpoint = IOSimEndpoint(server, clock)
    results: list[object] = []
    d = ensureDeferred(submit_smtp(endpoint, clock, config("tcp:127.0.0.1:2525"), user="alice",
                                   password=Secret(PASSWORD), sender="alice@example.test",
                                   recipients=list(recipients), message=message))
    d.addBoth(results.append)
    for _ in range(200):
        if results:
            break
        assert endpoint.pump is not None
        endpoint.pump.flush()
    assert results, "the exchange did not finish"
    return results[0]


def test_a_message_with_a_dot_at_every_chunk_edge_reaches_a_real_server_intact():
    # Twisted's own dot-stuffing works per 16 KiB chunk; a "." line at a chunk start got lost.
    lines = ["Subject: edges", ""] + ["x" * 200] * 300 + ["."] * 3 + ["", "end"]
    _, message = build_message(parse_typed(("bob@example.test",), lines),
                               sender="alice@example.test", now=0, domain="example.test")
    box: list[object] = []
    delivery = Delivery(box)
    assert iosim_submit(twisted_server(delivery), message) is None
    assert delivery.recipients == ["bob@example.test"]
    assert box == [message.replace(b"\r\n", b"\n")]
    # and a "." line starting exactly 16384 bytes in, with either kind of line end
    for end in (b"\r\n", b"\n"):
        head = b"Subject: at the edge" + end + end
        message = head + b"y" * (16384 - len(head) - len(end)) + end + b"." + end + b"end" + end
        assert message.index(end + b"." + end) + len(end) == 16384
        box.clear()
        assert iosim_submit(twisted_server(Delivery(box)), message) is None
        assert box == [message.replace(b"\r\n", b"\n")]


def test_a_real_server_refusing_one_recipient_and_a_wrong_password():
    box: list[object] = []
    result = iosim_submit(twisted_server(Delivery(box, refuse={"nobody@example.test"})),
                          MESSAGE, recipients=("nobody@example.test", "bob@example.test"))
    assert isinstance(result.value, RecipientsRefused)
    assert result.value.accepted == ("bob@example.test",)
    assert [r[:2] for r in result.value.refused] == [("nobody@example.test", 550)]
    assert len(box) == 1
    result = iosim_submit(twisted_server(Delivery(box), password=b"other"), MESSAGE)
    assert "login refused for user alice: 535 Authentication failed" in str(result.value)
    assert PASSWORD.decode() not in str(result.value)


# -- sendmail ----------------------------------------------------------------------------------

STAND_IN = """\
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
data = sys.stdin.buffer.read()
with open(os.path.join(here, "call.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "stdin": data.decode("latin-1"), "pid": os.getpid(),
               "env": dict(os.environ)}, f)
# the mode comes from a file: sendmail gets none of the daemon's own environment
mode = open(os.path.join(here, "mode")).read() if os.path.exists(os.path.join(here, "mode")) \
    else "ok"
if mode == "fail":
    sys.stderr.write("sendmail: fatal: bob@example.test: \\x1b[31mno such user\\n"
                     "second line\\n")
    sys.exit(67)
if mode == "hang":
    import time
    time.sleep(60)
"""


def stand_in(tmp_path):
    script = tmp_path / "sendmail"
    script.write_text(f"#!{sys.executable}\n{STAND_IN}")
    script.chmod(0o755)
    return str(script)


def sendmail_config(tmp_path, **keys):
    return SmtpConfig(sendmail=stand_in(tmp_path), from_domain="example.test", **keys)


def call(tmp_path):
    return json.loads((tmp_path / "call.json").read_text())


async def run_sendmail(smtp, message=MESSAGE, recipients=("bob@example.test", "-x@y.org")):
    await submit(global_reactor(), smtp, user="alice", password=Secret(PASSWORD),
                 sender="alice@example.test", recipients=list(recipients), message=message)


@pytest_twisted.ensureDeferred
async def test_sendmail_gets_the_envelope_as_arguments_and_the_message_on_stdin(
        tmp_path, monkeypatch):
    (tmp_path / "mode").write_text("ok")
    await run_sendmail(sendmail_config(tmp_path))
    seen = call(tmp_path)
    assert seen["argv"] == ["-i", "-f", "alice@example.test", "--", "bob@example.test",
                            "-x@y.org"]
    assert seen["stdin"] == ("From: alice@example.test\nTo: bob@example.test\n\nhello\n.\n"
                             ".dot\n")  # local line ends; -i: a lone dot is just text


@pytest_twisted.ensureDeferred
async def test_sendmail_gets_the_scrubbed_environment_hooks_get(tmp_path, monkeypatch):
    """Issue 11 item 3: a password_env secret of an account never reaches sendmail."""
    monkeypatch.setenv("MAILSOCKETD_WORK_PASSWORD", PASSWORD.decode())
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("PATH", raising=False)
    await run_sendmail(sendmail_config(tmp_path))
    env = call(tmp_path)["env"]
    assert PASSWORD.decode() not in json.dumps(env)
    assert env.get("LANG") == "C.UTF-8"
    assert env.get("PATH") == "/usr/local/bin:/usr/bin:/bin"
    assert set(env) <= {*PASSED_ENVIRONMENT, "LC_CTYPE", "PWD", "SHLVL", "_"}


@pytest_twisted.ensureDeferred
async def test_sendmail_failing_reports_its_first_error_line(tmp_path, monkeypatch):
    (tmp_path / "mode").write_text("fail")
    smtp = sendmail_config(tmp_path)
    with pytest.raises(SendError) as e:
        await run_sendmail(smtp)
    assert str(e.value) == (f"{smtp.sendmail} exited with status 67: sendmail: fatal: "
                            "bob@example.test:  [31mno such user")


@pytest_twisted.ensureDeferred
async def test_a_hanging_sendmail_is_killed(tmp_path, monkeypatch):
    (tmp_path / "mode").write_text("hang")
    smtp = sendmail_config(tmp_path, timeout=1.0)
    with pytest.raises(SendError) as e:
        await run_sendmail(smtp)
    assert str(e.value) == f"{smtp.sendmail} timed out after 1 s and was killed"
    pid = call(tmp_path)["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone (and reaped)


@pytest_twisted.ensureDeferred
async def test_a_missing_sendmail(tmp_path):
    smtp = replace(sendmail_config(tmp_path), sendmail=str(tmp_path / "nope"))
    with pytest.raises(SendError, match=r"^cannot run .*/nope: No such file or directory$"):
        await run_sendmail(smtp)

