"""The line protocol without sockets: framing, bare commands, limits, back-pressure, order."""

from __future__ import annotations

import gc
import re
import socket
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st
from linerig import START, HalfClosingTransport, Rig, User, lose, take
from twisted.internet.defer import Deferred

from mailsocketd.line.commands import Arg, Command
from mailsocketd.line.protocol import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    LineProtocol,
    keep_alive,
)
from mailsocketd.line.replies import CommandError, Reply


def closing(transport: HalfClosingTransport) -> bool:
    """The server has begun to close: shut its side (TCP) or the whole connection."""
    return bool(transport.disconnecting) or transport.write_closed


TIME_RE = re.compile(rb"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\r\n$")


def test_time_reply_is_local_time_line():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time\r\n")
    out = take(tr)
    assert TIME_RE.match(out), out
    assert out == (rig.server.time_text() + "\r\n").encode()


def test_lf_crlf_case_and_whitespace():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"TIME\n  Time  \r\n\ttime\t\n")
    lines = take(tr).split(b"\r\n")
    assert len(lines) == 4 and lines[3] == b""
    assert all(TIME_RE.match(line + b"\r\n") for line in lines[:3])


def test_quit_answers_and_closes_lingering():
    rig = Rig(close_grace=2.0)
    proto, tr = rig.connect()
    proto.dataReceived(b"quit\r\ntime\r\n")
    assert take(tr) == b"quit\r\n"  # nothing after quit is served
    # Our side is shut once the reply is out; the connection waits for the client's EOF...
    assert tr.write_closed and not tr.disconnecting
    proto.dataReceived(b"time\r\n")  # ...dropping whatever still arrives
    assert take(tr) == b""
    proto.readConnectionLost()
    assert tr.disconnecting and not tr.aborted


def test_lingering_close_is_cut_after_the_grace_period():
    rig = Rig(close_grace=2.0)
    proto, tr = rig.connect()
    proto.dataReceived(b"quit\r\n")
    rig.clock.advance(1.9)
    assert not tr.aborted
    rig.clock.advance(0.2)
    assert tr.aborted


def test_tls_connections_close_without_half_close():
    rig = Rig()
    proto, tr = rig.connect()
    proto.session.secure = True
    proto.dataReceived(b"quit\r\n")
    assert tr.disconnecting and not tr.write_closed


def test_eof_serves_what_was_sent_including_a_last_unterminated_line():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time\r\nhelp\r\ntime")
    out = take(tr)
    proto.readConnectionLost()
    out += take(tr)
    lines = out.split(b"\r\n")
    assert TIME_RE.match(lines[0] + b"\r\n") and lines[1] == b"ok 4 commands"
    assert TIME_RE.match(lines[-2] + b"\r\n") and lines[-1] == b""
    assert tr.disconnecting and rig.clock.getDelayedCalls() != []  # only the abort timer


def test_empty_lines_get_no_reply():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"\r\n\n   \r\n")
    assert take(tr) == b""


def test_unknown_command_is_named_sanitised_and_connection_stays():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"fo\x1b[2Jo bar\r\n")
    assert take(tr) == b"error: unknown command 'fo?[2jo'; try 'help'\r\n"
    assert not closing(tr)
    proto.dataReceived(b"time\r\n")
    assert TIME_RE.match(take(tr))


def test_wrong_arity_gives_syntax():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time now\r\n")
    assert take(tr) == b"error: usage: time\r\n"


def test_invalid_utf8_and_nul_bytes():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"\xff\xfe\r\ntime\x00\r\n")
    assert take(tr) == (b"error: request is not valid UTF-8\r\n"
                        b"error: unknown command 'time?'; try 'help'\r\n")


def test_help_is_generated_from_the_table_and_dot_terminated():
    def login(session, user, password):
        return Reply("x")

    extra = Command(name="login", handler=login, summary="log in",
                    args=(Arg("user"), Arg("password", kind="rest")))
    rig = Rig(extra=[extra])
    proto, tr = rig.connect()
    proto.dataReceived(b"help\r\n")
    lines = take(tr).decode().split("\r\n")
    assert lines[0] == "ok 5 commands"
    assert lines[-2:] == [".", ""]
    body = lines[1:-2]
    assert [line.split()[0] for line in body] == ["time", "quit", "help", "status", "login"]
    assert any("login USER PASSWORD" in line and "log in" in line for line in body)


def test_status_counts():
    rig = Rig()
    p1, _t1 = rig.connect()
    p2, t2 = rig.connect(port=40001)
    p1.dataReceived(b"time\r\ntime\r\n")
    rig.clock.advance(42)
    p2.dataReceived(b"status\r\n")
    text = take(t2).decode()
    assert text.startswith("ok status\r\nversion: mailsocketd ")
    assert "uptime: 42 s" in text
    assert "connections: 2 open, 2 total, 0 refused" in text
    assert "commands: 3 served" in text
    assert text.endswith("\r\n.\r\n")


