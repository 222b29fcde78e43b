"""The watch loop on a task.Clock: IDLE, new mail, heartbeats, polling, stopping."""

from __future__ import annotations

import gc

from mailrig import Rig, account
from twisted.internet.defer import ensureDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.logger import LogLevel, capturedLogs, formatEvent

from mailsocketd.mail.accounts.connection import AccountConnection
from mailsocketd.mail.accounts.state import AccountState
from mailsocketd.mail.errors import CheckTimeout
from mailsocketd.mail.imap.idle import IDLE_MIN_SPACING, IDLE_SHORT_LIMIT
from mailsocketd.mail.secrets import Secret


def logged_in(caps_after="IMAP4rev1 IDLE", **overrides):
    acct = account(**overrides)
    rig = Rig(timeout=30).connect()
    state = AccountState(acct, rig.clock)
    session = AccountConnection(rig.client, account=acct, state=state, clock=rig.clock,
                      password=lambda: succeed(Secret(b"pw")))
    done = ensureDeferred(session.run())
    rig.greet()
    rig.plain_login(caps_after=caps_after)
    return rig, state, session, done


def idling(rig, state, mailbox=b"INBOX"):
    assert rig.answer(b"EXAMINE", "3 EXISTS", "0 RECENT", "OK [UIDVALIDITY 1] ok") == mailbox
    rig.expect(b"IDLE")
    rig.server("+ idling")
    assert state.state == "idling"


def idle_again(rig, state):
    rig.expect(b"IDLE")
    rig.server("+ idling")
    assert state.state == "idling"


def end_idle(rig):
    assert rig.sent() == [b"DONE"]
    rig.reply(text="IDLE terminated")


def test_new_mail_during_idle_ends_idle_and_runs_status():
    rig, state, _, done = logged_in()
    rig.status(messages=12, unseen=3, uidnext=13)
    idling(rig, state)
    with capturedLogs() as events:
        rig.server("* 13 EXISTS", "* 1 RECENT")
        end_idle(rig)
        rig.status(messages=13, unseen=4, uidnext=14)
        assert rig.clock.seconds() == 0  # noticed without waiting for any timer
        assert rig.sent() == []  # IDLE again only IDLE_MIN_SPACING after the last start
        rig.clock.advance(IDLE_MIN_SPACING)
        idle_again(rig, state)
    new_mail = [e for e in events if e.get("event") == "new_mail"]
    assert len(new_mail) == 1 and new_mail[0]["new"] == 1 and new_mail[0]["unseen"] == 4
    record = state.mailboxes["INBOX"]
    assert (record.counts.messages, record.counts.unseen, record.new_mail) == (13, 4, 1)
    assert rig.client.commands_sent["STATUS"] == 2 and not done.called


def test_a_flag_change_rechecks_without_new_mail_event():
    rig, state, _, _ = logged_in()
    rig.status(unseen=3)
    idling(rig, state)
    with capturedLogs() as events:
        rig.server("* 2 FETCH (FLAGS (\\Seen))")
        end_idle(rig)
        rig.status(unseen=2)
    assert state.mailboxes["INBOX"].counts.unseen == 2
    assert not [e for e in events if e.get("event") == "new_mail"]


def test_heartbeat_renews_idle_every_keepalive():
    rig, state, _, _ = logged_in(keepalive=240, interval=3600)
    rig.status()
    idling(rig, state)
    rig.clock.advance(239)
    assert rig.sent() == []
    rig.clock.advance(1)
    end_idle(rig)
    idle_again(rig, state)
    assert rig.client.commands_sent["IDLE"] == 2 and rig.client.commands_sent["STATUS"] == 1


def test_a_silent_server_is_noticed_within_keepalive_plus_timeout():
    rig, state, _, done = logged_in(keepalive=240, interval=3600)
    rig.status()
    idling(rig, state)
    rig.clock.advance(240)
    assert rig.sent() == [b"DONE"]
    rig.clock.advance(29.9)
    assert not rig.transport.closed
    rig.clock.advance(0.1)
    assert rig.transport.closed
    rig.clock.advance(0)
    failure = _failure(done)
    assert failure.check(CheckTimeout)
    assert str(failure.value) == (
        "timed out after 30 s waiting for the reply to DONE (heartbeat)")
    assert rig.clock.getDelayedCalls() == []


