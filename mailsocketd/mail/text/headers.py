"""Mail header text -> one clean line of UTF-8, charsets with real-world fallbacks, and terminal
column arithmetic.

Real mail mixes RFC 2047 encoded words in many charsets, raw 8-bit bytes, charset labels that
lie and broken encodings.  Everything here is pure and total: any input gives text, and the text
never holds a control, line-break or bidi/format character (Unicode Cc/Cf/Zl/Zp, lone
surrogates), so a terminal shows exactly what the mail says and nothing can rewrite the screen.
``clean_line`` and ``clean_lines`` are the mail-display settings of ``mailsocketd.clean``.
"""

from __future__ import annotations

import binascii
import codecs
import itertools
import re
import unicodedata
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from mailsocketd.clean import REPLACEMENT, clean

__all__ = [
    "REPLACEMENT",
    "clean_line",
    "clean_lines",
    "codec_chain",
    "decode_base64",
    "decode_header",
    "decode_text",
    "display_width",
    "fit",
    "header_params",
    "pad",
]

ELLIPSIS = "\u2026"
_MAX_LABEL = 64
_MAX_PARAMS = 64
_MAX_PARAM_VALUE = 1000


def clean_line(text: str) -> str:
    """``text`` as one safe line: whitespace runs become one space, controls and format
    characters are replaced (U+FFFD) or, when invisible anyway, dropped."""
    return clean(text, layout="fold", drop_invisible=True)


def clean_lines(text: str) -> list[str]:
    """Body text as safe lines: CRLF/CR/other line separators split lines, tabs stay, other
    controls and format characters are replaced or dropped like in ``clean_line``."""
    return clean(text, layout="lines", drop_invisible=True).split("\n")


# -- charsets -------------------------------------------------------------------------------

# Labels seen in mail that Python does not know, or knows under a narrower codec.
_LABELS = {
    "x-sjis": "cp932", "x-ms-cp932": "cp932", "windows-31j": "cp932", "x-euc-kr": "cp949",
    "x-windows-949": "cp949", "windows-949": "cp949", "x-gbk": "gb18030", "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs", "x-euc-jp": "euc_jp", "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8", "macintosh": "mac_roman", "x-mac-roman": "mac_roman",
    "iso-8859-8-i": "iso8859-8", "x-cp1250": "cp1250", "x-cp1251": "cp1251",
}
# Python codec -> the superset that mail software really writes under that label (WHATWG-style).
_SUPERSETS = {
    "ascii": "cp1252", "iso8859-1": "cp1252", "iso8859-9": "cp1254", "iso8859-11": "cp874",
    "tis-620": "cp874", "euc_kr": "cp949", "gb2312": "gb18030", "gbk": "gb18030",
    "big5": "big5hkscs", "shift_jis": "cp932", "iso2022_jp": "iso2022_jp_ext",
}
# Further codecs to try, in order, when the first cannot decode the bytes strictly.
_ALTERNATIVES = {
    "iso2022_jp_ext": ("iso2022_jp_2004", "iso2022_jp_2"),
    "big5hkscs": ("cp950",),
    "euc_jp": ("euc_jis_2004",),
}
_JIS_CHAIN = ("iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_2")
_REFUSED = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}
_JIS_ESCAPE = re.compile(rb"\x1b[$(][@BJI]")


@lru_cache(maxsize=256)
def _chain(label: str) -> tuple[str, ...]:
    """``codec_chain`` for a label of sane length (cached: mail repeats a few labels)."""
    name = label.strip().strip("\"'").lower().split("*", 1)[0]
    result: list[str] = []
    try:
        first = codecs.lookup(_LABELS.get(name, name)).name
    except (LookupError, ValueError):
        return ()
    first = _SUPERSETS.get(first, first)
    for codec in (first, *_ALTERNATIVES.get(first, ())):
        info = codecs.lookup(codec)
        if info.name not in _REFUSED and getattr(info, "_is_text_encoding", True):
            result.append(info.name)
    return tuple(result)


def codec_chain(label: str | None) -> tuple[str, ...]:
    """Python codecs to try, best first, for a MIME charset label; ``()`` when unknown."""
    if not label or len(label) > _MAX_LABEL:
        return ()
    return _chain(label)


_CUT_SHORT = ("unexpected end of data", "incomplete multibyte sequence")


