"""The one cleaner of foreign text shown on a terminal or written to a log line.

Mail headers and bodies, server replies, a program's error output and what a client typed all
reach a screen or a log line, and none of it may rewrite the screen, break the line or hide
what it says.  One set of characters is unsafe everywhere: Unicode Cc (controls, tabs and line
ends included), Cf (format: bidi overrides, zero-width characters), Cs (lone surrogates), Zl and
Zp (line and paragraph separators).  Other characters, unassigned (Cn) and private-use (Co)
ones included, stay: they cannot move the cursor, and a newer emoji than this Python knows is
still the sender's text.

Callers differ only in what ``clean`` takes as parameters: what an unsafe character becomes, how
whitespace and line ends are treated, whether invisible characters are dropped, and a length
limit.  This module is pure (no Twisted), so the line service and the mail side both use it.
The settings in use, each a one-line function at its caller:

* mail text shown to a user (``mail.text.headers.clean_line`` / ``clean_lines``): U+FFFD,
  ``fold`` (a header) or ``lines`` (a body), invisible characters dropped;
* a log or status line (``mail.errors.clean_text``, and ``plugin_text`` on top of it): a space,
  ``strip``, 200 characters;
* an echo of what a client typed (``line.replies.printable``): ``?``, 40 characters;
* a bad address quoted in an error (``mail.text.compose``): ``escaped``, 80 characters; the
  Subject of a message being sent: a space, ``fold``.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable
from typing import Literal

__all__ = ["INVISIBLE", "LINE_BREAKS", "REPLACEMENT", "UNSAFE_CATEGORIES", "Layout", "clean",
           "escaped"]

REPLACEMENT = "\ufffd"
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Invisible and zero-width: dropping them changes nothing a reader could see.
INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
ELLIPSIS = "..."

# How whitespace and line ends come out (see ``clean``).
Layout = Literal["keep", "strip", "fold", "lines"]


def _unsafe_ranges() -> str:
    """A regex class of every code point in UNSAFE_CATEGORIES (planes 0, 1 and 14 hold all)."""
    points = (cp for cp in itertools.chain(range(0x20000), range(0xE0000, 0xE1000))
              if unicodedata.category(chr(cp)) in UNSAFE_CATEGORIES)
    ranges: list[list[int]] = []
    for cp in points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


_UNSAFE = re.compile(f"[{_unsafe_ranges()}]")


def _fixed(layout: Layout, drop_invisible: bool) -> dict[str, str]:
    """The unsafe characters that do not take the caller's replacement, and what they become."""
    fixed = dict.fromkeys(INVISIBLE, "") if drop_invisible else {}
    if layout == "fold":
        fixed.update(dict.fromkeys("\t" + LINE_BREAKS, " "))
    elif layout == "lines":
        fixed.update({"\t": "\t", **dict.fromkeys(LINE_BREAKS, "\n")})
    return fixed


_FIXED = {(layout, drop): _fixed(layout, drop)
          for layout in ("keep", "strip", "fold", "lines") for drop in (False, True)}


def escaped(char: str) -> str:
    """A replacement that shows the character as Python writes it: ``\\x1b``, ``\\u202e``,
    ``\\r`` (for an error that must say exactly what was wrong with the input)."""
    return ascii(char)[1:-1]


def clean(text: str | bytes, *, replacement: str | Callable[[str], str] = REPLACEMENT,
          layout: Layout = "keep", drop_invisible: bool = False,
          limit: int | None = None) -> str:
    """``text`` with no unsafe character left (see the module docstring).

    Bytes are read as UTF-8 (bad bytes become U+FFFD).  ``replacement`` is what an unsafe
    character becomes: a string (U+FFFD for mail text, ``" "`` for a log line, ``"?"`` for an
    echo) or a function of the character (``escaped``).  ``layout``:

    * ``"keep"``: nothing else changes; tabs and line ends are unsafe like any control;
    * ``"strip"``: the same, then whitespace at either end is removed;
    * ``"fold"``: tabs and line ends count as spaces, every run of whitespace becomes one
      space, none at either end (a header, a Subject);
    * ``"lines"``: CRLF and the other line ends become ``"\\n"``, tabs stay (a body, to split).

    ``drop_invisible`` removes the zero-width and soft-hyphen characters (INVISIBLE) instead of
    replacing them: right for showing content, wrong for an echo of bad input, where the user
    must see that something is there.  Over ``limit`` characters (counted after cleaning), the
    text is cut to ``limit`` ending in ``...``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if layout == "lines":
        text = text.replace("\r\n", "\n")
    if not text.isprintable():  # every unsafe character is non-printable: the fast path
        fixed = _FIXED[layout, drop_invisible]

        def substitute(match: re.Match[str]) -> str:
            char = match.group()
            kept = fixed.get(char)
            if kept is not None:
                return kept
            return replacement if isinstance(replacement, str) else replacement(char)

        text = _UNSAFE.sub(substitute, text)
    if layout == "fold":
        text = " ".join(text.split())
    elif layout == "strip":
        text = text.strip()
    if limit is not None and len(text) > limit:
        cut = max(limit - len(ELLIPSIS), 0)
        text = text[:cut] + ELLIPSIS[:limit - cut]
    return text