def test_interval_checks_every_mailbox_while_idling_on_the_first():
    rig, state, _, _ = logged_in(mailboxes=("INBOX", "Lists"), interval=60, keepalive=240)
    rig.status("INBOX")
    rig.status("Lists", messages=5, unseen=5)
    idling(rig, state)
    rig.clock.advance(60)
    end_idle(rig)
    rig.status("INBOX")
    rig.status("Lists", messages=6, unseen=6)
    idle_again(rig, state)
    assert state.mailboxes["Lists"].counts.messages == 6


def test_polling_when_the_server_has_no_idle():
    rig, state, _, _ = logged_in(caps_after="IMAP4rev1", interval=300, keepalive=100)
    rig.status()
    assert state.state == "connected"
    rig.clock.advance(100)
    rig.answer(b"NOOP")
    rig.clock.advance(100)
    rig.answer(b"NOOP")
    rig.clock.advance(100)
    rig.status(messages=13, uidnext=14)
    assert state.mailboxes["INBOX"].counts.messages == 13
    assert "EXAMINE" not in rig.client.commands_sent


def test_idle_off_in_the_configuration_polls():
    rig, _, _, _ = logged_in(idle=False, interval=30)
    rig.status()
    rig.clock.advance(30)
    rig.status()
    assert "IDLE" not in rig.client.commands_sent


def test_examine_refused_falls_back_to_polling():
    rig, state, _, _ = logged_in(interval=30)
    rig.status()
    rig.answer(b"EXAMINE", status="NO")
    assert "cannot IDLE on it" in state.mailboxes["INBOX"].error
    rig.clock.advance(30)
    rig.status()
    assert "IDLE" not in rig.client.commands_sent
    assert state.mailboxes["INBOX"].error is None  # the next good check clears it


def test_server_ending_idle_itself_gets_idle_again():
    rig, state, _, _ = logged_in(keepalive=1500, interval=3600)
    rig.status()
    idling(rig, state)
    rig.clock.advance(600)
    with capturedLogs() as events:
        rig.reply(text="IDLE timed out")
        idle_again(rig, state)  # at once: the last IDLE started long ago
    assert rig.clock.seconds() == 600 and not fallbacks(events)


def fallbacks(events):
    return [e for e in events if e.get("event") == "idle_fallback"]


def idle_ended_at_once(rig, continuation):
    """The client starts IDLE; the server ends it at once (with or without ``+`` first)."""
    rig.expect(b"IDLE")
    if continuation:
        rig.server("+ idling")
    rig.reply(text="IDLE over already")


def test_an_idle_answered_by_an_immediate_ok_is_paced_then_given_up_for_polling():
    rig, state, _, done = logged_in(interval=300, keepalive=100)
    rig.status()
    rig.answer(b"EXAMINE", "3 EXISTS", "OK [UIDVALIDITY 1] ok")
    with capturedLogs() as events:
        for n in range(IDLE_SHORT_LIMIT):
            idle_ended_at_once(rig, continuation=False)
            assert rig.sent() == []  # never again at round-trip speed
            assert rig.clock.seconds() == n * IDLE_MIN_SPACING
            rig.clock.advance(IDLE_MIN_SPACING)
        # polling now: a NOOP heartbeat every keepalive, a STATUS every interval, no IDLE
        start = IDLE_MIN_SPACING * (IDLE_SHORT_LIMIT - 1)
        rig.clock.advance(start + 100 - rig.clock.seconds() - 0.001)
        assert rig.sent() == [] and state.state == "connected"
        rig.clock.advance(0.001)
        rig.answer(b"NOOP")
        rig.clock.advance(100)
        rig.answer(b"NOOP")
        rig.clock.advance(300 - rig.clock.seconds())
        rig.answer(b"NOOP")  # INBOX is still selected (EXAMINE): a NOOP brings its news
        rig.status(messages=13, uidnext=14)
        for _ in range(6):  # an hour of polling: still no IDLE, still one log line
            rig.clock.advance(100)
            rig.answer(b"NOOP")
            rig.clock.advance(100)
            rig.answer(b"NOOP")
            rig.clock.advance(100)
            rig.answer(b"NOOP")
            rig.status(messages=13, uidnext=14)
    assert rig.client.commands_sent["IDLE"] == IDLE_SHORT_LIMIT
    (event,) = fallbacks(events)
    assert (event["account"], event["count"], event["interval"]) == ("work", 3, 300)
    assert event["log_level"] == LogLevel.warn
    assert not done.called and state.mailboxes["INBOX"].counts.messages == 13