def _strict(data: bytes, codec: str) -> str | None:
    """Decode strictly; a multibyte sequence cut off at the very end of text that is clearly in
    this codec (a partial fetch) costs one replacement character, not the whole text.  None when
    the bytes do not fit."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        if e.reason not in _CUT_SHORT or e.start < len(data) - 4 or data[:e.start].isascii():
            return None
        try:
            return data[:e.start].decode(codec) + REPLACEMENT
        except UnicodeError:
            return None
    except (UnicodeError, LookupError):
        return None


def _non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


def _mostly_utf8(data: bytes) -> str | None:
    """UTF-8 with a few bad bytes (a Latin-1 quote pasted into UTF-8 mail) stays UTF-8."""
    text = data.decode("utf-8", "replace")
    bad = text.count(REPLACEMENT)
    good = _non_ascii(text) - bad
    return text if good and good >= bad else None


def _guess_eight_bit(data: bytes) -> str:
    """The codec for unlabelled 8-bit bytes that are not UTF-8: Korean or Chinese when the text
    reads as such (EUC shape, mostly Hangul / Han), else Windows-1252."""
    probe = data[:4096]
    for codec, superset, wanted in (("euc_kr", "cp949", ("\uac00", "\ud7a3")),
                                    ("gb2312", "gb18030", ("\u3000", "\u9fff"))):
        try:
            text = codecs.getincrementaldecoder(codec)().decode(probe, final=False)
        except UnicodeDecodeError:
            continue
        wide = [c for c in text if c > "\x7f"]
        hits = sum(1 for c in wide if wanted[0] <= c <= wanted[1] or "\uff00" <= c <= "\uffef")
        if wide and hits >= 0.8 * len(wide):
            return superset
    return "cp1252"


def _jis_via_cp932(data: bytes) -> str | None:
    """7-bit ISO-2022-JP with the vendor rows Python's codecs refuse (the NEC circled digits
    that Japanese mail is full of): rewrite each JIS X 0208 pair as Shift_JIS, decode cp932."""
    out = bytearray()
    mode = b"B"
    for chunk in re.split(rb"(\x1b[$(][@BJI])", data):
        if _JIS_ESCAPE.fullmatch(chunk):
            mode = b"K" if chunk[1:2] == b"$" else chunk[2:3]
            continue
        if mode == b"K":
            for j1, j2 in zip(chunk[::2], chunk[1::2], strict=False):
                s1 = (j1 + 1) // 2 + (0x70 if j1 <= 0x5E else 0xB0)
                s2 = j2 + (0x7E if j1 % 2 == 0 else 0x1F if j2 < 0x60 else 0x20)
                out += bytes((s1 & 0xFF, s2 & 0xFF))
        elif mode == b"I":
            out += bytes((b | 0x80) & 0xFF for b in chunk)
        else:
            out += chunk
    return _strict(bytes(out), "cp932")


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Header or body bytes labelled ``charset`` (possibly wrong or unknown) -> str; never raises.

    Order: 7-bit ISO-2022-JP when its escapes are there; UTF-8 (a single-byte label on valid
    UTF-8 is a lie, and real text in another charset is almost never valid UTF-8); the label's
    codecs; mostly-valid UTF-8; a guess for unlabelled bytes; the label with replacements."""
    if not data:
        return ""
    chain = codec_chain(charset)
    seven_bit = data.isascii()
    jis = seven_bit and _JIS_ESCAPE.search(data) is not None
    wide = bool(chain) and chain[0].startswith(("utf-16", "utf-32"))
    seven_bit_label = bool(chain) and chain[0].startswith(("iso2022", "hz", "utf-7"))
    if seven_bit and not (jis or wide or seven_bit_label):
        return data.decode("ascii")
    if jis:  # 7-bit: UTF-8 would "succeed" and show the escapes as garbage
        attempts = _JIS_CHAIN + chain
    else:
        attempts = (chain if seven_bit else ()) + (() if wide else ("utf-8",)) + chain
    for codec in dict.fromkeys(attempts):
        text = _strict(data, codec)
        if text is not None:
            return text
    text = _jis_via_cp932(data) if jis else None if wide else _mostly_utf8(data)
    if text is not None:
        return text
    if jis:
        fallback = _JIS_CHAIN[0]
    elif chain and chain[0] != "utf-8" and not seven_bit_label:
        fallback = chain[0]
    else:
        fallback = _guess_eight_bit(data)
    try:
        return data.decode(fallback, "replace")
    except (UnicodeError, LookupError):
        return data.decode("cp1252", "replace")


# -- headers --------------------------------------------------------------------------------

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?]*)\?=")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*=*")


