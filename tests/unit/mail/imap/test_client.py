"""ImapClient against scripted server lines: STATUS, IDLE, limits, timeouts, odd replies."""

from __future__ import annotations

import pytest
from mailrig import Rig
from twisted.internet.defer import ensureDeferred
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from mailsocketd.mail.errors import CheckTimeout, ProtocolViolation, ServerClosed, ServerRefused
from mailsocketd.mail.imap.client import ImapClient, MailboxCounts


def connected(**kw):
    rig = Rig(**kw).connect()
    rig.greet()
    return rig


def result_of(d):
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def failure_of(d, kind):
    result = result_of(d)
    assert not isinstance(result, (dict, list, MailboxCounts)) and result.check(kind), result
    return result.value


def lost(rig):
    rig.clock.advance(0)  # deliver connectionLost
    assert not rig.client.connected_ok


def test_status_is_one_command_and_one_reply():
    rig = connected()
    d = rig.client.status_counts("INBOX")
    rig.status(messages=10000, unseen=7, uidnext=10001, uidvalidity=99)
    assert result_of(d) == MailboxCounts(10000, 7, 0, 10001, 99)
    assert rig.client.commands_sent == {"STATUS": 1}


def test_status_of_a_mailbox_needing_quotes():
    rig = connected()
    d = rig.client.status_counts("Sent Items")
    assert rig.expect(b"STATUS").startswith(b'"Sent Items" (MESSAGES')
    rig.reply('STATUS "Sent Items" (MESSAGES 1 UNSEEN 0 RECENT 0 UIDNEXT 2 UIDVALIDITY 5)')
    assert result_of(d).messages == 1


def test_status_refused_is_a_server_refusal_not_a_disconnect():
    rig = connected()
    d = rig.client.status_counts("Nope")
    rig.expect(b"STATUS")
    rig.reply(status="NO", text="[NONEXISTENT] Mailbox doesn't exist: Nope")
    error = failure_of(d, ServerRefused)
    assert str(error) == "STATUS refused: NO [NONEXISTENT] Mailbox doesn't exist: Nope"
    assert not rig.transport.closed


def test_incomplete_status_drops_the_connection():
    rig = connected()
    d = rig.client.status_counts("INBOX")
    rig.expect(b"STATUS")
    rig.reply("STATUS INBOX (MESSAGES 1)")
    failure_of(d, ProtocolViolation)
    assert rig.transport.closed


def test_tagged_reply_without_text_is_fine():
    rig = connected()
    d = rig.client.noop_check()
    rig.expect(b"NOOP")
    rig.server(rig.last_tag + b" OK")
    assert result_of(d) is not None and not rig.transport.closed


def test_idle_started_changes_and_done():
    rig = connected()
    changes: list[str] = []
    rig.client.on_change = changes.append
    started, finished = rig.client.idle()
    rig.expect(b"IDLE")
    assert not started.called and rig.client.idling
    rig.server("+ idling")
    assert started.called
    rig.server("* OK Still here", "* 13 EXISTS", "* 1 RECENT", "* 4 FETCH (FLAGS (\\Seen))",
               "* 2 EXPUNGE")
    assert changes == ["exists", "recent", "flags", "expunge"]
    assert rig.client._idle_command.lines == []  # nothing piles up while idling
    rig.client.done()
    rig.client.done()  # only once
    assert rig.sent() == [b"DONE"]
    rig.reply(text="IDLE terminated")
    assert result_of(finished) is not None and not rig.client.idling


def test_idle_refused():
    rig = connected()
    started, finished = rig.client.idle()
    rig.expect(b"IDLE")
    rig.reply(status="BAD", text="Unknown command")
    failure_of(started, ServerRefused)
    failure_of(finished, ServerRefused)


def test_a_long_line_drops_the_connection_with_a_logged_error():
    rig = connected()
    d = rig.client.noop_check()
    with capturedLogs() as events:
        rig.client.dataReceived(b"* " + b"x" * (ImapClient.MAX_LENGTH + 10))
    lost(rig)
    assert "longer than 65536 bytes" in str(failure_of(d, ProtocolViolation))
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert errors and errors[0]["event"] == "protocol_error"


def test_a_huge_literal_is_refused_before_it_is_read():
    rig = connected()
    d = rig.client.status_counts("INBOX")
    rig.expect(b"STATUS")
    rig.server("* STATUS {2000000000}")
    lost(rig)
    assert "2000000000-byte literal" in str(failure_of(d, ProtocolViolation))