def test_an_idle_ended_right_after_its_continuation_counts_as_at_once():
    rig, state, _, _ = logged_in(interval=300, keepalive=100)
    rig.status()
    idling(rig, state)
    with capturedLogs() as events:
        rig.reply(text="IDLE over already")
        for _ in range(IDLE_SHORT_LIMIT - 1):
            assert rig.sent() == []
            rig.clock.advance(IDLE_MIN_SPACING)
            idle_ended_at_once(rig, continuation=True)
        rig.clock.advance(99.9)
        assert rig.sent() == []  # polling: no IDLE, a NOOP after keepalive
        rig.clock.advance(0.1)
        rig.answer(b"NOOP")
    assert rig.client.commands_sent["IDLE"] == IDLE_SHORT_LIMIT and len(fallbacks(events)) == 1


def test_a_lasting_idle_between_quick_ends_keeps_idle():
    rig, state, _, _ = logged_in(interval=3600, keepalive=1500)
    rig.status()
    rig.answer(b"EXAMINE")
    for _ in range(3):  # (limit - 1) quick ends, one IDLE that lasts: the count starts over
        for _ in range(IDLE_SHORT_LIMIT - 1):
            idle_ended_at_once(rig, continuation=True)
            rig.clock.advance(IDLE_MIN_SPACING)
        idle_again(rig, state)
        rig.clock.advance(600)
        rig.reply(text="IDLE timed out")
    idle_again(rig, state)
    assert rig.client.commands_sent["IDLE"] == 3 * IDLE_SHORT_LIMIT + 1


def test_stop_while_pacing_logs_out_at_once():
    rig, _, session, done = logged_in()
    rig.status()
    rig.answer(b"EXAMINE")
    idle_ended_at_once(rig, continuation=False)
    session.stop()
    rig.answer(b"LOGOUT", "BYE bye")
    rig.clock.advance(0)
    assert done.called and _failure(done) is None
    assert rig.clock.seconds() == 0 and rig.clock.getDelayedCalls() == []


def test_a_change_reported_in_every_reply_does_not_spin_the_loop():
    rig, state, _, _ = logged_in()
    rig.status()
    idling(rig, state)
    rig.server("* 13 EXISTS")
    end_idle(rig)
    for n in range(5):  # each STATUS reply brings another EXISTS: one STATUS a second
        assert rig.expect(b"STATUS").startswith(b"INBOX ")
        rig.reply("14 EXISTS", "STATUS INBOX (MESSAGES 14 UNSEEN 3 RECENT 0 UIDNEXT 15 "
                               "UIDVALIDITY 1)")
        assert rig.sent() == []
        assert rig.clock.seconds() == n * IDLE_MIN_SPACING
        rig.clock.advance(IDLE_MIN_SPACING)
    rig.status(messages=14, uidnext=15)  # quiet at last
    rig.clock.advance(IDLE_MIN_SPACING)
    idle_again(rig, state)


def test_stop_while_idling_logs_out_and_leaves_no_timer():
    rig, state, session, done = logged_in()
    rig.status()
    idling(rig, state)
    session.stop()
    end_idle(rig)
    rig.answer(b"LOGOUT", "BYE bye")
    rig.clock.advance(0)
    assert done.called and _failure(done) is None
    assert rig.transport.closed and rig.clock.getDelayedCalls() == []


def test_a_mailbox_that_does_not_exist_is_its_own_error():
    rig, state, _, _ = logged_in(mailboxes=("INBOX", "Nope"))
    rig.status("INBOX")
    rig.answer(b"STATUS", status="NO")
    rig.expect(b"EXAMINE")
    assert state.mailboxes["Nope"].error == "STATUS refused: NO done"
    assert state.mailboxes["INBOX"].error is None


def _failure(d):
    results: list[object] = []
    d.addBoth(results.append)
    return results[0]


def _lose_the_connection_while_idling():
    rig, state, _, done = logged_in()
    rig.status()
    idling(rig, state)
    rig.transport.loseConnection()
    rig.clock.advance(0)
    assert _failure(done).check(ConnectionDone)  # run() ends with the loss, for the caller
    assert rig.clock.getDelayedCalls() == []


