"""What ``list`` shows of a message: the summary (local date, sender, subject, seen) and its line,
and the fast paths for the usual Date and From, checked against the general parsers."""


from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailcorpus import CET, CORPUS_FILES, SUMMARIES, corpus, imap_header

from mailsocketd.mail.text import summary
from mailsocketd.mail.text.headers import display_width
from mailsocketd.mail.text.summary import (
    Summary,
    any_date,
    any_fields,
    header_fields,
    local_date,
    plain_sender,
    rfc5322_date,
    summarize,
    summary_line,
)


def test_every_corpus_file_has_an_expected_summary():
    assert set(SUMMARIES) | {"long-subject.eml"} == set(CORPUS_FILES)


@pytest.mark.parametrize("name", sorted(SUMMARIES))
def test_summary_of_each_corpus_message(name, local_zone):
    local_zone(CET)
    raw = corpus(name)
    summary = summarize(4821, imap_header(raw), ["\\Seen"], len(raw))
    sender, subject = SUMMARIES[name]
    assert (summary.sender, summary.subject) == (sender, subject)
    expected_date = "" if name in ("missing-headers.eml", "bad-date.eml") else "2026-11-25 14:03"
    assert summary == Summary(4821, expected_date, sender, subject, unseen=False, size=len(raw))
    # the whole header block (not only the three fields) gives the same summary
    assert summarize(4821, raw.split(b"\n\n")[0].split(b"\r\n\r\n")[0], ["\\Seen"],
                     len(raw)) == summary


def test_long_subject_is_whole_in_the_summary_and_cut_in_the_line():
    raw = corpus("long-subject.eml")
    summary = summarize(1, imap_header(raw), [], len(raw))
    assert summary.subject.startswith("This is a very long subject line that goes on")
    assert len(summary.subject) > 400
    line = summary_line(summary)
    assert display_width(line) == 80 and line.endswith("…")


@pytest.mark.parametrize(("zone", "date", "shown"), [
    (CET, "Tue, 25 Nov 2026 14:03:07 +0100", "2026-11-25 14:03"),
    ("UTC0", "Tue, 25 Nov 2026 14:03:07 +0100", "2026-11-25 13:03"),
    ("UTC0", "25 Nov 2026 23:59:59 -0500 (EST)", "2026-11-26 04:59"),
    (CET, "Sun, 1 Jul 2029 10:00:00 -0000", "2029-07-01 12:00"),  # -0000: UTC, CEST here
    ("UTC0", "Tue, 25 Nov 26 14:03 +0000", "2026-11-25 14:03"),  # two-digit year
    ("UTC0", "2026-11-25T14:03:07+00:00", "2026-11-25 14:03"),  # ISO, seen from scripts
    ("UTC0", "Tomorrow at noon-ish", ""),
    ("UTC0", "Tue, 99 Nov 2026 14:03:07 +0100", ""),
    ("UTC0", "", ""),
])
def test_dates_are_shown_in_local_time(local_zone, zone, date, shown):
    local_zone(zone)
    header = f"Date: {date}\r\nSubject: x\r\n\r\n".encode()
    assert summarize(1, header, [], 0).date == shown


@pytest.mark.parametrize(("flags", "unseen"), [
    ([], True), (["\\Seen"], False), (["\\seen"], False), (["\\Flagged", "\\Answered"], True),
    (("\\Recent", "\\SEEN"), False),
])
def test_unseen_is_the_absence_of_seen(flags, unseen):
    assert summarize(1, b"Subject: x\r\n\r\n", flags, 10).unseen is unseen


def test_sender_is_the_display_name_else_the_address():
    def sender(value: bytes) -> str:
        return summarize(1, b"From: " + value + b"\r\n\r\n", [], 0).sender
    assert sender(b"Alice Example <alice@example.test>") == "Alice Example"
    assert sender(b"alice@example.test") == "alice@example.test"
    assert sender(b"<alice@example.test>") == "alice@example.test"
    assert sender(b'"Doe, John" <j@example.test>, bob@example.test') == "Doe, John"
    assert sender(b"=?utf-8?B?RG9lLCBKb2hu?= <j@example.test>") == "Doe, John"
    assert sender(b'"=?utf-8?Q?Zo=C3=AB?=" <z@example.test>') == "Zoë"
    assert sender(b"undisclosed-recipients:;") == "undisclosed-recipients:;"