def decode_base64(data: bytes) -> bytes:
    """Base64 with missing or extra padding and stray characters, as mail has it."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        clean = clean[: len(clean) - 1] if len(clean) % 4 == 1 else clean
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def _word_bytes(encoding: str, text: str) -> bytes | None:
    if encoding in "qQ":
        return binascii.a2b_qp(text.encode("utf-8", "surrogateescape"), header=True)
    if not _BASE64_TEXT.fullmatch(text):
        return None  # not base64 at all: show the word as it is
    return decode_base64(text.encode("ascii"))


def _decode_words(text: str) -> str:
    """Decode the RFC 2047 words in ``text``.  Whitespace between adjacent words goes, and runs of
    words in one charset are joined before decoding, since mailers split characters across them."""
    pieces: list[str] = []
    run: list[tuple[str, bytes]] = []
    position = 0

    def flush() -> None:
        for label, group in itertools.groupby(run, key=lambda word: word[0].lower()):
            pieces.append(decode_text(b"".join(data for _, data in group), label))
        run.clear()

    for match in _ENCODED_WORD.finditer(text):
        gap = text[position:match.start()]
        data = _word_bytes(match[2], match[3])
        if data is None:
            flush()
            pieces.append(gap + match[0])
        else:
            if gap and not (run and gap.isspace()):
                flush()
                pieces.append(gap)
            run.append((match[1], data))
        position = match.end()
    flush()
    pieces.append(text[position:])
    return "".join(pieces)


def header_text(raw: str | bytes | None, fallback_charset: str | None = None) -> str:
    """A raw header value as unfolded text with its encoded words still encoded.  A str holding
    only code points below 256 (or surrogate escapes) is taken as bytes that were decoded with
    ``charmap``/Latin-1 (Twisted IMAP) or ``surrogateescape`` (the email package)."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        try:
            data = raw.encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:
            return _FOLD.sub("", raw)
    else:
        data = raw
    return _FOLD.sub("", decode_text(data, fallback_charset))


def decode_words(text: str) -> str:
    """Text that may hold encoded words (a display name, a parameter) -> one clean line."""
    return clean_line(_decode_words(text))


def decode_header(raw: str | bytes | None, *, fallback_charset: str | None = None) -> str:
    """RFC 2047 encoded words and raw 8-bit bytes -> one clean line of UTF-8 text.

    Charset aliases are widened to what mail really uses (ks_c_5601-1987/euc-kr -> cp949,
    gb2312/gbk -> gb18030, shift_jis -> cp932, big5 -> big5hkscs, latin-1 -> cp1252 ...).  Raw
    8-bit bytes are read as UTF-8, else ``fallback_charset`` (the message's body charset, when
    known), else a guess.  Never raises."""
    if (isinstance(raw, bytes) and fallback_charset is None and raw.isascii()
            and b"=?" not in raw and b"\x1b" not in raw):
        return clean_line(raw.decode("ascii"))  # what the steps below make of plain ASCII
    return decode_words(header_text(raw, fallback_charset))


_PARAM = re.compile(r';\s*([A-Za-z0-9!#$%&*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_SECTION = re.compile(r"([^*]+)\*(\d{1,3})?(\*)?")


def _param_pieces(rest: str) -> dict[str, list[tuple[int, bool, str]]]:
    pieces: dict[str, list[tuple[int, bool, str]]] = {}
    for match in itertools.islice(_PARAM.finditer(rest), _MAX_PARAMS):
        name, value = match[1].lower(), match[2].strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:].removesuffix('"'))
        section = _SECTION.fullmatch(name)
        if section is None:
            pieces.setdefault(name, []).append((-1, False, value))
        else:
            index = int(section[2]) if section[2] else 0
            extended = section[3] is not None or section[2] is None
            pieces.setdefault(section[1], []).append((index, extended, value))
    return pieces


def _join_rfc2231(sections: list[tuple[int, bool, str]]) -> str:
    """``name*0*=utf-8''%E2%82%AC; name*1=.pdf`` -> the decoded value."""
    charset = None
    data = bytearray()
    for index, extended, value in sorted(sections)[:100]:
        text = value
        if extended and index == 0 and value.count("'") >= 2:
            charset, _, text = value.split("'", 2)
        data += unquote_to_bytes(text) if extended else text.encode("utf-8", "surrogateescape")
    return decode_text(bytes(data), charset)


def header_params(raw: str | bytes | None) -> tuple[str, dict[str, str]]:
    """``type/sub; name="x"; filename*=UTF-8''%E2%82%AC.pdf`` -> ("type/sub", {name: value}),
    the main value lowercased, parameter values decoded (quoting, RFC 2231, encoded words,
    raw 8-bit) and cleaned."""
    text = header_text(raw)
    main, _, rest = text.partition(";")
    params: dict[str, str] = {}
    for name, sections in _param_pieces(";" + rest).items():
        extended = [section for section in sections if section[0] >= 0]
        value = _join_rfc2231(extended) if extended else _decode_words(sections[0][2])
        params[name] = clean_line(value)[:_MAX_PARAM_VALUE]
    return clean_line(main).lower(), params


# -- terminal columns -----------------------------------------------------------------------

@lru_cache(maxsize=8192)
def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf", "Cc"):
        return 0
    if "\u1160" <= char <= "\u11ff":  # Hangul medial vowels and final consonants join the lead
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide/fullwidth 2, combining marks 0."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(_char_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending with an ellipsis when cut (no padding)."""
    if width <= 0:
        return ""
    if display_width(text) <= width:
        return text
    used = 0
    kept: list[str] = []
    for char in text:
        used += _char_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept).rstrip() + ELLIPSIS


def pad(text: str, width: int) -> str:
    """``fit(text, width)`` padded with spaces to exactly ``width`` columns."""
    fitted = fit(text, width)
    return fitted + " " * (width - display_width(fitted))
