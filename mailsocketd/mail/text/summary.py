"""A message's header block -> the one line ``list`` shows for it.

``summarize`` reads Date, From, Subject (and Content-Type's charset, for raw 8-bit bytes) from
the header block; ``summary_line`` lays a summary out in columns.  Like the rest of the mail
text code it is pure and total: malformed headers give empty fields, never an error.

``list 20`` summarizes 20 messages per command, so the common shapes have a fast path: a Date
in RFC 5322's own form and a From of one plain ``Name <address>``.  Whatever does not fit
them exactly takes the general parsers (``email.utils``), which give the same result on the
shapes the fast paths take (tests/unit/mail/test_mail_summary.py compares them).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from mailsocketd.mail.text.headers import (
    clean_line,
    decode_header,
    decode_words,
    fit,
    header_params,
    header_text,
    pad,
)

__all__ = ["Summary", "arrival_date", "summarize", "summary_line"]

SENDER_COLUMNS = 20
DATE_COLUMNS = 16


@dataclass(frozen=True, slots=True)
class Summary:
    """One message as the ``list`` command shows it."""

    uid: int
    date: str      # "YYYY-MM-DD HH:MM" in local time, or "" if unknown
    sender: str    # display name, else the address, decoded; "" if none
    subject: str   # decoded; "" if none
    unseen: bool
    size: int
    deleted: bool = False  # marked \\Deleted (by a delete without UIDPLUS, or another client)


def summarize(uid: int, header: bytes, flags: Iterable[str], size: int,
              arrived: str = "") -> Summary:
    """A list entry from the raw header block of a message (as from ``BODY.PEEK[HEADER.FIELDS
    (DATE FROM SUBJECT CONTENT-TYPE)]``) and its flags (``\\Seen`` ...).  ``arrived`` is the
    server's INTERNALDATE (``25-Nov-2026 14:03:07 +0100``): the date shown when the message
    has no Date header, or one that cannot be read."""
    fields = header_fields(header)
    sender, subject = fields.get("from"), fields.get("subject")
    # The body's charset is the fallback for raw 8-bit header bytes (and 7-bit ISO-2022-JP);
    # headers without them never need it.
    charset = None
    if "content-type" in fields and not all(
            value is None or (value.isascii() and b"\x1b" not in value)
            for value in (sender, subject)):
        charset = header_params(fields["content-type"])[1].get("charset")
    return Summary(
        uid=uid,
        date=(local_date(decode_header(fields["date"])) if "date" in fields else "")
        or arrival_date(arrived),
        sender=first_sender(header_text(sender, charset)),
        subject=decode_header(subject, fallback_charset=charset),
        unseen=not any(flag.lower() == "\\seen" for flag in flags),
        size=size,
        deleted=any(flag.lower() == "\\deleted" for flag in flags),
    )


def summary_line(s: Summary, width: int = 80) -> str:
    """``4821 N 2026-11-25 14:03  Alice Example         Lunch on Friday?``: UID and mark
    (D marked \\Deleted, else N unseen, - seen) first and never cut, so scripts can split; the
    rest cut to ``width``."""
    head = f"{s.uid} {'D' if s.deleted else 'N' if s.unseen else '-'}"
    date = pad(clean_line(s.date) or "(no date)", DATE_COLUMNS)
    sender = pad(clean_line(s.sender) or "(no sender)", SENDER_COLUMNS)
    subject = clean_line(s.subject) or "(no subject)"
    rest = fit(f"{date}  {sender}  {subject}", width - len(head) - 1)
    return f"{head} {rest}" if rest else head


# -- the header block -------------------------------------------------------------------------

_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:(.*)", re.DOTALL)
_LINE_END = re.compile(rb"\r?\n")
# the usual block: unfolded CRLF lines, then the blank line (or nothing)
_PLAIN_BLOCK = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\r\n]*\r\n)*(?:\r\n)?")
_PLAIN_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:([^\r\n]*)\r\n")


def header_fields(block: bytes) -> dict[str, bytes]:
    """Header block -> {lowercased name: raw value of the first occurrence}, folds kept."""
    if _PLAIN_BLOCK.fullmatch(block):
        fields: dict[str, bytes] = {}
        for name, value in _PLAIN_FIELD.findall(block):
            fields.setdefault(name.decode("ascii").lower(), value)
        return fields
    return any_fields(block)


def any_fields(block: bytes) -> dict[str, bytes]:
    """``header_fields`` of any block: folded lines, LF line ends, blank lines first, lines
    that are not fields."""
    fields: dict[str, list[bytes]] = {}
    current: list[bytes] | None = None
    for line in _LINE_END.split(block):
        if not line.strip():  # the blank line that ends the header (leading ones skipped)
            if fields:
                break
        elif line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
        else:
            match = _FIELD.fullmatch(line)
            name = match[1].decode("ascii").lower() if match else ""
            current = fields.setdefault(name, [match[2]]) if match and name not in fields else None
    return {name: b"\r\n".join(lines) for name, lines in fields.items()}


# -- Date ---------------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}
# "Tue, 25 Nov 2026 14:03:07 +0100", as nearly every mailer writes it (a comment may follow)
_RFC5322_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (" + "|".join(_MONTHS) + r") "
    r"([1-9]\d{3}) (\d\d):(\d\d)(?::(\d\d))? ([+-])(\d\d)(\d\d)(?: \([^()]*\))?", re.ASCII)
_ZONES: dict[int, timezone] = {}


def _zone(seconds: int) -> timezone:
    zone = _ZONES.get(seconds)
    if zone is None:
        zone = timezone(timedelta(seconds=seconds))
        if len(_ZONES) < 256:
            _ZONES[seconds] = zone
    return zone


def rfc5322_date(raw: str) -> datetime | None:
    """The fast path: a Date in RFC 5322's own form -> its moment; None for any other shape
    and for a moment that cannot be (day 31 of a short month, hour 24, a zone of a day)."""
    match = _RFC5322_DATE.fullmatch(raw)
    if match is None:
        return None
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    offset = (int(zone_h) * 3600 + int(zone_m) * 60) * (-1 if sign == "-" else 1)
    try:
        return datetime(int(year), _MONTH_NUMBER[month], int(day), int(hour), int(minute),
                        int(second or 0), tzinfo=_zone(offset))
    except ValueError:
        return None


def any_date(raw: str) -> datetime | None:
    """Any Date the email package can read, or ISO 8601 -> its moment (naive when the header
    gives no zone: ``-0000``); None if unreadable."""
    try:
        return email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            return datetime.fromisoformat(raw.strip())
        except ValueError:
            return None


def local_date(raw: str) -> str:
    """A Date header as ``YYYY-MM-DD HH:MM`` in local time; "" when it cannot be read."""
    when = rfc5322_date(raw)
    if when is None:
        when = any_date(raw)
    return _local(when)


# INTERNALDATE (RFC 3501 date-time, RFC 9051 the same): " 5-Nov-2026 14:03:07 +0100"
_INTERNAL_DATE = re.compile(
    r" ?(\d{1,2})-(" + "|".join(_MONTHS) + r")-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)",
    re.ASCII)


def arrival_date(raw: str) -> str:
    """The server's INTERNALDATE as ``YYYY-MM-DD HH:MM`` in local time; "" if unreadable."""
    match = _INTERNAL_DATE.fullmatch(raw)
    if match is None:
        return ""
    day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    offset = (int(zone_h) * 3600 + int(zone_m) * 60) * (-1 if sign == "-" else 1)
    try:
        when = datetime(int(year), _MONTH_NUMBER[month], int(day), int(hour), int(minute),
                        int(second), tzinfo=_zone(offset))
    except ValueError:
        return ""
    return _local(when)


