"""Account state: structured check and new-mail events, UIDVALIDITY, errors, status lines."""

from __future__ import annotations

from mailrig import account
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from mailsocketd.mail.imap import MailboxCounts
from mailsocketd.mail.state import AccountState


def counts(messages=12, unseen=3, uidnext=13, uidvalidity=1):
    return MailboxCounts(messages, unseen, 0, uidnext, uidvalidity)


def state():
    news = []
    s = AccountState(account(mailboxes=("INBOX", "Lists")), Clock(),
                     on_new_mail=lambda *args: news.append(args))
    return s, news


def events(captured, kind):
    return [e for e in captured if e.get("mail_event") == kind]


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
    s.record_check_error("Lists", "STATUS refused: NO\r\nno such\x00 mailbox")
    assert s.status_lines()[1].endswith("error=STATUS refused: NO  no such  mailbox")
    s.record_check("INBOX", counts(), 0.001)
    assert s.status_lines()[0].endswith("error=-")
    assert s.status_lines()[1].endswith("error=STATUS refused: NO  no such  mailbox")