def test_pipelined_thousand_commands_in_one_packet():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time\r\n" * 1000)
    out = take(tr)
    assert out.count(b"\r\n") == 1000
    assert len(set(out.split(b"\r\n")[:-1])) == 1


def test_longer_word_starting_with_a_command_is_not_that_command():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"timestamp\r\nquitter\r\n")
    assert take(tr) == (b"error: unknown command 'timestamp'; try 'help'\r\n"
                        b"error: unknown command 'quitter'; try 'help'\r\n")


def test_bare_time_is_served_after_a_short_silence():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time")
    assert take(tr) == b""
    rig.clock.advance(0.049)
    assert take(tr) == b""
    rig.clock.advance(0.002)
    assert TIME_RE.match(take(tr))
    # A line ending that straggles in later is an empty line: no second reply.
    proto.dataReceived(b"\r\n")
    assert take(tr) == b""
    proto.dataReceived(b"quit")
    rig.clock.advance(0.05)
    assert take(tr) == b"quit\r\n" and closing(tr)


def test_split_time_line_is_one_request():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time")
    rig.clock.advance(0.01)
    proto.dataReceived(b"\r\n")
    rig.clock.advance(1)
    assert TIME_RE.match(take(tr))


def test_split_longer_word_is_not_a_bare_command():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"time")
    rig.clock.advance(0.01)
    proto.dataReceived(b"stamp\r\n")
    rig.clock.advance(1)
    assert take(tr) == b"error: unknown command 'timestamp'; try 'help'\r\n"


def test_bare_command_wait_zero_serves_at_once():
    rig = Rig(bare_command_wait=0.0)
    proto, tr = rig.connect()
    proto.dataReceived(b"time")
    assert TIME_RE.match(take(tr))


def test_bare_other_words_wait_for_a_line_end():
    rig = Rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"help")
    rig.clock.advance(10)
    assert take(tr) == b""


def test_line_too_long_is_refused_and_closed():
    rig = Rig(max_line_length=64)
    proto, tr = rig.connect()
    proto.dataReceived(b"x" * 65)
    assert take(tr) == b"error: line too long\r\n"
    assert closing(tr)


def test_complete_line_too_long_is_refused():
    rig = Rig(max_line_length=64)
    proto, tr = rig.connect()
    proto.dataReceived(b"time\r\n" + b"y" * 100 + b"\r\ntime\r\n")
    out = take(tr).split(b"\r\n")
    assert TIME_RE.match(out[0] + b"\r\n")
    assert out[1:] == [b"error: line too long", b""]


def test_idle_timeout_sends_a_line_and_closes():
    rig = Rig(idle_timeout=30.0)
    proto, tr = rig.connect()
    rig.clock.advance(29)
    proto.dataReceived(b"time\r\n")
    take(tr)
    rig.clock.advance(29)
    assert not closing(tr)
    rig.clock.advance(2)
    assert take(tr) == b"error: idle timeout (30 s), closing\r\n"
    assert closing(tr)


def test_one_timer_watches_every_client_and_closes_only_the_quiet_ones():
    rig = Rig(idle_timeout=30.0)
    quiet, busy = rig.connect(port=40001), rig.connect(port=40002)
    rig.clock.advance(10)
    late = rig.connect(port=40003)
    assert len(rig.clock.getDelayedCalls()) == 1
    for _ in range(5):  # busy keeps talking; the others say nothing
        rig.clock.advance(5)
        busy[0].dataReceived(b"time\r\n")
    assert rig.clock.seconds() == START + 35
    assert closing(quiet[1]) and not closing(busy[1]) and not closing(late[1])
    assert take(quiet[1]) == b"error: idle timeout (30 s), closing\r\n"
    rig.clock.advance(5)  # late has been quiet for 30 s
    assert closing(late[1]) and not closing(busy[1])
    lose(quiet[0], quiet[1])
    lose(late[0], late[1])
    lose(busy[0], busy[1])
    assert rig.clock.getDelayedCalls() == []


def test_a_client_waiting_for_pushed_lines_is_not_idle():
    """Issue 11 item 11: ``watch on`` was ended by the idle timeout.  A session that awaits
    pushed lines is kept however long it is quiet (TCP keepalive watches it), is checked again
    each idle period, and is closed by the limit once it no longer waits."""
    rig = Rig(idle_timeout=30.0)
    watching = {"on": True}
    proto, tr = rig.connect(port=40001)
    other, other_tr = rig.connect(port=40002)
    proto.session.awaits_push = lambda session: watching["on"] and session is proto.session
    for _ in range(10):  # 10 idle periods of silence, pushed lines meanwhile
        rig.clock.advance(30)
        proto.push("* new mail: INBOX messages=1 unseen=1")
    assert closing(other_tr) and not closing(tr)  # the other quiet client was closed
    assert take(tr) == b"* new mail: INBOX messages=1 unseen=1\r\n" * 10
    lose(other, other_tr)
    assert len(rig.clock.getDelayedCalls()) == 1  # the idle timer still watches it
    watching["on"] = False  # watch off, or the mail session was lost
    rig.clock.advance(30)
    assert take(tr) == b"error: idle timeout (30 s), closing\r\n"
    assert closing(tr)