def test_a_small_literal_is_fine():
    rig = connected()
    d = rig.client.status_counts("INBOX")
    rig.expect(b"STATUS")
    rig.client.dataReceived(b"* STATUS {5}\r\nINBOX (MESSAGES 2 UNSEEN 1 RECENT 0 UIDNEXT 3 "
                            b"UIDVALIDITY 7)\r\n" + rig.last_tag + b" OK done\r\n")
    assert result_of(d) == MailboxCounts(2, 1, 0, 3, 7)


def test_endless_untagged_lines_are_cut_off():
    rig = connected()
    d = rig.client.noop_check()
    rig.expect(b"NOOP")
    rig.server(*[f"* FLAGS (x{i})" for i in range(ImapClient.MAX_UNTAGGED + 1)])
    lost(rig)
    assert "more than 1000 untagged responses" in str(failure_of(d, ProtocolViolation))


def test_garbage_and_unknown_tags_drop_the_connection():
    rig = connected()
    d = rig.client.noop_check()
    rig.server("A999 OK who?")
    lost(rig)
    assert "unknown tag" in str(failure_of(d, ProtocolViolation))
    rig = connected()
    d = rig.client.noop_check()
    rig.server("+ nobody asked")
    rig.expect(b"NOOP")
    lost(rig)
    assert "malformed response" in str(failure_of(d, ProtocolViolation))


def test_greeting_bye_is_a_refusal():
    rig = Rig().connect()
    d = rig.client.wait_for_greeting()
    rig.server("* BYE Too many connections")
    lost(rig)
    assert str(failure_of(d, ServerRefused)) == "connection refused: BYE Too many connections"


def test_every_step_has_a_deadline():
    rig = Rig(timeout=5).connect()
    d = rig.client.wait_for_greeting()
    rig.clock.advance(4.9)
    assert not d.called
    rig.clock.advance(0.1)
    lost(rig)
    assert str(failure_of(d, CheckTimeout)) == (
        "timed out after 5 s waiting for the server greeting")
    assert rig.clock.getDelayedCalls() == []


def test_overall_deadline_caps_each_step():
    rig = Rig(timeout=10).connect()
    rig.client.deadline = 3.0
    d = rig.client.wait_for_greeting()
    rig.clock.advance(3)
    lost(rig)
    assert str(failure_of(d, CheckTimeout)) == (
        "timed out after 10 s waiting for the server greeting")


def test_connection_lost_fails_everything_pending():
    rig = connected()
    seen: list[Failure] = []
    rig.client.lost_callbacks.append(seen.append)
    d = ensureDeferred(_two_commands(rig.client))
    rig.transport.loseConnection()
    lost(rig)
    assert result_of(d).check(Exception) and len(seen) == 1


async def _two_commands(client):
    await client.noop_check()
    await client.noop_check()


@pytest.mark.parametrize("line", ["* 3 EXISTS", "* OK [ALERT] hi"])
def test_unsolicited_lines_without_a_command(line):
    rig = connected()
    changes: list[str] = []
    rig.client.on_change = changes.append
    rig.server(line)
    assert not rig.transport.closed
    assert changes == (["exists"] if "EXISTS" in line else [])


def test_bye_then_close_says_what_the_server_said():
    rig = connected()
    _, finished = rig.client.idle()
    rig.expect(b"IDLE")
    rig.server("+ idling", "* BYE Server shutting down.")
    rig.transport.loseConnection()
    lost(rig)
    error = failure_of(finished, ServerClosed)
    assert str(error) == "the server closed the connection: Server shutting down."


def test_many_lines_within_one_reply_are_bounded_as_one_response():
    rig = connected()
    d = rig.client.noop_check()
    rig.expect(b"NOOP")
    line = "* FLAGS (" + "x" * 60000 + ")"  # each line is fine; together far too much
    rig.server(*[line] * 6)
    lost(rig)
    assert "response larger than" in str(failure_of(d, ProtocolViolation))


def test_lines_smuggled_in_with_the_starttls_reply_are_refused():
    from mailrig import StartTLSTransport

    rig = Rig(transport=StartTLSTransport).connect()
    rig.greet("IMAP4rev1 STARTTLS")
    d = rig.client.start_tls(object())
    rig.expect(b"STARTTLS")
    tag = rig.last_tag.decode()
    # The attacker appends a fake capability list to the server's OK, in clear.
    rig.server(f"{tag} OK begin TLS", "* CAPABILITY IMAP4rev1 AUTH=LOGIN")
    lost(rig)
    assert "after its STARTTLS reply" in str(failure_of(d, ProtocolViolation))
    assert rig.transport.tls_started_with is None  # no handshake on tainted input
