"""Turning what a user typed after ``send TO`` into a proper RFC 5322 message.

Parsing is strict about addresses (plain ``local@domain`` in ASCII, nothing that needs quoting)
so that nothing typed can smuggle a header or an SMTP command, and every refusal is one
``DraftError`` line naming the offending text.  Building is careful about the wire: CRLF line
ends, headers folded, the body in the lightest transfer encoding that keeps every line under
the 998-character limit, and lines starting with ``From `` protected from mbox mangling.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email import quoprimime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from mailsocketd.clean import clean, escaped

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "MAX_RECIPIENTS",
    "Draft",
    "DraftError",
    "address_problem",
    "build_message",
    "parse_recipients",
    "parse_typed",
    "sender_address",
]

MAX_RECIPIENTS = 100
MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit less the angle brackets
SHOWN_LIMIT = 80  # characters of a bad address quoted back in an error
SEVEN_BIT_LINE = 78  # longest body line sent unencoded (RFC 5322's "SHOULD")
QP_LINE = 74  # leaves room for turning a leading "F" into "=46"
HEADER_NAMES = ("subject", "cc", "bcc")
HEADER_LINE = re.compile(r"([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)\Z", re.DOTALL)
LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")
DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?\Z")
LINE_BREAK = re.compile(r"\r\n|\r|\n")
PLAIN_ASCII = re.compile(r"[\t\x20-\x7e]*\Z")


class DraftError(ValueError):
    """The typed message cannot be sent as it is; ``str()`` is one line for the user."""


def _shown(text: str) -> str:
    """``text`` fit to be echoed in one line: control and invisible characters escaped."""
    return clean(text, replacement=escaped, limit=SHOWN_LIMIT)


_ADDRESS_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda a: not a, "empty address"),
    (lambda a: len(a) > MAX_ADDRESS_LENGTH, f"address longer than {MAX_ADDRESS_LENGTH} characters"),
    (lambda a: "\r" in a or "\n" in a, "line break in address"),
    (lambda a: any(c.isspace() for c in a), "space in address"),
    (lambda a: "<" in a or ">" in a, "angle brackets in address (give just local@domain)"),
    (lambda a: not a.isascii() or not a.isprintable(), "only plain ASCII addresses can be sent"),
    (lambda a: "@" not in a or a.endswith("@"), "missing @domain"),
    (lambda a: a.startswith("@"), "missing the part before @"),
)


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a plain ``local@domain`` this client can send to, or None."""
    for broken, problem in _ADDRESS_RULES:
        if broken(address):
            return problem
    local, _, domain = address.rpartition("@")
    if not LOCAL_PART.match(local) or not DOMAIN.match(domain):
        return "not a plain local@domain address"
    return None


def parse_recipients(text: str) -> tuple[str, ...]:
    """``"a@x.org,b@y.org"`` -> the addresses; DraftError naming the first bad one."""
    if not text:
        raise DraftError("no recipient given")
    addresses = tuple(text.split(","))
    if len(addresses) > MAX_RECIPIENTS:
        raise DraftError(f"too many recipients: {len(addresses)} (at most {MAX_RECIPIENTS})")
    for address in addresses:
        problem = address_problem(address)
        if problem == "empty address":
            raise DraftError(f"empty address in the recipient list '{_shown(text)}'")
        if problem is not None:
            raise DraftError(f"bad recipient '{_shown(address)}': {problem}")
    return addresses


def _unique(addresses: Sequence[str]) -> tuple[str, ...]:
    """De-duplicated in order; domains compare case-insensitively, local parts exactly."""
    seen: set[str] = set()
    kept: list[str] = []
    for address in addresses:
        local, _, domain = address.rpartition("@")
        key = f"{local}@{domain.lower().rstrip('.')}"
        if key not in seen:
            seen.add(key)
            kept.append(address)
    return tuple(kept)


@dataclass(frozen=True)
class Draft:
    """A message as the user composed it; every address has already been checked."""

    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    body: str

    def __post_init__(self) -> None:
        for address in (*self.to, *self.cc, *self.bcc):
            problem = address_problem(address)
            if problem is not None:
                raise DraftError(f"bad recipient '{_shown(address)}': {problem}")
        if not self.recipients:
            raise DraftError("no recipient given")
        if len(self.recipients) > MAX_RECIPIENTS:
            raise DraftError(f"too many recipients: {len(self.recipients)} "
                             f"(at most {MAX_RECIPIENTS})")

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient: To, Cc and Bcc, each once, in the order given."""
        return _unique((*self.to, *self.cc, *self.bcc))


def _header_block(lines: Sequence[str]) -> list[tuple[str, str]] | None:
    """``lines`` as (name, value) headers, or None when any line is not one of ours."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not headers:
                return None
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        match = HEADER_LINE.match(line)
        if match is None or match.group(1).lower() not in HEADER_NAMES:
            return None
        headers.append((match.group(1).lower(), match.group(2).strip()))
    return headers


