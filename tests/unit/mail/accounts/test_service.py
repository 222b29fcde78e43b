"""Account watchers on a task.Clock: status lines, reconnection with backoff, auth failures,
and a stop that logs out and leaves no timer behind."""

from __future__ import annotations

import base64
import time
from typing import cast

import pytest
from mailrig import MailReactorClock, Rig, account
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsocketd.mail.accounts.backoff import Backoff
from mailsocketd.mail.accounts.service import AccountsService, AccountWatcher
from mailsocketd.mail.errors import TokenError, TokenRefused
from mailsocketd.mail.imap.client import ImapClient
from mailsocketd.mail.secrets import PasswordSource, Secret

ENV = {"PW": "pw"}


@implementer(IStreamClientEndpoint)
class ScriptedEndpoint:
    """Each connect() either fails (refused) or yields a Rig the test plays the server on."""

    def __init__(self, clock):
        self.clock = clock
        self.watcher: AccountWatcher | None = None
        self.refuse = False
        self.rigs: list[Rig] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        assert self.watcher is not None  # set by watcher() below
        self.watcher.attempting()
        if self.refuse:
            failure = Failure(ConnectionRefusedError())
            self.watcher.note_failure(failure)
            return fail(failure)
        client = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 993))
        assert client is not None
        rig = Rig(clock=self.clock)
        # ClientService's proxy of the watcher's ImapClient, which forwards everything to it
        rig.client = cast(ImapClient, client)
        self.rigs.append(rig.connect())
        return succeed(client)


def watcher(exact=True, **overrides):
    clock = MailReactorClock()
    clock.advance(time.time())
    endpoint = ScriptedEndpoint(clock)
    w = AccountWatcher(account(**overrides), clock, environ=ENV, endpoint=endpoint)
    if exact:
        w.backoff = Backoff(clock, jitter=lambda: 0.5)  # exact delays
    endpoint.watcher = w
    return w, endpoint, clock


def log_in_and_idle(rig):
    rig.greet()
    rig.plain_login()
    rig.status(messages=12, unseen=3)
    rig.answer(b"EXAMINE")
    rig.expect(b"IDLE")
    rig.server("+ idling")


def retry_delay(clock):
    calls = clock.getDelayedCalls()
    assert len(calls) == 1, calls
    return calls[0].getTime() - clock.seconds()


def test_status_lines_before_and_after_the_first_check():
    w, endpoint, clock = watcher(mailboxes=("INBOX", "Lists"))
    assert w.state.status_lines() == [
        "account work INBOX: state=stopped messages=- unseen=- last_check=- latency=- error=-",
        "account work Lists: state=stopped messages=- unseen=- last_check=- latency=- error=-",
    ]
    w.startService()
    rig = endpoint.rigs[0]
    rig.greet()
    rig.plain_login()
    rig.status("INBOX", messages=12, unseen=3)
    clock.advance(0.004)
    rig.status("Lists", messages=5, unseen=0)
    rig.answer(b"EXAMINE")
    rig.expect(b"IDLE")
    rig.server("+ idling")
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(clock.seconds()))
    assert w.state.status_lines() == [
        f"account work INBOX: state=idling messages=12 unseen=3 last_check={stamp} "
        "latency=0.000s error=-",
        f"account work Lists: state=idling messages=5 unseen=0 last_check={stamp} "
        "latency=0.004s error=-",
    ]


def test_refused_connections_back_off_exponentially():
    w, endpoint, clock = watcher()
    endpoint.refuse = True
    w.startService()
    delays = []
    for _ in range(5):
        delays.append(retry_delay(clock))
        clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8, 16]
    assert w.state.state == "backing-off"
    assert w.state.status_lines()[0].endswith("error=connection refused")


def test_wrong_password_backs_off_hard_and_says_so():
    w, endpoint, clock = watcher()
    w.startService()
    rig = endpoint.rigs[0]
    rig.greet()
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    rig.sent()
    rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")
    clock.advance(0)  # connection closed
    assert rig.transport.closed
    assert retry_delay(clock) == 300
    assert w.state.state == "auth-failed"
    assert w.state.status_lines()[0].endswith(
        "error=login refused for user alice: NO [AUTHENTICATIONFAILED] Authentication failed.")
    clock.advance(300)
    assert len(endpoint.rigs) == 2


