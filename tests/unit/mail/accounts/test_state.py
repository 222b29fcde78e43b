"""Account state: structured check and new-mail events, UIDVALIDITY, errors, status lines."""

from __future__ import annotations

from mailrig import account
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from mailsocketd.mail.accounts.state import AccountState
from mailsocketd.mail.imap.client import MailboxCounts


def counts(messages=12, unseen=3, uidnext=13, uidvalidity=1):
    return MailboxCounts(messages, unseen, 0, uidnext, uidvalidity)


def state():
    news = []
    s = AccountState(account(mailboxes=("INBOX", "Lists")), Clock(),
                     on_new_mail=lambda *args: news.append(args))
    return s, news


def events(captured, kind):
    return [e for e in captured if e.get("event") == kind]


def test_every_check_is_a_structured_event():
    s, _ = state()
    with capturedLogs() as captured:
        s.record_check("INBOX", counts(), 0.0042)
    (event,) = events(captured, "check")
    assert {k: event[k] for k in ("account", "mailbox", "messages", "unseen", "recent",
                                  "uidnext", "uidvalidity", "latency")} == {
        "account": "work", "mailbox": "INBOX", "messages": 12, "unseen": 3, "recent": 0,
        "uidnext": 13, "uidvalidity": 1, "latency": 0.0042}
    assert event["log_level"] == LogLevel.info


def test_first_check_is_the_baseline_then_uidnext_growth_is_new_mail():
    s, news = state()
    with capturedLogs() as captured:
        s.record_check("INBOX", counts(uidnext=13), 0.001)
        s.record_check("INBOX", counts(uidnext=13), 0.001)
        s.record_check("INBOX", counts(messages=15, uidnext=16), 0.001)
    (event,) = events(captured, "new_mail")
    assert (event["mailbox"], event["new"]) == ("INBOX", 3)
    assert news == [("INBOX", counts(messages=15, uidnext=16), 3)]


def test_expunge_is_not_new_mail_and_uidvalidity_change_starts_afresh():
    s, news = state()
    with capturedLogs() as captured:
        s.record_check("INBOX", counts(messages=12, uidnext=13), 0.001)
        s.record_check("INBOX", counts(messages=2, uidnext=13), 0.001)
        s.record_check("INBOX", counts(messages=1, uidnext=2, uidvalidity=9), 0.001)
    assert news == [] and len(events(captured, "uidvalidity_changed")) == 1


def test_errors_are_shown_until_a_good_check():
    s, _ = state()
    s.connection_failed("connection refused", "backing-off", 4.0)
    assert s.status_lines()[0].endswith("state=backing-off messages=- unseen=- "
                                        "last_check=- latency=- error=connection refused")
    s.logged_in(True)
    s.record_check_error("Lists", "STATUS refused: NO\r\nno such\x00 mailbox")
    assert s.status_lines()[1].endswith("error=STATUS refused: NO  no such  mailbox")
    s.record_check("INBOX", counts(), 0.001)
    assert s.status_lines()[0].endswith("error=-")
    assert s.status_lines()[1].endswith("error=STATUS refused: NO  no such  mailbox")


def error_of(line):
    return line.split(" error=", 1)[1]


def test_a_failed_connection_replaces_the_mailboxes_stale_errors():
    s, _ = state()
    s.logged_in(True)
    s.record_check("INBOX", counts(), 0.001)
    s.record_check_error("INBOX", "cannot IDLE on it: EXAMINE refused: NO [SERVERBUG] x")
    s.record_check_error("Lists", "STATUS refused: NO Mailbox doesn't exist: Lists")
    s.connection_failed("login refused for user alice: NO [AUTHENTICATIONFAILED] Authentication "
                        "failed.", "auth-failed", 300.0)
    for line in s.status_lines():
        assert " state=auth-failed " in line
        assert error_of(line) == ("login refused for user alice: NO [AUTHENTICATIONFAILED] "
                                  "Authentication failed.")
    assert [r.error for r in s.mailboxes.values()] == [None, None]
    assert " messages=12 unseen=3 " in s.status_lines()[0]  # the last good check stays


def test_logging_in_again_clears_the_connection_error():
    s, _ = state()
    s.connection_failed("connection refused", "backing-off", 4.0)
    s.set_state("logging-in")
    assert error_of(s.status_lines()[0]) == "connection refused"  # why the last attempt failed
    s.logged_in(True)
    s.set_state("checking")
    assert [error_of(line) for line in s.status_lines()] == ["-", "-"]
    s.record_check_error("INBOX", "STATUS refused: NO Mailbox doesn't exist: INBOX")
    s.record_check_error("Lists", "STATUS refused: NO Mailbox doesn't exist: Lists")
    assert [error_of(line) for line in s.status_lines()] == [
        "STATUS refused: NO Mailbox doesn't exist: INBOX",
        "STATUS refused: NO Mailbox doesn't exist: Lists"]
    s.connection_failed("connection closed by the server", "backing-off", 2.0)
    assert [error_of(line) for line in s.status_lines()] == [
        "connection closed by the server", "connection closed by the server"]


def test_a_uidvalidity_that_changes_while_the_messages_do_not_is_not_a_new_mailbox():
    """Courier derives an unopened folder's UIDVALIDITY from the clock (issue 15, 1): every
    check gave ``UIDVALIDITY changed; counting afresh`` and new mail was never reported."""
    s, news = state()
    with capturedLogs() as captured:
        s.record_check("INBOX", counts(messages=3, uidnext=4, uidvalidity=796660658), 0.001)
        s.record_check("INBOX", counts(messages=3, uidnext=4, uidvalidity=796660659), 0.001)
        s.record_check("INBOX", counts(messages=5, uidnext=6, uidvalidity=796660662), 0.001)
    assert not events(captured, "uidvalidity_changed")
    (event,) = events(captured, "new_mail")
    assert event["new"] == 2
    assert news == [("INBOX", counts(messages=5, uidnext=6, uidvalidity=796660662), 2)]
    assert s.mailboxes["INBOX"].new_mail == 2


def test_a_new_uidvalidity_with_other_messages_still_counts_afresh():
    s, news = state()
    with capturedLogs() as captured:
        s.record_check("INBOX", counts(messages=12, uidnext=13), 0.001)
        s.record_check("INBOX", counts(messages=14, uidnext=14, uidvalidity=2), 0.001)
    assert news == [] and len(events(captured, "uidvalidity_changed")) == 1
