"""The values the user commands' replies hold (ListedMessage, FetchedMessage, Selected,
MailboxEntry) and the parsers that make them from the parsed untagged lines; a malformed reply
is a ProtocolViolation (``UserImapClient`` then drops the connection)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailsocketd.mail.errors import ProtocolViolation
from mailsocketd.mail.imap.wire import MAX_UID

__all__ = ["FetchedMessage", "ListedMessage", "MailboxEntry", "Selected", "decoded_name",
           "fetch_items", "mailbox_key", "parse_body", "parse_headers", "parse_mailboxes",
           "parse_selected", "uid_set"]


@dataclass(frozen=True)
class ListedMessage:
    """One line of ``list``: UID, flags, size, the raw Date/From/Subject header block and the
    server's INTERNALDATE (arrival date, ``25-Nov-2026 14:03:07 +0100``; "" if not sent)."""

    uid: int
    flags: frozenset[str]
    size: int
    header: bytes
    arrived: str = ""


@dataclass(frozen=True)
class FetchedMessage:
    """A message as ``read`` fetched it: ``data`` is its first ``read_limit`` bytes."""

    uid: int
    size: int
    data: bytes


@dataclass(frozen=True)
class Selected:
    """What SELECT or EXAMINE said about the mailbox (``uidnext`` None if not sent)."""

    mailbox: str
    exists: int
    uidvalidity: int
    uidnext: int | None
    readonly: bool


@dataclass(frozen=True)
class MailboxEntry:
    """One LIST line: the decoded name (None if it is not valid modified UTF-7), raw flags,
    the hierarchy delimiter (None for a flat name space)."""

    name: str | None
    raw: bytes
    flags: frozenset[str]
    delimiter: str | None = None

    @property
    def selectable(self) -> bool:
        return not {"\\noselect", "\\nonexistent"} & {f.lower() for f in self.flags}


def mailbox_key(mailbox: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); every other name is case-sensitive."""
    return "INBOX" if mailbox.upper() == "INBOX" else mailbox


def uid_set(uids: Sequence[int]) -> bytes:
    """``1,5,7``: the UIDs (or sequence numbers) as an IMAP set."""
    return b",".join(str(uid).encode("ascii") for uid in uids)


def _number(value: Any, what: str) -> int:
    """A non-negative 32-bit number the server sent; ProtocolViolation if it is not one."""
    if isinstance(value, bytes) and value.isdigit() and int(value) <= MAX_UID:
        return int(value)
    raise ProtocolViolation(f"bad {what} in the server's reply")


def fetch_items(response: list[Any]) -> tuple[int, dict[str, Any]]:
    """The sequence number and items of one parsed ``n FETCH (...)`` response.

    ``BODY[section]<origin> value`` is stored under ``BODY``: each command asks for one section.
    """
    items = response[2] if len(response) > 2 else None
    if not isinstance(items, list):
        raise ProtocolViolation("bad FETCH response")
    found: dict[str, Any] = {}
    i = 0
    while i < len(items):
        key = items[i]
        if not isinstance(key, bytes):
            raise ProtocolViolation("bad FETCH response")
        name = key.decode("ascii", "replace").upper()
        i += 1
        if name == "BODY" and i < len(items) and isinstance(items[i], list):
            i += 1  # the section
            if i < len(items) and isinstance(items[i], bytes) and items[i].startswith(b"<"):
                i += 1  # the origin of a partial fetch
        if i >= len(items):
            raise ProtocolViolation(f"FETCH item {name[:20]} without a value")
        found[name] = items[i]
        i += 1
    return _number(response[0], "message number"), found


def _flags(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(f.decode("utf-8", "replace") for f in value if isinstance(f, bytes))


def _text(value: Any) -> str:
    """A short string item (INTERNALDATE) as text; "" for NIL or anything not a string."""
    return value.decode("ascii", "replace")[:64] if isinstance(value, bytes) else ""


def decoded_name(name: bytes) -> str | None:
    """A mailbox name from modified UTF-7; None if it is not valid."""
    try:
        return name.decode("imap4-utf-7")
    except (UnicodeDecodeError, ValueError):
        return None


def _body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else b""  # NIL: an empty body


def _fetches(lines: list[list[Any]]) -> dict[int, dict[str, Any]]:
    """The FETCH responses of a reply, merged by message number (FLAGS may come apart)."""
    found: dict[int, dict[str, Any]] = {}
    for parts in lines:
        if len(parts) >= 2 and parts[1] == b"FETCH":
            number, values = fetch_items(parts)
            found.setdefault(number, {}).update(values)
    return found


def parse_selected(lines: list[list[Any]], last: bytes, mailbox: str,
                   readonly: bool) -> Selected:
    exists: int | None = None
    codes: dict[bytes, int] = {}
    for parts in lines:
        if len(parts) >= 2 and parts[1] == b"EXISTS":
            exists = _number(parts[0], "EXISTS")
        elif (len(parts) >= 2 and parts[0] == b"OK" and isinstance(parts[1], list)
              and len(parts[1]) >= 2 and parts[1][0] in (b"UIDVALIDITY", b"UIDNEXT")):
            codes[parts[1][0]] = _number(parts[1][1], parts[1][0].decode())
    if exists is None or b"UIDVALIDITY" not in codes:
        raise ProtocolViolation("SELECT/EXAMINE reply without EXISTS or UIDVALIDITY")
    granted_readonly = readonly or b"[READ-ONLY]" in bytes(last).upper()
    return Selected(mailbox, exists, codes[b"UIDVALIDITY"], codes.get(b"UIDNEXT"),
                    granted_readonly)


def parse_headers(lines: list[list[Any]], first: int = 1, last: int = MAX_UID
                  ) -> list[ListedMessage]:
    """The listed messages of a FETCH reply (those numbered ``first`` to ``last``), newest
    first."""
    found = _fetches(lines)
    listed = []
    for number in sorted(found, reverse=True):
        values = found[number]
        if first <= number <= last and "UID" in values and "BODY" in values:
            listed.append(ListedMessage(
                _number(values["UID"], "UID"), _flags(values.get("FLAGS")),
                _number(values.get("RFC822.SIZE", b"0"), "RFC822.SIZE"),
                _body(values["BODY"]), _text(values.get("INTERNALDATE"))))
    return listed


def parse_body(lines: list[list[Any]], uid: int, limit: int) -> FetchedMessage | None:
    for values in _fetches(lines).values():
        if values.get("UID") == str(uid).encode() and "BODY" in values:
            data = _body(values["BODY"])[:limit]
            size = values.get("RFC822.SIZE")
            return FetchedMessage(uid, len(data) if size is None else _number(size, "size"),
                                  data)
    return None


def parse_mailboxes(lines: list[list[Any]]) -> list[MailboxEntry]:
    """The LIST lines of a reply, in the server's order."""
    entries = []
    for parts in lines:
        if len(parts) < 4 or parts[0] != b"LIST" or not isinstance(parts[3], bytes):
            continue
        delimiter = parts[2].decode("utf-8", "replace") if isinstance(parts[2], bytes) else None
        entries.append(MailboxEntry(decoded_name(parts[3]), parts[3], _flags(parts[1]),
                                    delimiter))
    return entries