def test_a_missing_password_is_reported_without_hammering():
    w, endpoint, clock = watcher()
    w.environ = {}
    w.startService()
    endpoint.rigs[0].greet()
    clock.advance(0)
    assert w.state.state == "auth-failed" and retry_delay(clock) == 300
    assert "password_env PW: the variable is not set" in w.state.status_lines()[0]


def test_a_server_that_drops_every_healthy_session_soon_keeps_the_growing_delay():
    """A session that answered its STATUS but ended within 10 s is one more failure: no quick
    reconnection, so such a server is not hammered."""
    w, endpoint, clock = watcher()
    w.startService()
    delays = []
    for n in range(4):
        rig = endpoint.rigs[n]
        log_in_and_idle(rig)
        clock.advance(5)
        rig.transport.loseConnection()  # dropped after 5 s, every time
        clock.advance(0)
        delays.append(retry_delay(clock))
        clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8]
    assert "connection closed by the server" in w.state.status_lines()[0]


def test_a_server_that_fails_before_the_first_status_keeps_the_growing_delay():
    """Logged in, then dropped before STATUS was answered: not healthy, so no quick return."""
    w, endpoint, clock = watcher()
    w.startService()
    delays = []
    for n in range(4):
        rig = endpoint.rigs[n]
        rig.greet()
        rig.plain_login()
        rig.expect(b"STATUS")
        rig.transport.loseConnection()
        clock.advance(0)
        delays.append(retry_delay(clock))
        clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8]


def test_after_a_restart_a_healthy_account_is_back_within_seconds():
    """Issue 16: with the server restarted every 60 s the old rule (forgiven only after 60 s
    logged in) grew the delay to minutes.  Each restart now costs a quick reconnection and,
    while the server is still down, the start of the curve: back within 5 s, every time."""
    w, endpoint, clock = watcher()
    w.startService()
    rig = endpoint.rigs[0]
    for restart in range(10):
        log_in_and_idle(rig)
        assert w.state.state == "idling"
        clock.advance(58)
        rig.transport.loseConnection()  # the restart
        clock.advance(0)
        down_since = clock.seconds()
        endpoint.refuse = True  # down for about 1.5 s
        clock.advance(retry_delay(clock))  # the quick retry (0.5 s): refused
        clock.advance(retry_delay(clock))  # 1 s later: refused
        endpoint.refuse = False
        clock.advance(retry_delay(clock))  # 2 s later: back
        rig = endpoint.rigs[restart + 1]
        assert clock.seconds() - down_since == 3.5


def test_a_healthy_session_resets_the_backoff():
    w, endpoint, clock = watcher(keepalive=1500, interval=3600)
    endpoint.refuse = True
    w.startService()
    for _ in range(3):
        clock.advance(retry_delay(clock))
    endpoint.refuse = False
    clock.advance(retry_delay(clock))
    rig = endpoint.rigs[0]
    log_in_and_idle(rig)
    clock.advance(120)
    rig.transport.loseConnection()
    clock.advance(0)
    assert retry_delay(clock) == 0.5  # at once, but for the jitter (at most 1 s)
    endpoint.refuse = True
    clock.advance(0.5)
    assert retry_delay(clock) == 1  # the curve starts again from the beginning


def test_stop_while_idling_logs_out_and_leaves_no_timer():
    w, endpoint, clock = watcher()
    w.startService()
    rig = endpoint.rigs[0]
    log_in_and_idle(rig)
    stopped = w.stopService()
    assert rig.sent() == [b"DONE"]
    rig.reply()
    rig.answer(b"LOGOUT", "BYE")
    clock.advance(0)
    assert stopped.called and w.state.state == "stopped"
    assert clock.getDelayedCalls() == []


def test_stop_with_a_mute_server_aborts_after_the_grace_period():
    w, endpoint, clock = watcher()
    w.startService()
    rig = endpoint.rigs[0]
    log_in_and_idle(rig)
    stopped = w.stopService()
    clock.advance(3)
    clock.advance(0)
    assert stopped.called and rig.transport.closed
    assert clock.getDelayedCalls() == []


def test_stop_while_backing_off_cancels_the_retry():
    w, endpoint, clock = watcher()
    endpoint.refuse = True
    w.startService()
    assert len(clock.getDelayedCalls()) == 1
    w.stopService()
    assert clock.getDelayedCalls() == []


