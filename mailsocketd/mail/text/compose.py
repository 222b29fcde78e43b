"""Turning what a user typed after ``send TO`` into a proper RFC 5322 message.

Parsing is strict about addresses (plain ``local@domain`` in ASCII, nothing that needs quoting)
so that nothing typed can smuggle a header or an SMTP command, and every refusal is one
``DraftError`` line naming the offending text.  Building is careful about the wire: CRLF line
ends, headers folded, the body in the lightest transfer encoding that keeps every line under
the 998-character limit, and lines starting with ``From `` protected from mbox mangling.

Every header is written here, not by the email package: typed header text is literal text
(a ``=?...?=`` in a Subject is sent encoded, so it reads back as typed and can never decode to
a line break, whatever the interpreter's patch level: CVE-2024-6923), and the sender is never
a domain the user typed (``sender_address``).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import quoprimime
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
    "parse_typed_text",
    "sender_address",
]

MAX_RECIPIENTS = 100
MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit less the angle brackets
SHOWN_LIMIT = 80  # characters of a bad address quoted back in an error
SEVEN_BIT_LINE = 78  # longest body line sent unencoded (RFC 5322's "SHOULD")
QP_LINE = 74  # leaves room for turning a leading "F" into "=46"
HEADER_NAMES = ("subject", "to", "cc", "bcc")
# Header names a user may mean to set but cannot: typed in the header block they are refused,
# never sent as body text (a Reply-To or From that silently went nowhere).
REFUSED_HEADERS = frozenset({
    "from", "sender", "reply-to", "return-path", "date", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-disposition", "resent-from", "resent-to", "resent-cc", "resent-bcc",
    "resent-sender", "resent-reply-to"})
HEADER_LINE = re.compile(r"([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)\Z", re.DOTALL)
HEADER_LINE_LIMIT = 78  # RFC 5322's "SHOULD" for a header line
HARD_LINE_LIMIT = 998  # RFC 5322's "MUST"
ENCODED_WORD_START = "=?"  # RFC 2047: text holding this is sent encoded, so it stays literal
ENCODED_PREFIX, ENCODED_SUFFIX = "=?utf-8?b?", "?="
LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")
DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?\Z")
RECIPIENT_SPACE = " \t"  # what separates recipients, besides commas
RECIPIENT_SPACES = re.compile(r"[ \t]+")


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
    # a reader's mail client (and Python's email package) decodes "=?...?=" even in an address
    (lambda a: ENCODED_WORD_START in a, "'=?' (an RFC 2047 encoded word) in an address"),
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
    """``"a@x.org, b@y.org c@z.org"`` -> the addresses; DraftError naming the first bad one.

    Addresses are separated by commas, spaces or tabs (any mix; ``bob @example.org`` is two
    words, ``bob`` and ``@example.org``, never one address).  Nothing but the separators is
    dropped: an empty item between two commas, or a comma at an end, is an error, and any other
    character (a CR, say) stays in its word for ``address_problem`` to refuse.
    """
    if not text.strip(RECIPIENT_SPACE):
        raise DraftError("no recipient given")
    items = [item.strip(RECIPIENT_SPACE) for item in text.strip(RECIPIENT_SPACE).split(",")]
    if not all(items):
        raise DraftError(f"empty address in the recipient list '{_shown(text)}'")
    addresses = tuple(word for item in items for word in RECIPIENT_SPACES.split(item))
    if len(addresses) > MAX_RECIPIENTS:
        raise DraftError(f"too many recipients: {len(addresses)} (at most {MAX_RECIPIENTS})")
    for address in addresses:
        problem = address_problem(address)
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


def _header_block(lines: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """The leading header lines as (name, value) pairs, and the index where the body starts.

    Headers run up to the first line that is not a Subject/To/Cc/Bcc line (a line starting with
    whitespace continues the header before it); that line starts the body, unless it is blank:
    then it only separated the two.  A From, Reply-To... line there is a DraftError: it would
    otherwise go out as body text while the user thinks it was sent as a header.
    """
    headers: list[tuple[str, str]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            return headers, index + 1
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        match = HEADER_LINE.match(line)
        name = match.group(1).lower() if match is not None else ""
        if match is not None and name in REFUSED_HEADERS:
            raise DraftError(f"a '{_shown(match.group(1))}:' line cannot be typed (only Subject,"
                             " To, Cc and Bcc); to send it as text, start with a blank line")
        if name not in HEADER_NAMES:
            return headers, index
        headers.append((name, match.group(2).strip() if match is not None else ""))
    return headers, len(lines)


def _header_addresses(name: str, value: str) -> tuple[str, ...]:
    """A To/Cc/Bcc value (spaces after the commas allowed); an empty value means none."""
    if not value:
        return ()
    try:
        return parse_recipients(",".join(part.strip() for part in value.split(",")))
    except DraftError as e:
        raise DraftError(f"{name.capitalize()}: {e}") from None


def parse_typed(to: Sequence[str], lines: Sequence[str]) -> Draft:
    """The typed lines -> a Draft.

    Leading ``Subject:``, ``To:``, ``Cc:`` and ``Bcc:`` lines (any case) are headers, as mail(1)
    takes them: up to the first line that is not one, which starts the body (a blank line there
    is dropped as the separator).  So a message that merely starts with "Note: ..." is not eaten,
    a Cc typed without the blank line still gets the message, and a message starting with a
    blank line is all body.  A bad address is a DraftError, and so is a From/Reply-To/... line
    among the headers.  Header text is kept literally (``build_message`` encodes it).
    """
    headers, body_start = _header_block(lines)
    subject_parts: list[str] = []
    addresses: dict[str, list[str]] = {"to": list(to), "cc": [], "bcc": []}
    for name, value in headers:
        if name == "subject":
            subject_parts.append(value)
        else:
            addresses[name].extend(_header_addresses(name, value))
    return Draft(to=tuple(addresses["to"]), cc=tuple(addresses["cc"]),
                 bcc=tuple(addresses["bcc"]), subject=" ".join(subject_parts),
                 body="\n".join(lines[body_start:]))


def parse_typed_text(to: Sequence[str], text: str) -> Draft:
    """``parse_typed`` of the typed text as one string (a LF after each line), as ``send``
    collects it: only the lines the headers take are split off, and the body is one slice, so
    a big message never becomes a list of lines (an object per line: 13 times its size)."""
    if not text:
        return parse_typed(to, [])
    end = len(text) - 1 if text.endswith("\n") else len(text)
    lines: list[str] = []
    starts: list[int] = []
    pos, want = 0, 16
    while True:
        while len(lines) < want and pos <= end:
            stop = text.find("\n", pos, end)
            stop = end if stop < 0 else stop
            starts.append(pos)
            lines.append(text[pos:stop])
            pos = stop + 1
        _, body_start = _header_block(lines)
        if pos > end or body_start < len(lines) or not lines[-1].strip():
            break  # the header block ends within the lines split off
        want *= 2
    head = parse_typed(to, lines[:body_start])
    body = text[starts[body_start]:end] if body_start < len(starts) else text[pos:end]
    return Draft(to=head.to, cc=head.cc, bcc=head.bcc, subject=head.subject, body=body)


def sender_address(user: str, from_domain: str, senders: Mapping[str, str] | None = None
                   ) -> str:
    """The envelope and From address for a login name: the operator's mapping for exactly that
    name (``[smtp.senders]``), else its local part at ``from_domain``.

    ``alice`` and ``alice@anything.example`` both give ``alice@from_domain``: the domain a user
    types at login is not something the operator vouched for (the IMAP server may map any
    domain to the same account), so it never reaches From or the envelope.
    """
    if senders and user in senders:
        return senders[user]
    local = user.rpartition("@")[0] if "@" in user else user
    return f"{local}@{from_domain}"


# A body is never split into a list of lines (an object per line: many times its size, made
# in one C call that holds the GIL): it is searched and encoded in slices of this many
# characters, so that the reactor's thread gets the GIL between them.
SLICE = 1 << 18
NOT_SEVEN_BIT = re.compile(rf"[^\t\x20-\x7e\n]|^(?:From |[^\n]{{{SEVEN_BIT_LINE + 1}}})",
                           re.MULTILINE)
FROM_LINE = re.compile(r"^From ", re.MULTILINE)  # QP: its F is encoded, so no mbox adds a >
ESCAPED_BYTES = bytes(b for b in range(256) if b >= 0x80 or (b < 0x20 and b not in (0x09, 0x0A)))


def _seven_bit(body: str) -> bool:
    """Every line short printable ASCII, none starting with ``From ``."""
    for start in range(0, len(body), SLICE):  # slices overlap by a line's length
        if NOT_SEVEN_BIT.search(body, start, start + SLICE + SEVEN_BIT_LINE + 1):
            return False
    return True


PLAIN_CRLF = bytes(range(0x20, 0x7F)) + b"\t\r\n"
LONG_LINE = re.compile(rb"^[^\r\n]{%d}" % (SEVEN_BIT_LINE + 1), re.MULTILINE)


def _seven_bit_crlf(data: bytes | bytearray | memoryview) -> bool:
    """``_seven_bit`` of a typed body in bytes with a CRLF after each line (and no other line
    end), ending with one; in slices of whole lines, with C-speed checks."""
    with memoryview(data) as view:
        if len(view) < 2 or view[-2:].tobytes() != b"\r\n":
            return False
        start = 0
        while start < len(view):
            piece = bytes(view[start:start + SLICE])
            end = piece.rfind(b"\n") + 1
            if not end:
                return False  # a line longer than a slice
            piece = piece[:end]
            crlf = piece.count(b"\r\n")
            if (piece.translate(None, PLAIN_CRLF) or piece.count(b"\r") != crlf
                    or piece.count(b"\n") != crlf or piece.startswith(b"From ")
                    or b"\nFrom " in piece or LONG_LINE.search(piece)):
                return False
            start += end
    return True


def _line_slices(data: bytes) -> Iterator[bytes]:
    """``data`` in pieces of about SLICE bytes, each but the last ending with a LF."""
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + SLICE)
        if end < 0:
            end = data.find(b"\n", start + SLICE)
        end = len(data) - 1 if end < 0 else end
        yield data[start:end + 1]
        start = end + 1


def encode_body(body: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body with LF line ends) for a UTF-8 text body.

    7bit when every line is short printable ASCII and none starts with ``From ``;
    quoted-printable when that is shorter than base64 (under a sixth of the bytes need
    escaping); base64 otherwise.  Bare CRs count as line breaks: SMTP allows no other kind.
    """
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    if _seven_bit(body):
        return "7bit", body + "\n"
    data = body.encode("utf-8")
    escaped = len(data) - len(data.translate(None, ESCAPED_BYTES))
    if escaped * 6 < len(data):
        encoded = "".join(quoprimime.body_encode(piece.decode("latin-1"), QP_LINE, eol="\n")
                          for piece in _line_slices(data))
        return "quoted-printable", FROM_LINE.sub("=46rom ", encoded) + "\n"
    return "base64", base64.encodebytes(data + b"\n").decode("ascii")


