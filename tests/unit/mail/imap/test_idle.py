"""The one IDLE loop (IdleLoop) against a scripted server on a task.Clock, and the anti-spin
rule it applies (QuickIdleEnds): refusal, renewal, DONE timeouts, spacing, the fallback to
polling, ending on demand."""

from __future__ import annotations

import gc

import pytest
from mailrig import Rig
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.logger import LogLevel, capturedLogs, formatEvent

from mailsocketd.mail.errors import CheckTimeout
from mailsocketd.mail.imap.idle import (
    IDLE_MIN_SPACING,
    IDLE_SHORT,
    IDLE_SHORT_LIMIT,
    IdleLoop,
    QuickIdleEnds,
)

QUICK = IDLE_SHORT / 10
LONG = IDLE_SHORT


# -- the rule ------------------------------------------------------------------------------------

def verdicts(ends: list[tuple[float, bool, bool]]) -> list[bool]:
    rule = QuickIdleEnds()
    return [rule.ended(lasted, by_server=by_server, news=news)
            for lasted, by_server, news in ends]


def test_the_limit_of_quick_ends_by_the_server_in_a_row_means_poll():
    assert verdicts([(QUICK, True, False)] * IDLE_SHORT_LIMIT) == (
        [False] * (IDLE_SHORT_LIMIT - 1) + [True])


@pytest.mark.parametrize(("between", "breaks"), [
    ((LONG, True, False), True),   # an IDLE that lasted, ended by the server
    ((LONG, False, False), True),  # ... or by us
    ((LONG, True, True), True),    # ... even with news
    ((QUICK, False, False), False),  # one we ended early: neither counts nor breaks
    ((QUICK, True, True), False),    # one the server ended with news: the same
])
def test_what_breaks_the_row(between, breaks):
    quick = (QUICK, True, False)
    ends = [quick] * (IDLE_SHORT_LIMIT - 1) + [between, quick]
    assert verdicts(ends)[-1] is (not breaks)


# -- the loop ------------------------------------------------------------------------------------

class Owner:
    """What a loop's owner would be: a news flag, and when the server accepted IDLE."""

    def __init__(self) -> None:
        self.news = False
        self.accepted: list[float] = []


def loop_on(keepalive=100.0, timeout=30.0):
    rig = Rig(timeout=timeout).connect()
    rig.greet()
    owner = Owner()
    loop = IdleLoop(rig.client, rig.clock, keepalive=keepalive, has_news=lambda: owner.news,
                    poll_interval=60.0, label="work", log_fields={"account": "work"},
                    on_idling=lambda: owner.accepted.append(rig.clock.seconds()))
    return rig, loop, owner


def accept(rig):
    rig.expect(b"IDLE")
    rig.server("+ idling")


def answer_done(rig):
    assert rig.sent() == [b"DONE"]
    rig.reply(text="IDLE terminated")


def result_of(d):
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def error_of(d):
    result = result_of(d)
    assert hasattr(result, "value"), f"no failure: {result!r}"
    return result.value


def unhandled(events):
    return [e for e in events if "Unhandled error" in (formatEvent(e) or "")]


def by_event(events, name):
    return [e for e in events if e.get("event") == name]


@pytest.mark.parametrize("continuation", [False, True])
def test_a_refused_idle_means_polling_said_once_at_info(continuation):
    rig, loop, owner = loop_on()
    with capturedLogs() as events:
        d = loop.run()
        rig.expect(b"IDLE")
        if continuation:
            rig.server("+ idling")
        rig.reply(status="BAD", text="Unknown command")
        gc.collect()  # an unhandled failure in a Deferred is logged when it is collected
    assert result_of(d) == "refused" and loop.use_idle is False and not loop.running
    assert owner.accepted == ([0] if continuation else [])
    (event,) = by_event(events, "idle_refused")
    assert event["log_level"] == LogLevel.info and event["account"] == "work"
    assert event["error"] == "IDLE refused: BAD Unknown command" and event["interval"] == 60
    assert not by_event(events, "idle_fallback") and not unhandled(events)
    assert rig.clock.getDelayedCalls() == []