def test_keep_alive_turns_on_tcp_keepalive_of_the_socket_underneath():
    class Tcp:
        def __init__(self, sock: socket.socket) -> None:
            self.socket = sock

    class Tls:  # TLSMemoryBIOProtocol: the TCP transport is its .transport
        def __init__(self, inner: object) -> None:
            self.transport = inner

    with socket.socket() as tcp, socket.socket(socket.AF_UNIX) as unix:
        assert keep_alive(Tls(Tcp(tcp)))
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
        assert not keep_alive(Tcp(unix))  # a UNIX socket's dead peer is seen at once
    assert not keep_alive(HalfClosingTransport())


def test_client_that_does_not_read_stops_being_served():
    rig = Rig()
    proto, tr = rig.connect()
    assert tr.producer is proto  # the protocol hears when output backs up
    assert isinstance(proto, LineProtocol)  # for mypy: the line above made it "Any | None"
    proto.pauseProducing()  # what the transport does when its buffer is full
    assert tr.producerState == "paused"  # we stop reading the socket
    proto.dataReceived(b"time\r\n" * 10)
    assert take(tr) == b""
    proto.resumeProducing()
    assert take(tr).count(b"\r\n") == 10
    assert tr.producerState == "producing"


def slow_rig() -> tuple[Rig, list[Deferred[Reply]]]:
    """A rig with a ``slow`` command whose replies the test fires by hand."""
    pending: list[Deferred[Reply]] = []

    def slow(session):
        d: Deferred[Reply] = Deferred()
        pending.append(d)
        return d

    return Rig(extra=[Command(name="slow", handler=slow, summary="waits")]), pending


def test_input_backlog_is_bounded_while_a_reply_is_pending():
    rig, pending = slow_rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"slow\r\n")
    proto.dataReceived(b"time\r\n" * 20000)  # 120 KB queued behind the slow command
    assert tr.producerState == "paused"
    assert take(tr) == b""
    pending[0].callback(Reply("done"))
    out = take(tr).split(b"\r\n")
    assert out[0] == b"done" and len(out) == 20002
    assert tr.producerState == "producing"


def test_deferred_replies_keep_request_order_and_errors_become_lines():
    rig, pending = slow_rig()
    proto, tr = rig.connect()
    proto.dataReceived(b"slow\r\ntime\r\nslow\r\n")
    assert take(tr) == b""
    pending[0].callback(Reply("first"))
    out = take(tr).split(b"\r\n")
    assert out[0] == b"first" and TIME_RE.match(out[1] + b"\r\n") and out[2] == b""
    pending[1].errback(CommandError("mailbox gone"))
    assert take(tr) == b"error: mailbox gone\r\n"


def test_unexpected_failure_is_logged_and_generic():
    def broken(session):
        raise RuntimeError("secret detail")

    rig = Rig(extra=[Command(name="broken", handler=broken, summary="fails")])
    proto, tr = rig.connect()
    proto.dataReceived(b"broken\r\n")
    out = take(tr)
    assert out == b"error: internal error (the server logged the details)\r\n"
    assert b"RuntimeError" not in out and b"secret" not in out


def test_login_gating_from_the_table():
    rig = Rig(extra=[Command(name="check", handler=lambda s: Reply("ok"), summary="check mail",
                             needs_login=True)])
    proto, tr = rig.connect()
    proto.dataReceived(b"check\r\n")
    assert take(tr) == b"error: login first\r\n"
    proto.session.user = User("alice")
    proto.dataReceived(b"check\r\n")
    assert take(tr) == b"ok\r\n"


def test_banner_only_when_asked():
    assert take(Rig().connect()[1]) == b""
    assert take(Rig(banner=True).connect()[1]) == b"mailsocketd ready; try 'help'\r\n"


def test_connection_limits_total_and_per_peer():
    rig = Rig(max_connections=3, max_connections_per_peer=2)
    a1, _ = rig.connect("10.0.0.1", 1)
    rig.connect("10.0.0.1", 2)
    _, tr = rig.connect("10.0.0.1", 3)
    assert take(tr) == b"error: too many connections from your address\r\n"
    assert closing(tr)
    rig.connect("10.0.0.2", 1)
    _refused, tr = rig.connect("10.0.0.3", 1)
    assert take(tr) == b"error: too many connections, try again later\r\n"
    lose(a1, a1.transport)
    _, tr = rig.connect("10.0.0.3", 2)
    assert take(tr) == b""
    assert rig.server.refused_connections == 2
    assert rig.server.open_connections == 3


