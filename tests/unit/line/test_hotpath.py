"""The hot path's shortcuts keep the protocol's behaviour: one write per packet, back-pressure,
order with pushes and closes, bare command names, cached reply bytes, lean command events."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from linerig import HalfClosingTransport, Rig, User, take
from logrig import LogEvents, global_log_events
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.logger import (
    Logger,
    eventAsJSON,
    eventAsText,
    formatEvent,
)

from mailsocketd.line.commands import Arg, Command
from mailsocketd.line.protocol import OUTBOX_LIMIT
from mailsocketd.line.replies import Reply
from mailsocketd.line.session import Session
from mailsocketd.logs import Events


class RecordingTransport(HalfClosingTransport):
    """Remembers each write and close in order, and pauses its producer, like a TCP transport,
    once more than ``high_water`` bytes are unread."""

    def __init__(self, high_water: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, bytes]] = []
        self.high_water = high_water

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))
        super().write(data)
        if self.high_water is not None and len(self.value()) > self.high_water:
            assert self.producer is not None  # the protocol registers itself on connecting
            self.producer.pauseProducing()

    def loseWriteConnection(self) -> None:
        self.calls.append(("shut", b""))
        super().loseWriteConnection()

    def writes(self) -> list[bytes]:
        return [data for kind, data in self.calls if kind == "write"]


def connect(rig: Rig, high_water: int | None = None) -> tuple[Any, RecordingTransport]:
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    proto = rig.factory.buildProtocol(address)
    transport = RecordingTransport(high_water, peerAddress=address)
    proto.makeConnection(transport)
    return proto, transport


def test_the_replies_to_one_packet_go_out_in_one_write():
    rig = Rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"time\n" * 16)
    assert tr.writes() == [(rig.server.time_text() + "\r\n").encode() * 16]
    proto.dataReceived(b"time\r\n")
    assert len(tr.writes()) == 2


def test_a_full_transport_still_stops_a_long_pipeline():
    rig = Rig()
    proto, tr = connect(rig, high_water=4096)
    proto.dataReceived(b"help\n" * 2000)  # about 700 KB of replies
    written = len(tr.value())
    # Replies are written at least every OUTBOX_LIMIT bytes, so the pause came early...
    assert 4096 < written <= OUTBOX_LIMIT + 1024
    assert tr.producerState == "paused"
    tr.clear()
    # ...and once the client reads again the rest is served, nothing lost.
    served = written
    for _ in range(2000):
        if not proto._buffer:
            break
        proto.resumeProducing()
        served += len(tr.value())
        tr.clear()
    help_reply = rig.server.execute(Session(peer="p", host="h"), b"help")
    assert isinstance(help_reply, Reply)
    assert served == len(help_reply.encode()) * 2000


def test_quit_in_a_pipeline_writes_the_earlier_replies_before_shutting_down():
    rig = Rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"time\ntime\nquit\ntime\n")
    now = (rig.server.time_text() + "\r\n").encode()
    assert tr.calls == [("write", now * 2 + b"quit\r\n"), ("shut", b"")]


def test_a_line_pushed_while_a_packet_is_served_keeps_its_place():
    def do_notify(session: Session) -> Reply:
        session.push("* pushed")
        return Reply("ok notified")

    rig = Rig([Command(name="notify", handler=do_notify, summary="push a line, then answer")])
    proto, tr = connect(rig)
    proto.dataReceived(b"time\nnotify\ntime\n")
    now = rig.server.time_text().encode()
    assert take(tr).split(b"\r\n") == [now, b"* pushed", b"ok notified", now, b""]


def test_a_long_unfinished_line_is_refused_while_a_reply_is_pending():
    pending: list[Deferred[Reply]] = []

    def do_slow(session: Session) -> Deferred[Reply]:
        pending.append(Deferred())
        return pending[-1]

    rig = Rig([Command(name="slow", handler=do_slow, summary="waits")], max_line_length=64)
    proto, tr = connect(rig)
    proto.dataReceived(b"slow\n" + b"time\n" * 100 + b"x" * 60)
    assert take(tr) == b""  # waiting; 60 bytes of an unfinished line are within the limit
    proto.dataReceived(b"x" * 5)
    assert take(tr) == b"error: line too long\r\n"


def test_a_slow_drip_is_served_as_one_line():
    rig = Rig()
    proto, tr = connect(rig)
    for byte in b"status":
        proto.dataReceived(bytes([byte]))
    assert take(tr) == b""
    proto.dataReceived(b"\r")
    proto.dataReceived(b"\n")
    assert take(tr).startswith(b"ok status\r\n")


def test_bare_command_names_are_answered_as_the_general_path_answers_them():
    def do_echo(session: Session, words: str = "") -> Reply:
        return Reply(f"ok {words!r}")

    def do_secret(session: Session) -> Reply:
        return Reply("ok secret")

    def do_two(session: Session, a: str, b: str) -> Reply:
        return Reply(f"ok {a} {b}")

    extra = [Command(name="echo", handler=do_echo, summary="echo",
                     args=(Arg("words", kind="rest", optional=True),)),
             Command(name="secret", handler=do_secret, summary="after login", needs_login=True),
             Command(name="two", handler=do_two, summary="two words",
                     args=(Arg("a"), Arg("b")))]
    rig = Rig(extra)
    session = Session(peer="p", host="h")
    time_now = rig.server.time_text()

    def answer(line: bytes) -> str:
        result = rig.server.execute(session, line)
        assert isinstance(result, Reply)
        return result.head.replace(time_now, "<T>")

    for name in ("time", "echo", "secret", "two", "help", "status"):
        # "name" takes the shortcut; " NAME\t" is decoded, split and lower-cased.
        assert answer(name.encode()) == answer(f" {name.upper()}\t".encode()), name
    assert answer(b"secret") == "error: login first"
    assert answer(b"two") == "error: usage: two A B"
    assert answer(b"echo") == "ok ''"
    assert answer(b"echo  a  b ") == "ok 'a  b '"  # the rest of the line, as sent
    session.user = User("alice")
    assert answer(b"secret") == "ok secret"
    assert session.commands == 17  # every request counted, whichever path it took


def test_the_wire_form_of_a_one_line_reply_is_made_once():
    reply = Reply("2026/11/25 14:03:07")
    assert reply.encode() == b"2026/11/25 14:03:07\r\n"
    assert reply.encode() is reply.encode()
    closing = replace(reply, close=True)
    assert closing.close and closing.encode() == reply.encode()
    assert reply == Reply("2026/11/25 14:03:07") and "wire" not in repr(reply)
    multi = Reply("ok x", ("a", ".b"))
    assert multi.encode() == b"ok x\r\na\r\n..b\r\n.\r\n"


def test_the_time_reply_is_shared_within_a_second_and_renewed_after():
    rig = Rig()
    first = rig.server.time_reply()
    assert rig.server.time_reply() is first
    rig.clock.advance(1.0)
    assert rig.server.time_reply() is not first
    assert rig.server.time_reply().head != first.head


def events_of(rig: Rig, data: bytes) -> list[dict[str, Any]]:
    with global_log_events() as events:
        proto, _ = rig.connect()
        proto.dataReceived(data)
    return [e for e in events if e.get("event") == "command"]


def test_one_command_event_per_request_with_peer_command_and_outcome():
    events = events_of(Rig(), b"time\nTIME\nfo\x1b{x}o\nquit\n")
    assert [(e["peer"], e["command"], e["outcome"]) for e in events] == [
        ("127.0.0.1:40000", "time", "ok"),
        ("127.0.0.1:40000", "time", "ok"),
        ("127.0.0.1:40000", "fo?{x}o", "error: unknown command 'fo?{x}o'; try 'help'"),
        ("127.0.0.1:40000", "quit", "ok"),
    ]
    assert formatEvent(events[2]) == (
        "127.0.0.1:40000 fo?{x}o: error: unknown command 'fo?{x}o'; try 'help'")


def test_no_command_events_when_turned_off():
    rig = Rig()
    rig.server.log_commands = False
    assert events_of(rig, b"time\nnope\n") == []


class Owner:
    log = Logger()


def test_the_lean_event_reads_like_the_logger_event_in_text_and_json():
    captured = LogEvents()
    peer, command, outcome = "127.0.0.1:4000", "ti{me}", "error: no {such}"
    logger_event = captured_from_global(lambda: Owner().log.info(
        "{peer} {command}: {outcome}", peer=peer, command=command, outcome=outcome,
        event="command"))
    namespace = f"{Owner.__module__}.{Owner.__name__}"
    Events(namespace, captured).info("command", f"{peer} {command}: {outcome}",
                                     peer=peer, command=command, outcome=outcome)
    lean = captured.events[0]
    lean["log_time"] = logger_event["log_time"]
    assert eventAsText(lean) == eventAsText(logger_event)
    parsed = json.loads(eventAsJSON(lean))
    assert {k: parsed[k] for k in ("event", "peer", "command", "outcome", "log_namespace")} == {
        "event": "command", "peer": peer, "command": command, "outcome": outcome,
        "log_namespace": namespace}
    assert parsed["log_level"]["name"] == "info"


def captured_from_global(action: Any) -> dict[str, Any]:
    with global_log_events() as events:
        action()
    return events[-1]