def new_message_id(now: float, domain: str) -> str:
    """A globally unique ``<time.random@domain>``."""
    return f"<{int(now)}.{secrets.token_hex(10)}@{domain}>"


def _folded(name: str, chunks: Sequence[str]) -> str:
    """``Name: chunk chunk...`` folded before a chunk's leading space where a line would pass
    HEADER_LINE_LIMIT (each chunk after the first starts with its whitespace)."""
    lines = [f"{name}:"]
    for chunk in chunks:
        if len(lines[-1]) + len(chunk) > HEADER_LINE_LIMIT and len(lines[-1]) > len(name) + 1:
            lines.append(chunk)
        else:
            lines[-1] += chunk
    return "\r\n".join(lines)


def _encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as RFC 2047 UTF-8 base64 words, never splitting a character; the first fits in
    ``first_room`` characters, the others in 75 (RFC 2047's limit)."""
    words: list[str] = []
    room = first_room
    chunk = b""
    for char in text:
        data = char.encode("utf-8")
        if chunk and len(ENCODED_PREFIX) + 4 * -(-(len(chunk) + len(data)) // 3) + len(
                ENCODED_SUFFIX) > room:
            words.append(ENCODED_PREFIX + base64.b64encode(chunk).decode("ascii")
                         + ENCODED_SUFFIX)
            chunk, room = b"", 75
        chunk += data
    words.append(ENCODED_PREFIX + base64.b64encode(chunk).decode("ascii") + ENCODED_SUFFIX)
    return words


def text_header(name: str, text: str) -> str:
    """An unstructured header (Subject) holding ``text`` literally, CRLF between its lines.

    Plain printable ASCII is written as it is, folded at spaces.  Anything else (non-ASCII, a
    ``=?`` that a reader would decode as an encoded word, a word too long to fold) is encoded
    whole as RFC 2047 words of our own making, so a reader sees exactly the typed characters:
    the email package never sees the text, whatever the interpreter's patch level
    (CVE-2024-6923).  Line breaks and controls must already be gone (``clean``).
    """
    chunks = [" " + chunk.lstrip(" ") if i == 0 else chunk
              for i, chunk in enumerate(re.findall(r" *[^ ]+", text))]
    plain = (text.isascii() and text.isprintable() and ENCODED_WORD_START not in text
             and all(len(name) + 2 + len(chunk) <= HARD_LINE_LIMIT for chunk in chunks))
    if plain:
        return _folded(name, chunks)
    words = _encoded_words(text, HEADER_LINE_LIMIT - len(name) - 2)
    return _folded(name, [" " + word for word in words])


def address_header(name: str, addresses: Sequence[str]) -> str:
    """``Name: a@x, b@y`` folded after the commas; the addresses are checked plain ASCII."""
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:  # a Draft checked them: this is a programming error
            raise DraftError(f"bad address '{_shown(address)}': {problem}")
    return _folded(name, [f" {a}," for a in addresses[:-1]] + [f" {addresses[-1]}"])


def build_message(draft: Draft, *, sender: str, now: float, domain: str,
                  typed_body: bytes | bytearray | memoryview | None = None) -> tuple[str, bytes]:
    """(Message-ID, the message with CRLF line ends) ready for submission.

    ``typed_body``, in place of ``draft.body``: the body as typed, UTF-8 with a CRLF after
    each line (``send``'s buffer).  One that can go 7bit is sent as it is, copied once, so a
    big message is not copied step after step; any other is decoded and encoded as usual
    (UnicodeDecodeError if it is not UTF-8).

    Every header is written here, not by the email package: addresses are checked plain
    ``local@domain``, the Subject is literal text (``text_header``), so nothing typed can add a
    header or a body.  Bcc is never written into the message; it only reaches the envelope.
    Date is RFC 5322 in the local time zone; headers are folded.
    """
    problem = address_problem(sender)
    if problem is not None:
        raise DraftError(f"cannot send as '{_shown(sender)}': {problem}")
    message_id = new_message_id(now, domain)
    seven_bit = typed_body is not None and _seven_bit_crlf(typed_body)
    if seven_bit:
        cte, payload = "7bit", ""
    elif typed_body is not None:
        with memoryview(typed_body) as view:  # the last CRLF ends the last line: no new line
            body = str(view[:-2] if view[-2:].tobytes() == b"\r\n" else view, "utf-8")
        cte, payload = encode_body(body)
        del body
    else:
        cte, payload = encode_body(draft.body)
    headers = [address_header("From", [sender]),
               address_header("To", draft.to) if draft.to else "To: undisclosed-recipients:;"]
    if draft.cc:
        headers.append(address_header("Cc", draft.cc))
    subject = clean(draft.subject, replacement=" ", layout="fold")  # no line break in a header
    if subject:
        headers.append(text_header("Subject", subject))
    headers += [f"Date: {formatdate(now, localtime=True)}", f"Message-ID: {message_id}",
                "MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"',
                f"Content-Transfer-Encoding: {cte}"]
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")
    if seven_bit and typed_body is not None:
        return message_id, head + typed_body
    return message_id, head + payload.replace("\n", "\r\n").encode("ascii")  # copies: few