def test_accounts_service_lists_every_account_in_order():
    clock = MailReactorClock()
    service = AccountsService([account(name="work"), account(name="home")], clock, ENV)
    lines = service.status_lines()
    assert [line.split(":")[0] for line in lines] == ["account work INBOX",
                                                       "account home INBOX"]
    assert [w.name for w in service] == ["work", "home"]


def test_accounts_service_start_and_stop_on_a_memory_reactor():
    reactor = MailReactorClock()
    service = AccountsService([account(server="tls:127.0.0.1:993")], reactor, ENV)
    service.startService()
    assert len(reactor.tcpClients) == 1
    host, port = reactor.tcpClients[0][:2]
    assert (host, port) == ("127.0.0.1", 993)
    d = service.stopService()
    assert d.called and reactor.getDelayedCalls() == []


def test_a_missed_heartbeat_replaces_the_connection():
    w, endpoint, clock = watcher(keepalive=240, timeout=30, interval=3600)
    w.startService()
    rig = endpoint.rigs[0]
    log_in_and_idle(rig)
    clock.advance(240)
    assert rig.sent() == [b"DONE"]  # the heartbeat; the server stays silent
    clock.advance(30)
    clock.advance(0)
    assert rig.transport.closed and w.state.state == "backing-off"
    assert w.state.status_lines()[0].endswith(
        "error=timed out after 30 s waiting for the reply to DONE (heartbeat)")
    clock.advance(retry_delay(clock))
    assert len(endpoint.rigs) == 2
    log_in_and_idle(endpoint.rigs[1])
    assert w.state.state == "idling"


# -- the auth-failure backoff, and the password kept out of everything shown -------------------

DISTINCTIVE = "Zq7~leak-canary_3f9c1e0b/Hunter2-never-log-me"
REFUSAL = "[AUTHENTICATIONFAILED] Authentication failed."


def refuse_login(rig):
    """Play a server that refuses AUTHENTICATE PLAIN; returns what the client answered."""
    rig.greet()
    rig.expect(b"AUTHENTICATE")
    rig.server("+ ")
    answer = rig.sent()
    rig.reply(status="NO", text=REFUSAL)
    return answer


def test_wrong_passwords_wait_300_s_then_double_up_to_an_hour_and_never_sooner():
    w, endpoint, clock = watcher()
    w.startService()
    expected = [300, 600, 1200, 2400, 3600, 3600]
    with capturedLogs() as events:
        for n, delay in enumerate(expected):
            refuse_login(endpoint.rigs[n])
            clock.advance(0)
            assert w.state.state == "auth-failed"
            assert retry_delay(clock) == delay
            clock.advance(delay - 0.001)
            assert len(endpoint.rigs) == n + 1  # no attempt before the delay is over
            clock.advance(0.001)
            assert len(endpoint.rigs) == n + 2
    logged = [e["retry_in"] for e in events if e.get("event") == "connection_failed"]
    assert logged == expected


def test_the_auth_failure_delay_keeps_its_jitter_within_a_quarter():
    delays = []
    for _ in range(20):
        w, endpoint, clock = watcher(exact=False)
        w.startService()
        refuse_login(endpoint.rigs[0])
        clock.advance(0)
        delays.append(retry_delay(clock))
        w.stopService()
    assert all(225 <= d <= 375 for d in delays), delays
    assert len(set(delays)) > 1  # jittered, so that many clients do not come back together


def test_a_good_login_forgets_earlier_wrong_passwords():
    w, endpoint, clock = watcher()
    w.startService()
    refuse_login(endpoint.rigs[0])
    clock.advance(0)
    clock.advance(retry_delay(clock))
    log_in_and_idle(endpoint.rigs[1])  # the password was fixed meanwhile
    clock.advance(60)
    endpoint.rigs[1].transport.loseConnection()
    clock.advance(0)
    assert retry_delay(clock) == 0.5  # a healthy session ended: back at once
    clock.advance(0.5)
    refuse_login(endpoint.rigs[2])
    clock.advance(0)
    assert retry_delay(clock) == 300  # the first wrong password again, not the second