def test_idle_is_renewed_after_keepalive_seconds_and_the_next_round_starts_at_once():
    rig, loop, owner = loop_on(keepalive=100)
    d = loop.run()
    accept(rig)
    assert owner.accepted == [0] and loop.idling
    rig.clock.advance(99.9)
    assert rig.sent() == [] and not d.called
    rig.clock.advance(0.1)
    assert rig.sent() == [b"DONE"] and not d.called  # over only when the server says so
    rig.reply(text="IDLE terminated")
    assert result_of(d) == "done" and not loop.running
    loop.run()
    accept(rig)  # the last round began 100 s ago: no spacing to wait
    assert owner.accepted == [0, 100]


def test_idle_ends_at_the_owners_deadline_when_it_comes_before_keepalive():
    rig, loop, _ = loop_on(keepalive=100)
    d = loop.run(until=40)
    accept(rig)
    rig.clock.advance(39.9)
    assert rig.sent() == []
    rig.clock.advance(0.1)
    answer_done(rig)
    assert result_of(d) == "done"


def _end_by_keepalive(rig, loop):
    d = loop.run()
    accept(rig)
    rig.clock.advance(100)
    return d


def _end_by_deadline(rig, loop):
    d = loop.run(until=50)
    accept(rig)
    rig.clock.advance(50)
    return d


def _end_by_leave(rig, loop):
    d = loop.run()
    accept(rig)
    ensureDeferred(loop.leave()).addErrback(lambda _: None)
    return d


@pytest.mark.parametrize(("ending", "step"), [
    (_end_by_keepalive, "the reply to DONE (heartbeat)"),
    (_end_by_deadline, "the reply to DONE"),
    (_end_by_leave, "the reply to DONE"),
])
def test_a_done_without_reply_drops_the_connection(ending, step):
    rig, loop, _ = loop_on(keepalive=100, timeout=30)
    d = ending(rig, loop)
    assert rig.sent() == [b"DONE"]
    rig.clock.advance(29.9)
    assert not rig.transport.closed
    rig.clock.advance(0.1)
    assert rig.transport.closed
    rig.clock.advance(0)  # connectionLost
    error = error_of(d)
    assert isinstance(error, CheckTimeout) and str(error) == f"timed out after 30 s waiting for {step}"
    assert rig.clock.getDelayedCalls() == [] and not loop.running


def test_idle_that_the_server_never_accepts_drops_the_connection():
    rig, loop, owner = loop_on(timeout=30)
    d = loop.run()
    rig.expect(b"IDLE")
    rig.clock.advance(30)
    rig.clock.advance(0)
    assert str(error_of(d)) == "timed out after 30 s waiting for the server to accept IDLE"
    assert owner.accepted == [] and rig.clock.getDelayedCalls() == []


def test_rounds_start_at_least_the_spacing_apart():
    rig, loop, _ = loop_on()
    d = loop.run()
    rig.expect(b"IDLE")
    rig.reply(text="IDLE over already")  # ended at once, without "+"
    assert result_of(d) == "server"
    loop.run()
    rig.clock.advance(IDLE_MIN_SPACING - 0.001)
    assert rig.sent() == []
    rig.clock.advance(0.001)
    accept(rig)


def test_ending_a_round_that_waits_for_its_turn_sends_nothing():
    rig, loop, _ = loop_on()
    d = loop.run()
    accept(rig)
    loop.end()
    answer_done(rig)
    result_of(d)
    d = loop.run()
    rig.clock.advance(IDLE_MIN_SPACING / 2)
    loop.end()
    assert result_of(d) == "skipped" and not loop.running
    assert rig.sent() == [] and rig.clock.getDelayedCalls() == []
    loop.run()  # a round that did not start does not move the spacing
    rig.clock.advance(IDLE_MIN_SPACING / 2)
    accept(rig)


def test_news_does_not_cut_the_wait_for_a_turn_and_then_sends_no_idle():
    rig, loop, owner = loop_on()
    d = loop.run()
    accept(rig)
    owner.news = True
    loop.changed()  # news during IDLE ends it at once
    answer_done(rig)
    assert result_of(d) == "done"
    d = loop.run()  # the owner checks its news; meanwhile, more comes
    loop.changed()
    assert not d.called
    rig.clock.advance(IDLE_MIN_SPACING)
    assert result_of(d) == "skipped" and rig.sent() == []
    owner.news = False
    loop.run()
    assert rig.sent() == []  # a round skipped for news counts for the spacing
    rig.clock.advance(IDLE_MIN_SPACING)
    accept(rig)