def _header_addresses(name: str, value: str) -> tuple[str, ...]:
    """A Cc/Bcc value (spaces after the commas allowed); an empty value means none."""
    if not value:
        return ()
    try:
        return parse_recipients(",".join(part.strip() for part in value.split(",")))
    except DraftError as e:
        raise DraftError(f"{name.capitalize()}: {e}") from None


def parse_typed(to: Sequence[str], lines: Sequence[str]) -> Draft:
    """The typed lines -> a Draft.

    Lines before the first blank line are headers when EVERY one of them is ``Subject:``,
    ``Cc:`` or ``Bcc:`` (any case; a line starting with whitespace continues the previous
    one); otherwise everything typed is body, so a message that merely starts with
    "Note: ..." is not eaten.  A bad Cc/Bcc address is a DraftError.
    """
    blank = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    headers = _header_block(lines[:blank])
    if headers is None:
        headers, body_lines = [], list(lines)
    else:
        body_lines = list(lines[blank + 1:])
    subject_parts: list[str] = []
    cc: list[str] = []
    bcc: list[str] = []
    for name, value in headers:
        if name == "subject":
            subject_parts.append(value)
        else:
            (cc if name == "cc" else bcc).extend(_header_addresses(name, value))
    return Draft(to=tuple(to), cc=tuple(cc), bcc=tuple(bcc), subject=" ".join(subject_parts),
                 body="\n".join(body_lines))


def sender_address(user: str, from_domain: str) -> str:
    """The envelope and From address for a login name: ``alice`` -> ``alice@from_domain``."""
    return user if "@" in user else f"{user}@{from_domain}"


def _protect_from(lines: list[str]) -> list[str]:
    """QP lines starting with ``From `` get their F encoded, so no mbox turns them to >From."""
    return ["=46" + line[1:] if line.startswith("From ") else line for line in lines]


def encode_body(body: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body with LF line ends) for a UTF-8 text body.

    7bit when every line is short printable ASCII and none starts with ``From ``;
    quoted-printable when that is shorter than base64 (under a sixth of the bytes need
    escaping); base64 otherwise.  Bare CRs count as line breaks: SMTP allows no other kind.
    """
    lines = LINE_BREAK.split(body)
    if all(PLAIN_ASCII.match(line) and len(line) <= SEVEN_BIT_LINE
           and not line.startswith("From ") for line in lines):
        return "7bit", "\n".join(lines) + "\n"
    data = "\n".join(lines).encode("utf-8")
    escaped = sum(1 for b in data if b >= 0x80 or (b < 0x20 and b not in (0x09, 0x0A)))
    if escaped * 6 < len(data):
        encoded = quoprimime.body_encode(data.decode("latin-1"), QP_LINE, eol="\n")
        return "quoted-printable", "\n".join(_protect_from(encoded.split("\n"))) + "\n"
    return "base64", base64.encodebytes(data + b"\n").decode("ascii")


def new_message_id(now: float, domain: str) -> str:
    """A globally unique ``<time.random@domain>``."""
    return f"<{int(now)}.{secrets.token_hex(10)}@{domain}>"


def build_message(draft: Draft, *, sender: str, now: float, domain: str) -> tuple[str, bytes]:
    """(Message-ID, the message with CRLF line ends) ready for submission.

    Bcc is never written into the message; it only reaches the envelope.  Date is RFC 5322 in
    the local time zone; a non-ASCII Subject is RFC 2047 encoded; headers are folded.
    """
    problem = address_problem(sender)
    if problem is not None:
        raise DraftError(f"cannot send as '{_shown(sender)}': {problem}")
    message_id = new_message_id(now, domain)
    cte, payload = encode_body(draft.body)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(draft.to) if draft.to else "undisclosed-recipients:;"
    if draft.cc:
        msg["Cc"] = ", ".join(draft.cc)
    subject = clean(draft.subject, replacement=" ", layout="fold")  # no line break in a header
    if subject:
        msg["Subject"] = subject
    msg["Date"] = formatdate(now, localtime=True)
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = 'text/plain; charset="utf-8"'
    msg["Content-Transfer-Encoding"] = cte
    msg.set_payload(payload)
    return message_id, msg.as_bytes(policy=SMTP)