def test_the_password_is_in_no_status_line_log_event_or_error():
    w, endpoint, clock = watcher(mailboxes=("INBOX", "Nope"))
    w.environ = {"PW": DISTINCTIVE}
    plain = base64.b64encode(b"\0alice\0" + DISTINCTIVE.encode())
    shown = []
    with capturedLogs() as events:
        w.startService()
        assert refuse_login(endpoint.rigs[0]) == [plain]  # it did go to the server
        clock.advance(0)
        shown += w.state.status_lines()
        clock.advance(retry_delay(clock))
        rig = endpoint.rigs[1]
        rig.greet()
        rig.plain_login(password=DISTINCTIVE.encode())
        rig.status("INBOX")
        rig.answer(b"STATUS", status="NO")
        rig.answer(b"EXAMINE")
        rig.expect(b"IDLE")
        rig.server("+ idling")
        shown += w.state.status_lines()
        rig.transport.loseConnection()
        clock.advance(0)
        shown += w.state.status_lines()
        w.stopService()
        clock.advance(10)
    assert len(events) >= 5 and len(shown) == 6  # (ClientService's retry lines are gone)
    assert "login refused for user alice" in shown[0]
    texts = shown + [formatEvent(e) for e in events] + [repr(e) for e in events]
    for form in (DISTINCTIVE, DISTINCTIVE[:12], plain.decode(), DISTINCTIVE.encode().hex()):
        assert not [t for t in texts if form in t], form


def test_status_shows_the_current_failure_not_a_stale_mailbox_error():
    w, endpoint, clock = watcher(mailboxes=("INBOX", "Lists"))
    w.startService()
    rig = endpoint.rigs[0]
    rig.greet()
    rig.plain_login()
    rig.status("INBOX")
    rig.expect(b"STATUS")
    rig.reply(status="NO", text="Mailbox doesn't exist: Lists")
    rig.answer(b"EXAMINE")
    rig.expect(b"IDLE")
    rig.server("+ idling")
    assert [line.split(" error=")[1] for line in w.state.status_lines()] == [
        "-", "STATUS refused: NO Mailbox doesn't exist: Lists"]
    rig.transport.loseConnection()
    clock.advance(0)
    assert [line.split(" error=")[1] for line in w.state.status_lines()] == [
        "connection closed by the server"] * 2
    clock.advance(retry_delay(clock))
    refuse_login(endpoint.rigs[1])
    clock.advance(0)
    for line in w.state.status_lines():
        assert " state=auth-failed " in line
        assert line.endswith(f" error=login refused for user alice: NO {REFUSAL}")


# -- OAuth2 accounts ---------------------------------------------------------------------------

class CountingTokens:
    """A token provider that fails as told or gives numbered tokens, and counts."""

    def __init__(self, error=None):
        self.error = error
        self.given = 0
        self.refusals = 0

    def token(self):
        if self.error is not None:
            return fail(self.error)
        self.given += 1
        return succeed(Secret(f"token.{self.given}".encode()))

    def refused(self):
        self.refusals += 1


def token_watcher(tokens):
    w, endpoint, clock = watcher(auth="xoauth2", password=PasswordSource("env", env="TOKEN"))
    w.tokens = tokens  # instead of the TOKEN variable: the provider kept by the watcher
    return w, endpoint, clock


def test_one_token_provider_for_every_connection():
    tokens = CountingTokens()
    w, endpoint, clock = token_watcher(tokens)
    w.startService()
    sent = []
    for attempt in range(2):
        rig = endpoint.rigs[attempt]
        rig.greet("IMAP4rev1 AUTH=XOAUTH2 SASL-IR")
        sent.append(base64.b64decode(rig.expect(b"AUTHENTICATE").split(b" ")[1]))
        rig.transport.abortConnection()  # lost before the reply
        clock.advance(0)
        clock.advance(retry_delay(clock))
    assert sent == [b"user=alice\x01auth=Bearer token.1\x01\x01",
                    b"user=alice\x01auth=Bearer token.2\x01\x01"]
    assert w.tokens is tokens and tokens.given == 2 and tokens.refusals == 0


@pytest.mark.parametrize(("error", "delay", "state"), [
    # an endpoint that is down backs off like a server that is down
    (TokenError("token endpoint idp.example.org: HTTP 503 Service Unavailable"), 1,
     "backing-off"),
    # a refused refresh token backs off like a wrong password
    (TokenRefused("token endpoint idp.example.org: invalid_grant"), 300, "auth-failed")])
def test_token_failures_back_off_like_the_server_failures_they_resemble(error, delay, state):
    w, endpoint, clock = token_watcher(CountingTokens(error))
    w.startService()
    endpoint.rigs[0].greet("IMAP4rev1 AUTH=XOAUTH2")
    clock.advance(0)
    assert retry_delay(clock) == delay and w.state.state == state
    assert w.state.status_lines()[0].endswith(f"error={error}")