def test_ending_before_the_continuation_sends_done_right_after_it():
    rig, loop, owner = loop_on()
    d = loop.run()
    rig.expect(b"IDLE")
    left = ensureDeferred(loop.leave())
    assert rig.sent() == [] and not left.called  # DONE only once IDLE runs
    rig.server("+ idling")
    assert rig.sent() == [b"DONE"] and not left.called and loop.running
    rig.reply(text="IDLE terminated")
    assert result_of(left) is None and result_of(d) == "done" and not loop.running
    assert owner.accepted == []


def test_leave_waits_for_the_tagged_reply_and_fails_with_the_round():
    rig, loop, _ = loop_on()
    d = loop.run()
    accept(rig)
    left = ensureDeferred(loop.leave())
    assert rig.sent() == [b"DONE"] and not left.called
    rig.transport.loseConnection()
    rig.clock.advance(0)
    assert isinstance(error_of(left), ConnectionDone)
    assert isinstance(error_of(d), ConnectionDone)
    assert rig.clock.getDelayedCalls() == []


def test_a_connection_lost_while_waiting_for_a_turn_fails_the_round_at_once():
    rig, loop, _ = loop_on()
    d = loop.run()
    rig.expect(b"IDLE")
    rig.reply(text="IDLE over already")
    result_of(d)
    d = loop.run()
    rig.transport.loseConnection()
    rig.clock.advance(0)
    assert isinstance(error_of(d), ConnectionDone)
    assert rig.clock.getDelayedCalls() == [] and not loop.running


def quick_end(rig, loop, owner, *, by_server=True, news=False):
    """One round the server (or we) end at once; then the spacing passes."""
    d = loop.run()
    accept(rig)
    owner.news = news
    if by_server:
        rig.reply(text="IDLE over already")
    else:
        loop.end()
        answer_done(rig)
    owner.news = False
    result = result_of(d)
    rig.clock.advance(IDLE_MIN_SPACING)
    return result


def test_quick_ends_by_the_server_in_a_row_give_idle_up_said_once():
    rig, loop, owner = loop_on()
    with capturedLogs() as events:
        results = [quick_end(rig, loop, owner) for _ in range(IDLE_SHORT_LIMIT)]
    assert results == ["server"] * IDLE_SHORT_LIMIT and loop.use_idle is False
    (event,) = by_event(events, "idle_fallback")
    assert event["log_level"] == LogLevel.warn
    assert (event["account"], event["count"], event["interval"]) == ("work", 3, 60)
    assert formatEvent(event) == ("work: the server ended IDLE at once 3 times in a row; "
                                  "polling every 60 s on this connection instead")


def test_quick_ends_that_we_asked_for_or_that_brought_news_do_not_count():
    rig, loop, owner = loop_on()
    for _ in range(IDLE_SHORT_LIMIT - 1):
        quick_end(rig, loop, owner)
    assert quick_end(rig, loop, owner, by_server=False) == "done"
    assert quick_end(rig, loop, owner, news=True) == "server"
    assert loop.use_idle is True
    quick_end(rig, loop, owner)  # the row went on: this is the limit
    assert loop.use_idle is False


def test_an_idle_that_lasted_breaks_the_row():
    rig, loop, owner = loop_on(keepalive=1500)
    for _ in range(IDLE_SHORT_LIMIT - 1):
        quick_end(rig, loop, owner)
    d = loop.run()
    accept(rig)
    rig.clock.advance(IDLE_SHORT)
    rig.reply(text="IDLE timed out")
    assert result_of(d) == "server"
    for _ in range(IDLE_SHORT_LIMIT - 1):
        quick_end(rig, loop, owner)
    assert loop.use_idle is True


def test_one_round_at_a_time():
    _, loop, _ = loop_on()
    loop.run()
    with pytest.raises(RuntimeError):
        loop.run()