def test_close_all_tells_clients_and_fires_when_gone():
    rig = Rig()
    clients = [rig.connect(port=p) for p in range(3)]
    done = rig.factory.close_all(Reply("error: server shutting down", close=True))
    assert not done.called
    for proto, tr in clients:
        assert take(tr) == b"error: server shutting down\r\n" and closing(tr)
        lose(proto, tr)
    assert done.called and rig.server.open_connections == 0


def test_no_timers_left_after_close():
    rig = Rig(idle_timeout=30.0)
    proto, tr = rig.connect()
    proto.dataReceived(b"time")
    proto.dataReceived(b"\r\nquit\r\n")
    lose(proto, tr)
    assert rig.clock.getDelayedCalls() == []


# -- property: any split of a byte stream into packets yields the same replies ----------------

_request = st.sampled_from([b"time", b"TIME", b" quit", b"help", b"status", b"timestamp",
                            b"tim", b"", b"\xff", b"x\x00y", b"time now", b"quitx",
                            b"y" * 4096, b"y" * 4097])  # at and just over max_line_length
_ending = st.sampled_from([b"\r\n", b"\n"])


def _replies(stream: bytes, cuts: list[int]) -> bytes:
    rig = Rig()
    proto, tr = rig.connect()
    last = 0
    for cut in [*sorted(cuts), len(stream)]:
        if cut > last and not closing(tr):
            proto.dataReceived(stream[last:cut])
            last = cut
    # No time passes between packets: the stream is a stream, whatever its packets.
    replies: bytes = tr.value()
    return replies.replace(rig.server.time_text().encode(), b"<T>")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_request, _ending), max_size=12), st.lists(st.integers(0, 200)))
def test_any_split_gives_the_same_replies(requests, cuts):
    stream = b"".join(r + e for r, e in requests)
    cuts = [c for c in cuts if c <= len(stream)]
    assert _replies(stream, cuts) == _replies(stream, [])


def test_a_closed_connection_is_freed_by_its_refcount_not_left_to_the_cycle_collector():
    """Under a high connection rate, every connection left in a reference cycle is work for
    the cycle collector (about 5% of the CPU at 10,000 connections a second)."""
    rig = Rig()
    gc.disable()
    try:
        proto, transport = rig.connect()
        proto.dataReceived(b"time\r\n")
        assert take(transport)
        alive = [weakref.ref(proto), weakref.ref(proto.session), weakref.ref(transport)]
        lose(proto, transport)
        transport.unregisterProducer()  # as Twisted's socket transports do when they close
        del proto, transport
        assert [ref() for ref in alive] == [None, None, None]
    finally:
        gc.enable()


def test_a_closing_connection_stops_counting_against_its_address_at_once():
    """Issue 12 item 8: the count was released only when the lingering close ended (up to
    close_grace later), so a client reconnecting at once was refused."""
    rig = Rig(close_grace=5.0, max_connections_per_peer=1)
    proto, tr = rig.connect()
    proto.dataReceived(b"quit\r\n")
    assert take(tr) == b"quit\r\n" and tr.write_closed and not tr.disconnecting  # lingering
    again, tr2 = rig.connect(port=40001)
    again.dataReceived(b"time\r\n")
    assert TIME_RE.match(take(tr2))  # admitted, not "too many connections from your address"
    assert rig.server.open_connections == 2  # the global count still holds the lingering one
    _third, tr3 = rig.connect(port=40002)  # the limit still holds for open connections
    assert take(tr3) == b"error: too many connections from your address\r\n"
    lose(proto, tr)  # the first one ends: released once, not twice
    assert rig.server.open_connections == 1
    _fourth, tr4 = rig.connect(port=40003)
    assert take(tr4) == b"error: too many connections from your address\r\n"


def test_help_lists_a_command_only_while_it_says_it_is_listed():
    shown = {"flag": False}
    extra = Command(name="login", handler=lambda session, user: Reply("x"), summary="log in",
                    args=(Arg("user"),), listed=lambda: shown["flag"])
    rig = Rig(extra=[extra])
    proto, tr = rig.connect()
    proto.dataReceived(b"help\r\n")
    assert take(tr).decode().split("\r\n")[:2] == [
        "ok 4 commands", "time            the local date and time, as YYYY/MM/DD HH:MM:SS"]
    shown["flag"] = True  # [imap] added by a reload, say
    proto.dataReceived(b"help\r\nhelp login\r\n")
    text = take(tr).decode()
    assert text.startswith("ok 5 commands\r\n") and "\r\nlogin USER      log in\r\n" in text
    assert "ok login USER\r\n" in text  # help COMMAND works either way
