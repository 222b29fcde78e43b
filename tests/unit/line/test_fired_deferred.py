"""A handler may return a Deferred that has fired already (a coroutine that failed before its
first await): each pipelined request must still be answered exactly once, in order."""

from __future__ import annotations

from linerig import Rig, take
from twisted.internet.defer import Deferred, fail, succeed

from mailsocketd.line.commands import Command
from mailsocketd.line.replies import CommandError, Reply
from mailsocketd.line.session import Session


def do_refuse(session: Session) -> Deferred[Reply]:
    return fail(CommandError("refused at once"))


def do_ready(session: Session) -> Deferred[Reply]:
    return succeed(Reply("ok ready at once"))


def test_already_fired_deferreds_answer_each_request_once_in_order():
    rig = Rig([Command(name="refuse", handler=do_refuse, summary="fails at once"),
               Command(name="ready", handler=do_ready, summary="succeeds at once")])
    proto, tr = rig.connect()
    proto.dataReceived(b"refuse\nready\nrefuse\ntime\n")
    lines = take(tr).split(b"\r\n")
    assert lines == [b"error: refused at once", b"ok ready at once", b"error: refused at once",
                     rig.server.time_text().encode(), b""]
    proto.dataReceived(b"ready\n")
    assert take(tr) == b"ok ready at once\r\n"
