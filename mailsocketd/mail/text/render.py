"""Raw mail bytes -> what the line service's ``read`` shows (``list``'s lines: summary.py).

``render_message`` turns a (possibly partial) message into header lines, the readable body text
and an attachment list.
Everything is pure and never raises: real mail is malformed in every way imaginable, and a user
reading it deserves the best readable version rather than an error.
"""

from __future__ import annotations

import email
import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from html.parser import HTMLParser

from mailsocketd.mail.text.headers import (
    clean_line,
    clean_lines,
    decode_base64,
    decode_header,
    decode_text,
    fit,
    header_params,
)

__all__ = ["human_size", "render_message"]

HEADER_COLUMNS = 2000
NAME_COLUMNS = 200
MAX_ATTACHMENTS = 100
MAX_PARTS = 1000
HTML_MARKUP_FACTOR = 2
_HTML_CHUNK = 65536
_UNITS = ("KB", "MB", "GB", "TB")


def human_size(n: int) -> str:
    """A byte count for people: ``512 B``, ``2.1 KB``, ``3.0 MB`` (powers of 1024)."""
    if n < 1024:
        return f"{max(n, 0)} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 1023.95 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


# -- read: structure ------------------------------------------------------------------------

def _parse(raw: bytes) -> Message:
    """The MIME tree; compat32 keeps raw 8-bit header bytes (as surrogate escapes) and
    tolerates every malformation we tried.  Nesting deep enough to exhaust the parser's recursion
    falls back to the headers and the body as one text."""
    try:
        return email.message_from_bytes(raw, policy=compat32)
    except RecursionError:
        return BytesParser(policy=compat32).parsebytes(raw, headersonly=True)


def _raw(part: Message, name: str) -> bytes | None:
    """The first ``name`` header of ``part`` as the bytes that were on the wire."""
    for key, value in part.raw_items():
        if key.lower() == name:
            return str(value).encode("utf-8", "surrogateescape")
    return None


def _content_type(part: Message) -> tuple[str, dict[str, str]]:
    """The part's MIME type (lowercased; the default when missing or invalid) and parameters."""
    ctype, params = header_params(_raw(part, "content-type"))
    if ctype.count("/") != 1 or " " in ctype:
        ctype = part.get_default_type()  # text/plain, or message/rfc822 in a digest
    elif ctype.startswith("multipart/") and not part.is_multipart():
        ctype = "text/plain"  # a multipart the parser could not split: show its text
    return ctype, params


def _leaves(message: Message) -> list[Message]:
    """Leaf parts in document order; attached messages count as leaves.  Iterative, so no
    structure can exhaust the stack; all of them, so that what is counted is counted in full
    (their number is bounded by the fetched size, ``read_limit``; only the first MAX_PARTS are
    looked at closely)."""
    leaves: list[Message] = []
    stack = [message]
    while stack:
        part = stack.pop()
        if part is not message and _content_type(part)[0].startswith("message/"):
            leaves.append(part)
        elif part.is_multipart():
            stack.extend(reversed(_children(part)))
        else:
            leaves.append(part)
    return leaves


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()  # a multipart's payload is its list of parts
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _base64_text(part: Message) -> str | None:
    """A base64 leaf's payload as transmitted; None when the email package cannot give it: it
    decodes a payload holding 8-bit bytes with the part's charset label, which may be garbage."""
    try:
        payload = part.get_payload()
    except (ValueError, LookupError, TypeError):
        return None
    return payload if isinstance(payload, str) else None


def _filename(part: Message) -> str:
    disposition = header_params(_raw(part, "content-disposition"))[1]
    return disposition.get("filename") or _content_type(part)[1].get("name", "")


def _is_attachment_like(part: Message) -> bool:
    disposition = header_params(_raw(part, "content-disposition"))[0]
    return disposition == "attachment" or bool(_filename(part))


def _transfer_encoding(part: Message) -> bytes:
    return (_raw(part, "content-transfer-encoding") or b"").strip().lower()


def _payload_bytes(part: Message) -> bytes:
    """The part's content with its transfer encoding undone.  Base64 is decoded leniently (bad
    padding, stray characters, a payload cut short by a partial fetch); the email package's
    decoder would hand back the encoded text for a cut-short payload."""
    if part.is_multipart():
        return b""
    text = _base64_text(part) if _transfer_encoding(part) == b"base64" else None
    if text is not None:
        return decode_base64(text.encode("ascii", "ignore"))
    data = part.get_payload(decode=True)  # raw 8-bit bytes, or quoted-printable/uuencode undone
    return data if isinstance(data, bytes) else b""