def test_a_connection_lost_while_idling_leaves_no_unhandled_error():
    with capturedLogs() as events:
        _lose_the_connection_while_idling()
        gc.collect()  # an unhandled failure in a Deferred is logged when it is collected
    assert not [e for e in events if "Unhandled error" in (formatEvent(e) or "")]


def test_idle_refused_with_no_falls_back_to_polling_quietly():
    with capturedLogs() as events:
        rig, state, _, done = logged_in(interval=300, keepalive=100)
        rig.status()
        rig.answer(b"EXAMINE")
        rig.answer(b"IDLE", status="NO")
        rig.clock.advance(100)
        rig.answer(b"NOOP")
        rig.clock.advance(200)
        rig.answer(b"NOOP")  # INBOX is selected: its news first
        rig.status()
        gc.collect()
    assert rig.client.commands_sent["IDLE"] == 1 and not done.called
    assert state.state == "connected" and not fallbacks(events)
    assert not [e for e in events if "Unhandled error" in (formatEvent(e) or "")]


def test_an_unsettled_uidvalidity_is_settled_by_one_read_write_select():
    """Courier (issue 15, 1): a folder nobody opened read-write answers every STATUS with a
    new UIDVALIDITY.  The second check sees it change while the messages do not: one SELECT
    settles it, the IDLE mailbox is EXAMINEd again, and new mail is then reported."""
    rig, state, _, _ = logged_in(mailboxes=("INBOX", "Work"), interval=60, keepalive=240)
    rig.status(messages=12, uidnext=13)
    rig.status("Work", messages=3, uidnext=4, uidvalidity=796660658)
    idling(rig, state)
    rig.clock.advance(60)
    end_idle(rig)
    with capturedLogs() as events:
        rig.status(messages=12, uidnext=13)
        rig.status("Work", messages=3, uidnext=4, uidvalidity=796660719)
        assert rig.answer(b"SELECT", "3 EXISTS", "OK [UIDVALIDITY 796660719] ok") == b"Work"
        assert rig.answer(b"EXAMINE", "12 EXISTS", "OK [UIDVALIDITY 1] ok") == b"INBOX"
        rig.status("Work", messages=3, uidnext=4, uidvalidity=796660719)
        idle_again(rig, state)
        rig.clock.advance(60)
        end_idle(rig)
        rig.status(messages=12, uidnext=13)
        rig.status("Work", messages=4, uidnext=5, uidvalidity=796660719)
        idle_again(rig, state)
        rig.clock.advance(60)
        end_idle(rig)
        rig.status(messages=12, uidnext=13)
        rig.status("Work", messages=4, uidnext=5, uidvalidity=796660719)  # no SELECT again
        idle_again(rig, state)
    names = [e["event"] for e in events if "event" in e and e["event"] != "check"]
    assert names == ["uidvalidity_unsettled", "new_mail"]
    assert state.mailboxes["Work"].new_mail == 1
    assert rig.client.commands_sent["SELECT"] == 1


def test_a_mailbox_is_settled_at_most_once_per_connection():
    """Polled: the settled mailbox is EXAMINEd at once (read-only: later mail keeps its
    \\Recent) and stays selected, so each STATUS of it follows a NOOP (a selected mailbox's
    STATUS shows the session's view: Courier's stayed at the SELECT's)."""
    rig, _, _, _ = logged_in(caps_after="IMAP4rev1", interval=60, keepalive=240)
    rig.status(messages=3, uidnext=4, uidvalidity=10)
    with capturedLogs() as events:
        for value in (11, 13, 14):
            rig.clock.advance(60)
            if value != 11:
                rig.answer(b"NOOP")
            rig.status(messages=3, uidnext=4, uidvalidity=value)
            if value == 11:
                assert rig.answer(b"SELECT", "3 EXISTS", "OK [UIDVALIDITY 12] ok") == b"INBOX"
                assert rig.answer(b"EXAMINE", "3 EXISTS", "OK [UIDVALIDITY 12] ok") == b"INBOX"
                rig.status(messages=3, uidnext=4, uidvalidity=12)
    assert [e["event"] for e in events if e.get("event", "check") != "check"] == [
        "uidvalidity_unsettled"]
    assert rig.client.commands_sent["SELECT"] == 1 and rig.sent() == []
