"""Input mode: a reply that asks for input (send's body) takes the following lines up to '.'."""

from __future__ import annotations

from linerig import Rig, lose, take
from twisted.internet.defer import Deferred

from mailsocketd.line.commands import Command
from mailsocketd.line.replies import CommandError, Reply
from mailsocketd.line.session import Session


class Collector:
    """An InputReader that remembers what it got and answers from ``finish``."""

    def __init__(self, answer: Reply | Deferred[Reply] | Exception | None = None,
                 limit: int = 1 << 20) -> None:
        self.lines: list[bytes] = []
        self.answer = answer
        self.abandoned = False
        self.limit = limit
        self.size = 0

    def line(self, data: bytes) -> None:
        self.size += len(data)
        self.lines.append(data)

    def finish(self) -> Reply | Deferred[Reply]:
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.size > self.limit:
            raise CommandError("too large; not sent")
        return self.answer or Reply(f"ok got {len(self.lines)} lines")

    def abandon(self) -> None:
        self.abandoned = True


def rig_with(collector: Collector) -> Rig:
    def do_write(session: Session) -> Reply:
        return Reply("ok go ahead", reader=collector)
    return Rig([Command(name="write", handler=do_write, summary="take some lines")])


def test_lines_up_to_the_dot_are_input_not_commands():
    collector = Collector()
    rig = rig_with(collector)
    proto, tr = rig.connect()
    proto.dataReceived(b"write\r\nSubject: hi\r\n\r\nquit\r\n..hidden\r\n.\r\ntime\r\n")
    out = take(tr).split(b"\r\n")
    assert out[0] == b"ok go ahead"
    assert out[1] == b"ok got 4 lines"
    assert out[2] == rig.server.time_text().encode()
    # the empty line is kept, 'quit' is text, '..hidden' is un-stuffed
    assert collector.lines == [b"Subject: hi", b"", b"quit", b".hidden"]


def test_input_split_across_packets_and_a_bare_word_is_not_a_command():
    collector = Collector()
    rig = rig_with(collector)
    proto, tr = rig.connect()
    proto.dataReceived(b"write\n")
    take(tr)
    proto.dataReceived(b"time")  # no line end: inside input this is not the bare command
    rig.clock.advance(1.0)
    assert take(tr) == b""
    proto.dataReceived(b"\n.")
    proto.dataReceived(b"\n")
    assert take(tr) == b"ok got 1 lines\r\n"
    assert collector.lines == [b"time"]


def test_finish_errors_become_one_line_and_commands_resume():
    collector = Collector(limit=3)
    rig = rig_with(collector)
    proto, tr = rig.connect()
    proto.dataReceived(b"write\nmore than three bytes\n.\ntime\n")
    lines = take(tr).split(b"\r\n")
    assert lines[1] == b"error: too large; not sent"
    assert lines[2] == rig.server.time_text().encode()


def test_deferred_finish_holds_the_next_command_until_it_fires():
    answer: Deferred[Reply] = Deferred()
    collector = Collector(answer)
    rig = rig_with(collector)
    proto, tr = rig.connect()
    proto.dataReceived(b"write\nbody\n.\ntime\n")
    assert take(tr) == b"ok go ahead\r\n"
    answer.callback(Reply("ok sent <1@x>"))
    lines = take(tr).split(b"\r\n")
    assert lines[0] == b"ok sent <1@x>"
    assert lines[1] == rig.server.time_text().encode()


def test_eof_before_the_dot_abandons_and_says_nothing_was_sent():
    collector = Collector()
    rig = rig_with(collector)
    proto, tr = rig.connect()
    proto.dataReceived(b"write\nhalf a message")
    take(tr)
    proto.readConnectionLost()
    assert collector.abandoned
    assert take(tr) == b"error: input ended before the line holding only '.'; nothing was sent\r\n"


def test_eof_right_after_an_unterminated_dot_finishes_the_input():
    collector = Collector()
    rig = rig_with(collector)
    proto, tr = rig.connect()
    proto.dataReceived(b"write\nline\n.")
    take(tr)
    proto.readConnectionLost()
    assert take(tr) == b"ok got 1 lines\r\n"
    assert not collector.abandoned


def test_connection_lost_mid_input_abandons_the_reader_and_runs_close_hooks():
    collector = Collector()
    rig = rig_with(collector)
    proto, tr = rig.connect()
    closed: list[str] = []
    proto.session.on_close.append(lambda session: closed.append("closed"))
    proto.dataReceived(b"write\nline\n")
    lose(proto, tr)
    assert collector.abandoned
    assert closed == ["closed"]
    assert rig.server.open_connections == 0