def _choose_body(leaves: list[Message]) -> Message | None:
    """The first text/plain part that is not an attachment, else the first such HTML part; an
    empty text/plain placeholder loses to HTML."""
    inline = [p for p in leaves if not _is_attachment_like(p)]
    plain = [p for p in inline if _content_type(p)[0] == "text/plain"]
    html = [p for p in inline if _content_type(p)[0] == "text/html"]
    if plain and (not html or _payload_bytes(plain[0]).strip()):
        return plain[0]
    return html[0] if html else None


# -- read: text -----------------------------------------------------------------------------

_SKIPPED = {"script", "style", "title", "template"}
_BLOCKS = {"div", "tr", "li", "ul", "ol", "dl", "dt", "dd", "table", "section", "article",
           "header", "footer", "nav", "aside", "main", "form", "fieldset", "figure", "center",
           "address", "details", "summary", "tbody", "thead", "tfoot", "caption", "hr"}
_PARAGRAPHS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}


class _HtmlText(HTMLParser):
    """HTML -> readable text: script/style dropped, blocks and ``<br>`` become line breaks,
    links keep their URL, entities decoded, whitespace collapsed (kept in ``<pre>``).  Stops
    collecting after ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.breaks = 0
        self.skipping = 0
        self.preformatted = 0
        self.links: list[tuple[str, int]] = []

    @property
    def full(self) -> bool:
        return self.size > self.limit

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.breaks and self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            text = "\n" * self.breaks + text
        self.breaks = 0
        self.parts.append(text)
        self.size += len(text)

    def _at_line_start(self) -> bool:
        return bool(self.breaks) or not self.parts or self.parts[-1].endswith((" ", "\n"))

    def _emit_word(self, text: str) -> None:
        """``text`` separated from what came before on the same line by one space."""
        self._emit(text if self._at_line_start() else " " + text)

    def _break(self, count: int, add: bool = False) -> None:
        self.breaks = min(2, self.breaks + count) if add else max(self.breaks, count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        elif tag == "br":
            self._break(1, add=True)
        elif tag in _PARAGRAPHS or tag in _BLOCKS:
            self._break(2 if tag in _PARAGRAPHS else 1)
            if tag == "pre":
                self.preformatted += 1
            elif tag == "li":
                self._emit("- ")
        elif tag in ("td", "th") and not self._at_line_start():
            self._emit(" ")
        elif tag == "img":
            alt = clean_line(dict(attrs).get("alt") or "")
            if alt:
                self._emit_word(f"[{alt}]")
        elif tag == "a" and len(self.links) < 100:
            self.links.append((dict(attrs).get("href") or "", len(self.parts)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _PARAGRAPHS or tag in _BLOCKS:
            self._break(2 if tag in _PARAGRAPHS else 1)
            if tag == "pre":
                self.preformatted = max(0, self.preformatted - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            self._link(href.strip(), "".join(self.parts[start:]))

    def _link(self, href: str, text: str) -> None:
        shown = href.removeprefix("mailto:")
        if not href or href.startswith(("#", "javascript:", "data:", "cid:")) or shown in text:
            return
        self._emit_word(f"<{fit(clean_line(href), 300)}>")

    def handle_data(self, data: str) -> None:
        if self.skipping or self.full:
            return
        if not self.preformatted:
            data = re.sub(r"\s+", " ", data)
            if self._at_line_start():
                data = data.lstrip(" ")
        self._emit(data)


_MARKUP = re.compile(r"<!--|<[A-Za-z/!?][^<>]{0,4096}>|<")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


def _well_formed(html: str) -> str:
    """HTML in which every tag is complete, short and quote-balanced, comments and declarations
    gone and every other ``<`` escaped.  html.parser (before Python 3.11.13) takes quadratic or
    worse time on unterminated tags and attribute quotes (a 100 KB mail: minutes); this pass is
    linear, each character being scanned from at most one ``<``."""
    out: list[str] = []
    position = 0
    while (match := _MARKUP.search(html, position)) is not None:
        out.append(html[position:match.start()])
        markup = match[0]
        position = match.end()
        if markup == "<!--":
            end = html.find("-->", position)
            position = len(html) if end < 0 else end + 3  # unclosed: hides the rest, as in browsers
        elif markup == "<":
            out.append("&lt;")
        elif markup[1] not in "!?":  # doctype and processing instructions show nothing
            unbalanced = any(q in _QUOTED.sub("", markup) for q in "\"'")
            out.append(markup.replace('"', "").replace("'", "") if unbalanced else markup)
    out.append(html[position:])
    return "".join(out)


def html_to_text(html: str, limit: int) -> tuple[str, bool]:
    """HTML as readable text, and whether all of it was converted.  Conversion stops after
    ``limit`` characters of text or ``HTML_MARKUP_FACTOR * limit`` characters of markup, since
    html.parser costs about a microsecond per character; ``read`` renders in the reactor's
    thread pool, so this does not stall other clients."""
    budget = max(HTML_MARKUP_FACTOR * limit, _HTML_CHUNK)
    markup = _well_formed(html[:budget])
    parser = _HtmlText(limit)
    for start in range(0, len(markup), _HTML_CHUNK):
        parser.feed(markup[start:start + _HTML_CHUNK])
        if parser.full:
            break
    complete = not parser.full and len(html) <= budget
    if complete:
        parser.close()
    return re.sub(r" +\n", "\n", "".join(parser.parts)).rstrip(), complete


def _body_lines(part: Message | None, text_limit: int) -> list[str]:
    """The chosen part as text lines, cut after ``text_limit`` characters with a note."""
    if part is None:
        return ["(this message has no text part)"]
    ctype, params = _content_type(part)
    text = decode_text(_payload_bytes(part), params.get("charset"))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    complete = True
    if ctype == "text/html":
        text, complete = html_to_text(text, text_limit)
    total = len(text)
    lines = clean_lines(text[:text_limit])
    while lines and not lines[-1].strip():
        lines.pop()
    if not complete:
        lines.append(f"[cut: showing the first {min(total, text_limit)} characters]")
    elif total > text_limit:
        lines.append(f"[cut: showing {text_limit} of {total} characters]")
    return lines


# -- read: attachments ----------------------------------------------------------------------

def _encoded_length(part: Message) -> int:
    """Bytes of a part as transmitted (headers and leaves; boundaries ignored)."""
    total = 0
    stack = [part]
    while stack:
        node = stack.pop()
        total += sum(len(key) + len(str(value)) + 4 for key, value in node.raw_items())
        if node.is_multipart():
            stack.extend(_children(node))
        else:
            total += _decoded_size(node)
    return total


def _decoded_size(part: Message) -> int:
    """The size of the part's content; base64 is estimated (3/4 of its characters) rather than
    decoded, the rest is cheap to measure exactly."""
    if part.is_multipart():
        return sum(_encoded_length(child) for child in _children(part))
    text = _base64_text(part) if _transfer_encoding(part) == b"base64" else None
    if text is not None:
        return (len(text) - sum(text.count(c) for c in "\r\n \t=")) * 3 // 4
    return len(_payload_bytes(part))


def _is_attachment(part: Message, body: Message | None) -> bool:
    return part is not body and (  # the cheaper test first: most attachments are not text
        not _content_type(part)[0].startswith("text/") or _is_attachment_like(part))


def _attachment_lines(leaves: list[Message], body: Message | None) -> list[str]:
    """The first MAX_ATTACHMENTS attachments, then how many more there are: all of them
    counted, not only those among the first MAX_PARTS parts."""
    attachments = [p for p in leaves[:MAX_PARTS] if _is_attachment(p, body)]
    if not attachments:
        return []
    lines = ["", "attachments:"]
    for number, part in enumerate(attachments[:MAX_ATTACHMENTS], 1):
        name = fit(_filename(part), NAME_COLUMNS) or "(no name)"
        ctype = fit(_content_type(part)[0], NAME_COLUMNS)
        lines.append(f"  {number}. {name} ({ctype}, {human_size(_decoded_size(part))})")
    more = len(attachments) - MAX_ATTACHMENTS
    more += sum(1 for p in leaves[MAX_PARTS:] if _is_attachment(p, body))
    if more > 0:
        lines.append(f"  ... and {more} more")
    return lines


_SHOWN_HEADERS = (("from", "(no sender)"), ("to", "(none)"), ("cc", None), ("date", "(no date)"),
                  ("subject", "(no subject)"))


def render_message(raw: bytes, *, text_limit: int, total_size: int | None = None) -> list[str]:
    """What ``read`` shows, as lines without line ends: From/To/Cc/Date/Subject decoded, a blank
    line, the body text (text/plain preferred, else HTML made readable), an ``attachments:``
    list, and a note when ``raw`` is only the first part of a ``total_size`` message."""
    message = _parse(raw)
    charset = _content_type(message)[1].get("charset")
    lines: list[str] = []
    for name, missing in _SHOWN_HEADERS:
        value = _raw(message, name)
        if value is not None or missing is not None:
            shown = decode_header(value, fallback_charset=charset) if value is not None else ""
            lines.append(f"{name.title()}: {fit(shown or str(missing), HEADER_COLUMNS)}")
    lines.append("")
    leaves = _leaves(message)
    body = _choose_body(leaves[:MAX_PARTS])
    lines.extend(_body_lines(body, text_limit))
    lines.extend(_attachment_lines(leaves, body))
    if total_size is not None and total_size > len(raw):
        lines.append(f"[message is {human_size(total_size)}; "
                     f"only the first {human_size(len(raw))} were fetched]")
    return lines
