"""Composing: recipient lists, the typed header block, and the message on the wire."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import datetime
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsocketd.mail.text.compose import (
    MAX_RECIPIENTS,
    Draft,
    DraftError,
    build_message,
    encode_body,
    parse_recipients,
    parse_typed,
    sender_address,
)

NOW = 1_700_000_000.0
TO = ("bob@example.test",)


def draft(body="hello", subject="hi", to=TO, cc=(), bcc=()):
    return Draft(to=tuple(to), cc=tuple(cc), bcc=tuple(bcc), subject=subject, body=body)


def built(d, sender="alice@example.test"):
    message_id, data = build_message(d, sender=sender, now=NOW, domain="example.test")
    return message_id, data, email.message_from_bytes(data, policy=email.policy.default)


def decoded_body(msg):
    return msg.get_content().replace("\r\n", "\n")


def wire_lines(data):
    assert b"\r\n" in data
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None, "bare CR or LF on the wire"
    return data.split(b"\r\n")


# -- recipients ---------------------------------------------------------------------------------

def test_a_comma_separated_list_is_split_in_order():
    assert parse_recipients("a@x.org,b.c+tag@y.example,d@z") == (
        "a@x.org", "b.c+tag@y.example", "d@z")


@pytest.mark.parametrize("text", ["a@x.org b@y.org", "a@x.org, b@y.org", "a@x.org ,b@y.org",
                                  " a@x.org\tb@y.org ", "a@x.org , \t b@y.org"])
def test_recipients_are_separated_by_commas_spaces_and_tabs(text):
    """Issue 11, item 5: words were joined with no separator ('a@xb@y')."""
    assert parse_recipients(text) == ("a@x.org", "b@y.org")


@pytest.mark.parametrize(("text", "message"), [
    ("", "no recipient given"),
    ("a@x.org,,b@y.org", "empty address in the recipient list 'a@x.org,,b@y.org'"),
    ("a@x.org,", "empty address in the recipient list 'a@x.org,'"),
    ("a b@x.org", "bad recipient 'a': missing @domain"),
    ("bob @example.test", "bad recipient 'bob': missing @domain"),
    ("bob@ example.test", "bad recipient 'bob@': missing @domain"),
    (" , ", "empty address in the recipient list ' , '"),
    ("a@x.org\u00a0b@y.org", "bad recipient 'a@x.org\u00a0b@y.org': space in address"),  # one
    ("a@x.org\r\nRCPT TO:<e@vil>", "bad recipient 'a@x.org\\r\\nRCPT': line break"),
    ("bob", "bad recipient 'bob': missing @domain"),
    ("bob@", "bad recipient 'bob@': missing @domain"),
    ("@x.org", "bad recipient '@x.org': missing the part before @"),
    ("<bob@x.org>", "bad recipient '<bob@x.org>': angle brackets"),
    ("b\x1b[31mob@x.org", "bad recipient 'b\\x1b[31mob@x.org': only plain ASCII"),
    ("b\u202eob@x.org", "bad recipient 'b\\u202eob@x.org': only plain ASCII"),
    ("jürgen@x.org", "bad recipient 'jürgen@x.org': only plain ASCII"),
    ('"a,b"@x.org', "bad recipient '\"a': missing @domain"),
    ("a@x_y.org", "bad recipient 'a@x_y.org': not a plain local@domain address"),
])
def test_bad_recipients_are_named_printably(text, message):
    with pytest.raises(DraftError) as e:
        parse_recipients(text)
    assert str(e.value).startswith(message)
    assert "\r" not in str(e.value) and "\x1b" not in str(e.value)


def test_limits_on_count_and_length():
    assert len(parse_recipients(",".join(f"u{i}@x.org" for i in range(MAX_RECIPIENTS)))) == 100
    with pytest.raises(DraftError, match=r"too many recipients: 101 \(at most 100\)"):
        parse_recipients(",".join(f"u{i}@x.org" for i in range(MAX_RECIPIENTS + 1)))
    longest = "a" * 64 + "@" + "b" * 189  # 254 characters
    assert parse_recipients(longest) == (longest,)
    with pytest.raises(DraftError, match="longer than 254 characters") as e:
        parse_recipients(longest + "c")
    assert len(str(e.value)) < 160  # the address is shortened in the message


def test_recipients_are_deduplicated_in_order_across_to_cc_and_bcc():
    d = draft(to=("b@x.org", "a@x.org"), cc=("a@X.ORG", "c@x.org"), bcc=("b@x.org", "d@x.org"))
    assert d.recipients == ("b@x.org", "a@x.org", "c@x.org", "d@x.org")
    # local parts are case-sensitive (RFC 5321): both stay
    assert draft(to=("Bob@x.org", "bob@x.org")).recipients == ("Bob@x.org", "bob@x.org")


def test_a_draft_checks_its_addresses_itself():
    with pytest.raises(DraftError, match="bad recipient 'x@y\\\\nBcc: z@w'"):
        draft(cc=("x@y\nBcc: z@w",))
    with pytest.raises(DraftError, match="no recipient given"):
        draft(to=())
    with pytest.raises(DraftError, match="too many recipients: 101"):
        draft(to=[f"t{i}@x.org" for i in range(60)], bcc=[f"b{i}@x.org" for i in range(41)])


# -- the typed lines ----------------------------------------------------------------------------

def test_headers_then_blank_line_then_body():
    d = parse_typed(TO, ["subject: Lunch?", "CC: carol@x.org, dave@y.org", "Bcc:eve@z.org", "",
                         "Noon?", "", "-- a"])
    assert d == Draft(to=TO, cc=("carol@x.org", "dave@y.org"), bcc=("eve@z.org",),
                      subject="Lunch?", body="Noon?\n\n-- a")


def test_a_continuation_line_folds_into_the_previous_header():
    d = parse_typed(TO, ["Subject: a long", "  subject line", "Cc: c@x.org,", "\td@x.org", "",
                         "body"])
    assert d.subject == "a long subject line"
    assert d.cc == ("c@x.org", "d@x.org")


@pytest.mark.parametrize("lines", [
    ["Dear Bob,", "Subject: not a header here", "", "more"],
    ["  indented first line", "", "more"],
    ["Subject x", "", "more"],
    ["Note: this is text", "Subject: and so is this", "", "more"],
])
def test_a_message_not_starting_with_a_header_line_is_all_body(lines):
    d = parse_typed(TO, lines)
    assert d.subject == "" and d.cc == () and d.bcc == ()
    assert d.body == "\n".join(lines)


@pytest.mark.parametrize(("lines", "subject", "cc", "body"), [
    # issue 11 item 20: no blank line after the headers; the Cc must not be dropped
    (["Subject: Lunch", "Cc: carol@x.org", "Noon at the usual place?"], "Lunch",
     ("carol@x.org",), "Noon at the usual place?"),
    (["Subject: x", "Note: this is text", "", "more"], "x", (), "Note: this is text\n\nmore"),
    (["Cc: carol@x.org", "", "", "two blank lines: one is the body's"], "", ("carol@x.org",),
     "\ntwo blank lines: one is the body's"),
    (["Subject: x", "body", "Cc: carol@x.org"], "x", (), "body\nCc: carol@x.org"),
])
def test_headers_run_up_to_the_first_line_that_is_not_one(lines, subject, cc, body):
    d = parse_typed(TO, lines)
    assert (d.subject, d.cc, d.body) == (subject, cc, body)


def test_a_to_line_adds_recipients():
    d = parse_typed(TO, ["To: carol@x.org, bob@example.test", "Hi all"])
    assert d.to == (*TO, "carol@x.org", "bob@example.test")
    assert d.recipients == (*TO, "carol@x.org")
    assert d.body == "Hi all"


@pytest.mark.parametrize("line", ["From: boss@example.test", "Reply-To: x@y.org",
                                  "return-path: <a@b.c>", "Content-Type: text/html",
                                  "Date: yesterday"])
def test_a_header_that_cannot_be_typed_is_refused_not_sent_as_text(line):
    with pytest.raises(DraftError, match=r"line cannot be typed \(only Subject, To, Cc and Bcc\)"
                                         r"; to send it as text, start with a blank line"):
        parse_typed(TO, ["Subject: x", line, "", "body"])
    assert parse_typed(TO, ["", line, "body"]).body == f"{line}\nbody"  # the way round it


def test_no_headers_a_leading_blank_line_and_no_blank_line_at_all():
    assert parse_typed(TO, ["", "Subject: this is body"]).body == "Subject: this is body"
    only_headers = parse_typed(TO, ["Subject: just this"])
    assert (only_headers.subject, only_headers.body) == ("just this", "")
    assert parse_typed(TO, []).body == ""


def test_an_empty_cc_is_no_cc_and_a_bad_one_is_refused():
    assert parse_typed(TO, ["Cc:", "", "x"]).cc == ()
    with pytest.raises(DraftError, match="^Cc: bad recipient 'carol': missing @domain"):
        parse_typed(TO, ["Cc: carol", "", "x"])
    with pytest.raises(DraftError, match="^Bcc: bad recipient"):
        parse_typed(TO, ["Bcc: a@x.org, <b@x.org>", "", "x"])


def test_sender_address_is_the_local_part_at_from_domain():
    assert sender_address("alice", "example.test") == "alice@example.test"
    # issue 11 item 2: a domain typed at login is not one the operator vouches for
    assert sender_address("alice@evil.example", "example.test") == "alice@example.test"
    assert sender_address("a@b@evil.example", "example.test") == "a@b@example.test"


def test_an_explicit_sender_mapping_wins_for_exactly_that_login_name():
    senders = {"alice": "alice.smith@example.org", "bob@b.example": "bob@b.example"}
    assert sender_address("alice", "example.test", senders) == "alice.smith@example.org"
    assert sender_address("bob@b.example", "example.test", senders) == "bob@b.example"
    # another spelling of the login is not the mapped one: the default rule, never the typed domain
    assert sender_address("alice@evil.example", "example.test", senders) == "alice@example.test"
    assert sender_address("bob@evil.example", "example.test", senders) == "bob@example.test"


# -- the built message --------------------------------------------------------------------------

def test_headers_of_a_built_message():
    d = parse_typed(TO, ["Subject: Grüße aus Köln", "Cc: carol@x.org", "Bcc: eve@z.org", "",
                         "Hallo"])
    message_id, data, msg = built(d)
    assert msg["From"] == "alice@example.test"
    assert msg["To"] == "bob@example.test"
    assert msg["Cc"] == "carol@x.org"
    assert msg["Bcc"] is None and b"eve@z.org" not in data and b"Bcc" not in data
    assert msg["Subject"] == "Grüße aus Köln"
    assert b"Subject: =?utf-8?" in data  # RFC 2047 on the wire
    assert msg["Message-ID"] == message_id
    assert re.fullmatch(r"<[0-9]+\.[0-9a-f]{20}@example\.test>", message_id)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    date = parsedate_to_datetime(msg["Date"])
    assert date.timestamp() == NOW
    assert date.utcoffset() == datetime.fromtimestamp(NOW).astimezone().utcoffset()
    assert data.startswith(b"From: alice@example.test\r\nTo: bob@example.test\r\n")


def test_message_ids_differ():
    assert built(draft())[0] != built(draft())[0]


def test_an_empty_subject_is_left_out_and_control_characters_never_reach_a_header():
    assert built(draft(subject=""))[2]["Subject"] is None
    _, _, msg = built(draft(subject="a\r\nBcc: evil@x.org\x1b[2J"))
    assert msg["Bcc"] is None and msg["Subject"] == "a Bcc: evil@x.org [2J"


@pytest.mark.parametrize(("body", "cte"), [
    ("plain short ASCII\n\ttabbed", "7bit"),
    ("x" * 79, "quoted-printable"),  # over 78: soft line breaks
    ("Grüße aus Köln, ein ganz normaler deutscher Satz mit Umlauten.", "quoted-printable"),
    ("Привет, как дела? Всё хорошо.", "base64"),
    ("From the start", "quoted-printable"),
    ("nul \x00 and bell \x07", "quoted-printable"),
])
def test_transfer_encoding_is_chosen_by_content(body, cte):
    _, data, msg = built(draft(body=body))
    assert msg["Content-Transfer-Encoding"] == cte
    assert decoded_body(msg) == body + "\n"
    assert all(len(line) <= 78 for line in wire_lines(data))


def test_a_lone_dot_and_from_lines_survive():
    body = ".\nFrom here\n..\nFrom: not a header\n.hidden"
    _, data, msg = built(draft(body=body))
    assert decoded_body(msg) == body + "\n"
    _, _, encoded = data.partition(b"\r\n\r\n")
    assert not any(line.startswith(b"From ") for line in encoded.split(b"\r\n"))


def test_a_very_long_line_and_a_long_unbreakable_subject_stay_under_998():
    body = "word" * 5000 + "\n" + "ä" * 3000
    subject = "S" * 3000
    _, data, msg = built(draft(body=body, subject=subject))
    assert max(len(line) for line in wire_lines(data)) <= 998
    assert decoded_body(msg) == body + "\n"
    assert msg["Subject"] == subject


def test_many_recipients_are_folded():
    to = [f"recipient-number-{i}@a-rather-long-domain.example" for i in range(100)]
    _, data, msg = built(draft(to=to))
    assert max(len(line) for line in wire_lines(data)) <= 998
    assert [a.addr_spec for a in msg["To"].addresses] == to


INJECTION = ("Report =?utf-8?q?=0D=0AFrom:_Director_<director@example.test>=0D=0A=0D=0A"
             "forged?=")


def header_block(data):
    head, _, _ = data.partition(b"\r\n\r\n")
    return head.decode("ascii").split("\r\n")


def test_an_encoded_word_in_a_typed_subject_stays_literal_text():
    """Issue 11 item 1 (CVE-2024-6923 on Python < 3.11.10): no second From, no forged body."""
    d = parse_typed(TO, [f"Subject: {INJECTION}", "", "the real body"])
    _, data, msg = built(d)
    names = [line.split(":", 1)[0] for line in header_block(data) if line[:1] not in " \t"]
    assert names == ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
                     "Content-Type", "Content-Transfer-Encoding"]
    assert msg.get_all("From") == ["alice@example.test"]
    assert msg["Subject"] == INJECTION  # a reader sees exactly what was typed
    assert decoded_body(msg) == "the real body\n"
    assert b"forged" not in data and b"director" not in data.lower()


@pytest.mark.parametrize("typed", [
    "=?utf-8?b?DQpCY2M6IGV2aWxAeC5vcmc=?=",  # CRLF Bcc: evil@x.org, base64
    "=?iso-8859-1?q?a=0Ab?= =?utf-8?q?=0D?=",
    "plain =? half",
    "?= =? ?q? =?utf-8?q??=",
])
def test_anything_like_an_encoded_word_is_encoded_so_it_reads_back_as_typed(typed):
    _, data, msg = built(draft(subject=typed))
    assert msg["Subject"] == typed
    assert msg["Bcc"] is None and len(header_block(data)) >= 8
    assert all(line.startswith(("Subject: =?utf-8?b?", " =?utf-8?b?")) for line in
               header_block(data)[2:] if "Subject" in line or line.startswith(" "))


@pytest.mark.parametrize("header", ["Cc", "Bcc", "To"])
def test_an_encoded_word_in_an_address_is_refused(header):
    address = "=?utf-8?q?=0D=0AX-Injected=3A_yes?=@example.test"
    with pytest.raises(DraftError, match=rf"^{header}: bad recipient .*'=\?' \(an RFC 2047"):
        parse_typed(TO, [f"{header}: {address}", "", "x"])
    with pytest.raises(DraftError, match="RFC 2047"):
        parse_recipients(address)


def test_a_plain_subject_is_written_as_typed_and_folded_at_spaces():
    subject = "Quarterly report: the numbers " * 4
    _, data, msg = built(draft(subject=subject.strip()))
    lines = [line for line in header_block(data) if line.startswith(("Subject:", " "))]
    assert lines[0].startswith("Subject: Quarterly report: the numbers")
    assert all(len(line) <= 78 for line in lines) and len(lines) > 1
    assert msg["Subject"] == subject.strip()


def test_bare_carriage_returns_become_line_breaks():
    cte, encoded = encode_body("a\rb\r\nc")
    assert (cte, encoded) == ("7bit", "a\nb\nc\n")


def test_an_invalid_sender_is_refused():
    with pytest.raises(DraftError, match="cannot send as 'al ice@x.org': space in address"):
        built(draft(), sender="al ice@x.org")


ENCODED_WORDISH = st.sampled_from(["=?", "?=", "=?utf-8?q?", "=0D=0A", "?b?", "_", " "])


@settings(max_examples=200, deadline=None)
@given(subject=st.lists(st.one_of(ENCODED_WORDISH, st.text(st.characters(
    exclude_categories=("Cs", "Cc", "Cf", "Cn", "Co", "Zl", "Zp", "Zs")), max_size=8)),
    max_size=30).map(lambda parts: " ".join("".join(parts).split())))
def test_any_subject_reads_back_exactly_as_typed(subject):
    _, data, msg = built(draft(subject=subject))
    assert (msg["Subject"] or "") == subject
    assert all(len(line) <= 78 for line in header_block(data))
    assert msg.get_all("From") == ["alice@example.test"] and msg["Bcc"] is None


@settings(max_examples=150, deadline=None)
@given(body=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r"),
                    max_size=400),
       subject=st.text(st.characters(exclude_categories=("Cs", "Cc", "Cf", "Cn", "Co", "Zl",
                                                           "Zp")),
                       max_size=120).map(lambda s: " ".join(s.split())))
def test_any_text_round_trips_with_crlf_and_short_lines(body, subject):
    _, data, msg = built(draft(body=body, subject=subject))
    assert max(len(line) for line in wire_lines(data)) <= 998
    assert data.endswith(b"\r\n")
    assert decoded_body(msg) == body + "\n"
    assert (msg["Subject"] or "") == subject