def test_summary_line_format():
    s = Summary(4821, "2026-11-25 14:03", "Alice Example", "Lunch on Friday?", True, 1234)
    assert summary_line(s) == \
        "4821 N 2026-11-25 14:03  Alice Example         Lunch on Friday?"
    seen = Summary(7, "", "", "", False, 0)
    assert summary_line(seen) == "7 - (no date)         (no sender)           (no subject)"


def test_summary_line_cuts_by_columns_and_keeps_wide_sender_aligned():
    s = Summary(12, "2026-11-25 14:03", "김철수 박지성 이영희 홍길동", "회의 일정 " * 20, True, 1)
    line = summary_line(s, width=60)
    assert line.startswith("12 N 2026-11-25 14:03  김철수 박지성 이영…   회의 일정")
    assert display_width(line) <= 60 and line.endswith("…")
    prefix = "12 N 2026-11-25 14:03  "
    assert display_width(line[len(prefix):line.index("  회의")]) == 20


def test_summary_line_never_cuts_the_uid_and_mark():
    s = Summary(123456, "2026-11-25 14:03", "A", "B", True, 1)
    assert summary_line(s, width=3) == "123456 N"
    assert summary_line(s, width=10) == "123456 N …"
    assert summary_line(s, width=9) == "123456 N"


def test_summary_line_cleans_text_it_is_given():
    s = Summary(1, "2026-11-25 14:03", "Eve\r\nX", "hi\x1b[2J\u202e", True, 1)
    line = summary_line(s)
    assert "\r" not in line and "\n" not in line and "\x1b" not in line and "\u202e" not in line



def test_list_reads_a_raw_8bit_subject_in_the_charset_content_type_names():
    raw = ("Subject: Привет мир\r\nFrom: a@example.test\r\n"
           "Content-Type: text/plain; charset=koi8-r\r\n\r\nbody\r\n").encode("koi8-r")
    assert summarize(7, imap_header(raw), [], len(raw)).subject == "Привет мир"


# -- the fast paths agree with the general parsers -------------------------------------------

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def as_aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@st.composite
def rfc5322_dates(draw: st.DrawFn) -> str:
    """Dates of the fast path's shape, valid or not (day 31 of February, hour 24, zone +9999)."""
    day = draw(st.sampled_from(["", *(d + ", " for d in _DAYS)]))
    date = (f"{draw(st.integers(0, 39))} {draw(st.sampled_from(_MONTHS))} "
            f"{draw(st.integers(1000, 9999))}")
    clock = f"{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 61)):02d}"
    seconds = draw(st.sampled_from(["", f":{draw(st.integers(0, 61)):02d}"]))
    zone = f"{draw(st.sampled_from('+-'))}{draw(st.integers(0, 9999)):04d}"
    comment = draw(st.sampled_from(["", " (UTC)", " (CET)", " (Pacific Standard Time)"]))
    return f"{day}{date} {clock}{seconds} {zone}{comment}"


@settings(max_examples=500, deadline=None)
@given(rfc5322_dates())
def test_the_fast_date_path_agrees_with_the_email_package(text):
    fast, general = rfc5322_date(text), any_date(text)
    assert (fast is None) == (general is None), (fast, general)
    if fast is not None and general is not None:
        assert fast == as_aware(general)
        assert fast.utcoffset() == as_aware(general).utcoffset()


@pytest.mark.parametrize(("text", "fast"), [
    ("Tue, 25 Nov 2026 14:03:07 +0100", True),
    ("25 Nov 2026 23:59:59 -0500 (EST)", True),
    ("Sun, 1 Jul 2029 10:00 -0000", True),
    ("Tue, 25 Nov 26 14:03 +0000", False),  # two-digit year: the general parser's
    ("tue, 25 nov 2026 14:03:07 +0100", False),
    ("Tue, 25 Nov 2026 14:03:07 EST", False),
    ("Tue,  25 Nov 2026 14:03:07 +0100", False),
    ("Tue, ٢٥ Nov 2026 14:03:07 +0100", False),  # Arabic-Indic digits
])
def test_which_dates_take_the_fast_path(text, fast):
    assert (rfc5322_date(text) is not None) is fast
    assert local_date(text) != ""


_FROM_PIECES = ["Ann", "B.", "O'Neil", "=?utf-8?q?Zo=C3=AB?=", "é", "x", " ", "  ", "\t", "\u00a0",
                '"', "<", ">", "@", ".", ",", ";", ":", "(", ")", "[", "]", "\\", "a@b.example",
                "<c@d.example>", "ann.lee@example.org", "\r"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_FROM_PIECES), max_size=8).map("".join))