def _local(when: datetime | None) -> str:
    """A moment as ``YYYY-MM-DD HH:MM`` in local time; "" for None or one out of range."""
    if when is None:
        return ""
    try:
        if when.tzinfo is None:  # "-0000": UTC with no claim about the sender's zone
            when = when.replace(tzinfo=UTC)
        w = when.astimezone()
    except (ValueError, OverflowError, OSError):
        return ""
    return f"{w.year:04d}-{w.month:02d}-{w.day:02d} {w.hour:02d}:{w.minute:02d}"


# -- From ---------------------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*"
_WORD = r'[^\s()<>@,:;"\[\]\\]+'  # a phrase word (dots and encoded words included)
# one address: "addr@host", "Some Name <addr@host>", "\"Name, Quoted\" <addr@host>"
_PLAIN_FROM = re.compile(
    rf'[ \t]*(?:(?P<bare>{_ADDRESS})|(?:"(?P<quoted>[^"\\\r]*)"|(?P<words>{_WORD}(?: {_WORD})*))?'
    rf"[ \t]*<(?P<angle>{_ADDRESS})>)[ \t]*")


def plain_sender(text: str) -> tuple[str, str] | None:
    """(display name, address) of a From that is one plain address, else None."""
    match = _PLAIN_FROM.fullmatch(text)
    if match is None:
        return None
    if match["bare"] is not None:
        return "", match["bare"]
    return match["quoted"] if match["quoted"] is not None else match["words"] or "", match["angle"]


def first_sender(text: str) -> str:
    """The first From address: its decoded display name, else the address itself."""
    plain = plain_sender(text)
    for name, address in email.utils.getaddresses([text]) if plain is None else [plain]:
        shown = decode_words(name) or clean_line(address)
        if shown:
            return shown
    return decode_words(text)
