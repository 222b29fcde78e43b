"""The one cleaner: no unsafe character survives any setting, each setting does what its callers
need, and on the text the five former cleaners handled alike it gives what they gave."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailcorpus import UNSAFE

from mailsocketd.clean import (
    INVISIBLE,
    LINE_BREAKS,
    REPLACEMENT,
    UNSAFE_CATEGORIES,
    Layout,
    clean,
    escaped,
)
from mailsocketd.line.replies import printable
from mailsocketd.mail.errors import clean_text
from mailsocketd.mail.text.headers import clean_line, clean_lines

LAYOUTS: tuple[Layout, ...] = ("keep", "strip", "fold", "lines")
HOSTILE = "a\x00b\x1b[2J\r\nc\td\u202eevil\u200bx\u2028y\x85z\ud800\U000e0041"


def unsafe(text, allowed=""):
    return [c for c in text if unicodedata.category(c) in UNSAFE and c not in allowed]


def test_the_tests_and_the_code_agree_on_what_is_unsafe():
    assert UNSAFE_CATEGORIES == UNSAFE  # the tests keep their own copy, as an oracle


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("drop", [False, True])
def test_no_unsafe_character_survives_any_setting(layout, drop):
    for replacement in (REPLACEMENT, " ", "?", escaped):
        text = clean(HOSTILE, replacement=replacement, layout=layout, drop_invisible=drop)
        assert not unsafe(text, "\t\n" if layout == "lines" else ""), (replacement, text)


def test_keep_replaces_each_unsafe_character_and_changes_nothing_else():
    assert clean(HOSTILE, replacement="?") == "a?b?[2J??c?d?evil?x?y?z??"
    assert clean("  caf\u00e9 \u00a0 \U0001f389  ") == "  caf\u00e9 \u00a0 \U0001f389  "


def test_strip_removes_whitespace_at_the_ends_only():
    assert clean("\r\n  a\x07 b \t", replacement=" ", layout="strip") == "a  b"


def test_fold_makes_one_line_with_single_spaces():
    assert clean(" a\r\n\tb  \u2028 c\u00a0\u3000d ", layout="fold") == "a b c d"
    assert clean("a\x1bb", layout="fold") == "a\ufffdb"


def test_lines_keeps_line_structure_and_tabs():
    assert clean("a\r\nb\rc\nd\x0be\u2028f\tg\x00", layout="lines") == "a\nb\nc\nd\ne\nf\tg\ufffd"


def test_invisible_characters_are_dropped_only_when_asked():
    text = "a\u00adb\u200bc\ufeffd"
    assert clean(text, drop_invisible=True) == "abcd"
    assert clean(text, replacement="?") == "a?b?c?d"
    assert all(unicodedata.category(c) == "Cf" for c in INVISIBLE)
    assert all(not c.isprintable() for c in LINE_BREAKS)


def test_escaped_shows_the_character_as_python_writes_it():
    assert clean("a\r\n\x1b\u202e\U000e0041b", replacement=escaped) == (
        "a\\r\\n\\x1b\\u202e\\U000e0041b")


def test_private_use_unassigned_and_wide_characters_stay():
    # U+F8FF is private use (Co), U+0378 unassigned (Cn) in this Python's Unicode: neither can
    # move the cursor, and a newer emoji than Python knows is still the sender's text.
    text = "\uf8ff \u0378 \u6771\u4eac \U0001f389"
    for layout in LAYOUTS:
        assert clean(text, layout=layout) == text


def test_bytes_are_read_as_utf8_with_replacements():
    assert clean(b"caf\xc3\xa9 \xff\x1b", replacement=" ", layout="strip") == "caf\u00e9 \ufffd"


@pytest.mark.parametrize(("limit", "expected"), [
    (None, "abcdefghij"), (10, "abcdefghij"), (9, "abcdef..."), (4, "a..."), (3, "..."),
    (2, ".."), (0, ""),
])
def test_the_limit_counts_after_cleaning_and_ends_with_dots_when_cut(limit, expected):
    assert clean("abcdefghij", limit=limit) == expected
    assert clean("\x1b" * 5, replacement=escaped, limit=10) == "\\x1b\\x1..."


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80), layout=st.sampled_from(LAYOUTS), drop=st.booleans(),
       replacement=st.sampled_from([REPLACEMENT, " ", "?", "", escaped]),
       limit=st.none() | st.integers(min_value=0, max_value=60))
def test_any_text_any_setting_is_safe_and_bounded(text, layout, drop, replacement, limit):
    out = clean(text, replacement=replacement, layout=layout, drop_invisible=drop, limit=limit)
    assert not unsafe(out, "\t\n" if layout == "lines" else "")
    assert limit is None or len(out) <= limit
    if layout == "fold":
        assert out == out.strip() and "  " not in out
    if layout != "lines":
        assert "\n" not in out


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_cleaning_twice_changes_nothing(text):
    for layout in LAYOUTS:
        once = clean(text, layout=layout, drop_invisible=True)
        assert clean(once, layout=layout, drop_invisible=True) == once


# -- the former cleaners, kept as oracles ------------------------------------------------------
# Each is the code that was replaced.  They treated some harmless characters differently (the
# isprintable() ones turned non-ASCII spaces, private-use and unassigned characters into a
# space or an escape; printable() let line separators and lone surrogates through): on text
# without those, the thin callers must give exactly what the old code gave.

def old_clean_text(text, limit=200):
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def old_printable(text, limit=40):
    cleaned = re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", text)
    if not cleaned.isascii():
        cleaned = "".join("?" if unicodedata.category(c) == "Cf" else c for c in cleaned)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def old_shown(text, limit=80):
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def old_one_line(text):
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


# What the old cleaners agreed on: every category but the harmless ones they differed on.
_AGREED = st.characters(exclude_categories=("Co", "Cn", "Zs", "Cs", "Zl", "Zp"))
_AGREED_TEXT = st.text(st.one_of(_AGREED, st.sampled_from(" \t\r\n\x1b\x85\u202e\u200b")),
                       max_size=120)


@settings(max_examples=400, deadline=None)
@given(_AGREED_TEXT, st.integers(min_value=3, max_value=200))
def test_the_thin_callers_give_what_the_old_cleaners_gave(text, limit):
    assert clean_text(text, limit) == old_clean_text(text, limit)
    assert clean_text(text.encode("utf-8"), limit) == old_clean_text(text, limit)
    assert printable(text, limit) == old_printable(text, limit)
    assert clean(text, replacement=escaped, limit=80) == old_shown(text)  # compose's _shown
    assert clean(text, replacement=" ", layout="fold") == old_one_line(text)  # the Subject


def test_header_settings_are_the_mail_display_ones():
    assert clean_line(" a\r\n b\x1b[2J\u200b\u202e ") == "a b\ufffd[2J\ufffd"
    assert clean_lines("a\r\n\tb\u200b\x00\rc") == ["a", "\tb\ufffd", "c"]


def test_the_cleaner_imports_no_twisted():
    code = ("import sys, mailsocketd.clean; "
            "t = sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'); "
            "print(t); sys.exit(1 if t else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