def test_the_fast_from_path_agrees_with_the_email_package(text):
    plain = plain_sender(text)
    if plain is not None:
        assert email.utils.getaddresses([text]) == [plain]


@pytest.mark.parametrize(("text", "plain"), [
    ("Sender 5 <sender5@example.org>", ("Sender 5", "sender5@example.org")),
    ("J. Doe <j@example.test>", ("J. Doe", "j@example.test")),
    ('"Doe, John" <j@example.test>', ("Doe, John", "j@example.test")),
    ('"" <j@example.test>', ("", "j@example.test")),
    ("<j@example.test>", ("", "j@example.test")),
    ("  ann.lee@example.org ", ("", "ann.lee@example.org")),
    ("=?utf-8?B?RG9lLCBKb2hu?= <j@example.test>", ("=?utf-8?B?RG9lLCBKb2hu?=", "j@example.test")),
    ("Ann <a@example.test>, Bob <b@example.test>", None),  # two: the general parser's
    ("Ann (the boss) <a@example.test>", None),
    ('"Ann \\"A\\" Lee" <a@example.test>', None),
    ("undisclosed-recipients:;", None),
])
def test_which_senders_take_the_fast_path(text, plain):
    assert plain_sender(text) == plain
    if plain is not None:
        assert email.utils.getaddresses([text]) == [plain]


_BLOCK_PIECES = [b"Subject", b"From", b"date", b"X-Y", b":", b" ", b"\t", b"\r\n", b"\n", b"\r",
                 b"value", b"\xe9", b"=?utf-8?q?x?=", b" folded", b"\x0b", b""]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_BLOCK_PIECES), max_size=14).map(b"".join))
def test_the_fast_header_block_path_agrees_with_the_general_one(block):
    assert header_fields(block) == any_fields(block)


def test_a_usual_block_takes_the_fast_path_and_an_unusual_one_does_not(monkeypatch):
    usual = b"Date: Tue, 25 Nov 2026 14:03:07 +0100\r\nFrom: a@b\r\nSubject: x\r\n\r\n"
    folded = b"Subject: a\r\n b\r\nFrom: a@b\r\n\r\n"
    expected = {"date": b" Tue, 25 Nov 2026 14:03:07 +0100", "from": b" a@b", "subject": b" x"}
    assert header_fields(usual) == expected
    assert header_fields(folded) == {"subject": b" a\r\n b", "from": b" a@b"}
    monkeypatch.setattr(summary, "any_fields", lambda block: {"general": b""})
    assert header_fields(usual) == expected
    assert header_fields(folded) == {"general": b""}


@pytest.mark.parametrize(("header", "arrived", "shown"), [
    (b"Subject: x\r\n\r\n", "25-Nov-2026 14:03:07 +0100", "2026-11-25 13:03"),  # no Date
    (b"Subject: x\r\n\r\n", " 5-Nov-2026 09:07:00 -0000", "2026-11-05 09:07"),  # day padded
    (b"Date: Tomorrow\r\n\r\n", "25-Nov-2026 14:03:07 +0100", "2026-11-25 13:03"),  # unreadable
    (b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n", "25-Nov-2026 14:03:07 +0100",
     "2026-11-24 10:00"),  # a readable Date wins
    (b"Subject: x\r\n\r\n", "", ""),  # nothing known
    (b"Subject: x\r\n\r\n", "31-Feb-2026 14:03:07 +0100", ""),  # not a moment
    (b"Subject: x\r\n\r\n", "25-Nov-2026 14:03:07 +2400", ""),  # a zone of a whole day
    (b"Subject: x\r\n\r\n", "25-Nov-2026 14:03 +0100", ""),  # not INTERNALDATE's form
])
def test_the_arrival_date_stands_in_for_a_missing_or_unreadable_date(
        local_zone, header, arrived, shown):
    local_zone("UTC0")
    summary = summarize(1, header, [], 0, arrived)
    assert summary.date == shown
    assert ("(no date)" in summary_line(summary)) is (shown == "")


def test_a_message_marked_deleted_is_shown_with_d():
    """Issue 15, 4: after ``delete`` without UIDPLUS or Trash the message stays, marked
    \\Deleted; ``list`` showed it as if nothing had happened."""
    header = b"Subject: old news\r\n\r\n"
    deleted = summarize(7, header, ["\\Deleted", "\\Seen"], 10)
    assert deleted.deleted and summary_line(deleted).startswith("7 D ")
    assert summary_line(summarize(7, header, ["\\Deleted"], 10)).startswith("7 D ")
    assert summary_line(summarize(7, header, ["\\Seen"], 10)).startswith("7 - ")
