"""Header decoding: RFC 2047 in the charsets mail really uses, raw 8-bit, lies and breakage,
parameters (RFC 2231), control characters, and terminal column arithmetic."""
# ruff: noqa: RUF001 - real-world Unicode text (dashes, curly quotes, fullwidth forms) is the point

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailcorpus import UNSAFE, corpus

from mailsocketd.mail.text.headers import (
    codec_chain,
    decode_header,
    decode_text,
    decode_words,
    display_width,
    fit,
    header_params,
    header_text,
    pad,
)


def unsafe_characters(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE]


def raw_header(name: str, field: str) -> bytes:
    """The raw (folded) value of the first ``field`` header of a corpus file."""
    raw = corpus(name)
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    match = re.search(rb"^" + field.encode() + rb":[ \t]*(.*?)(?=\r?\n(?![ \t])|\Z)", head,
                      re.MULTILINE | re.DOTALL | re.IGNORECASE)
    assert match, f"{name} has no {field}"
    return match[1]


@pytest.mark.parametrize(("encoded", "text"), [
    ("=?EUC-KR?B?vsiz58fPvLy/5A==?=", "안녕하세요"),
    ("=?ks_c_5601-1987?B?jGO55rCix88=?=", "똠방각하"),  # 똠 is not in EUC-KR: needs cp949
    ("=?ISO-2022-JP?B?GyRCMnE1RCRON28bKEI=?=", "会議の件"),
    ("=?GB2312?B?xOO6w4a0?=", "你好喆"),  # 喆 is GBK, not GB2312: needs gb18030
    ("=?Big5?B?tPq41bZspfM=?=", "測試郵件"),
    ("=?Shift_JIS?B?h0CMqZDP?=", "①見積"),  # ① is an NEC extension: needs cp932
    ("=?windows-1251?B?z/Do4uXy?=", "Привет"),
    ("=?KOI8-R?B?8NLJ18XU?=", "Привет"),
    ("=?UTF-8?B?R3LDvMOfZSDwn46J?=", "Grüße 🎉"),
    ("=?utf-8?q?R=C3=A9union_caf=C3=A9?=", "Réunion café"),
    ("=?ISO-8859-1?Q?Caf=E9_cr=E8me?=", "Café crème"),
    ("=?iso-8859-15?Q?100_=A4?=", "100 €"),
    ("=?windows-1252?Q?=93quoted=94_=80?=", "“quoted” €"),
    ("=?iso-8859-1?Q?=93smart=94?=", "“smart”"),  # Latin-1 labels mean Windows-1252
    ("=?utf-8*en?Q?language_tag?=", "language tag"),  # RFC 2231 language suffix
])
def test_encoded_words_in_many_charsets(encoded, text):
    assert decode_header(encoded) == text


@pytest.mark.parametrize(("label", "codec"), [
    ("ks_c_5601-1987", "cp949"), ("EUC-KR", "cp949"), ("gb2312", "gb18030"),
    ("GBK", "gb18030"), ("iso-2022-jp", "iso2022_jp_ext"), ("Shift_JIS", "cp932"),
    ("x-sjis", "cp932"), ("big5", "big5hkscs"), ("windows-1251", "cp1251"),
    ("koi8-u", "koi8-u"), ("us-ascii", "cp1252"), ("ISO-8859-1", "cp1252"),
    ('"utf-8"', "utf-8"),
])
def test_charset_aliases_widen_to_what_mailers_write(label, codec):
    assert codec_chain(label)[0] == codec


@pytest.mark.parametrize("label", ["x-unknown", "", None, "base64", "unicode_escape",
                                   "punycode", "a\x00b", "x" * 500])
def test_unknown_and_dangerous_labels_have_no_codec(label):
    assert codec_chain(label) == ()


def test_words_split_across_folds_and_characters_split_across_words():
    assert decode_header(raw_header("split-encoded-words.eml", "Subject")) == \
        "Re: [list] Grüße ☃ 日本 (fwd) end"
    assert decode_header(raw_header("split-encoded-words.eml", "From")) == \
        "José Muñoz <jose@example.test>"


def test_whitespace_between_words_goes_but_around_text_stays():
    assert decode_header("=?utf-8?Q?a?= \r\n\t =?utf-8?Q?b?=") == "ab"
    assert decode_header("x =?utf-8?Q?a?= y  \t z") == "x a y z"
    assert decode_header("=?utf-8?Q?a?==?utf-8?Q?b?=") == "ab"


def test_broken_words_stay_as_written():
    assert decode_header(raw_header("broken-encoded-words.eml", "Subject")) == \
        "=?utf-8?B?not base64!?= and =?utf-8?Q?unterminated"


def test_bad_base64_padding_is_forgiven():
    assert decode_header("=?utf-8?B?R3LDvMOfZQ?=") == "Grüße"


def test_unknown_charset_falls_back_to_utf8_then_an_eight_bit_guess():
    assert decode_header(raw_header("unknown-charset.eml", "Subject")) == "café crème"
    assert decode_header("=?x-unknown?Q?caf=E9?=") == "café"


def test_labels_that_lie():
    assert decode_header(raw_header("charset-lie.eml", "Subject")) == "Ünïcödé lie"
    assert decode_header(raw_header("charset-lie-latin1.eml", "Subject")) == "Grüße"


@pytest.mark.parametrize(("name", "field", "text"), [
    ("raw-8bit-utf8-subject.eml", "Subject", "Räksmörgås für alle – 今日は"),
    ("raw-8bit-latin1-from.eml", "From", "José Müller <jose.mueller@example.test>"),
    ("raw-8bit-euc-kr-from.eml", "From", "박지성 <park@example.test>"),
    ("raw-8bit-euc-kr-from.eml", "Subject", "주간 보고서 제출"),
])
def test_raw_eight_bit_headers(name, field, text):
    assert decode_header(raw_header(name, field)) == text


def test_raw_eight_bit_uses_the_fallback_charset_when_given():
    raw = "Привет".encode("koi8-r")
    assert decode_header(raw, fallback_charset="koi8-r") == "Привет"
    assert decode_header(raw) != "Привет"  # without the hint it is only a guess


def test_unlabelled_gb2312_reads_as_chinese():
    assert decode_header(b"\xc4\xe3\xba\xc3\xca\xc0\xbd\xe7") == "你好世界"


def test_str_input_is_charmap_decoded_bytes():
    """Twisted IMAP hands literals over decoded with charmap (Latin-1)."""
    assert decode_header("Grüße".encode().decode("charmap")) == "Grüße"
    assert decode_header("Jos\xe9") == "José"
    assert decode_header("Grüße".encode().decode("ascii", "surrogateescape")) == "Grüße"
    assert decode_header("日本 =?utf-8?Q?caf=C3=A9?=") == "日本 café"


def test_controls_line_breaks_and_bidi_overrides_never_reach_the_output():
    text = decode_header(raw_header("control-characters.eml", "Subject"))
    assert text == "Invoice \ufffd[31mred\ufffd[0m \ufffdgpj.exe\ufffd Injected: yes"
    assert decode_header("a\r\nInjected: b\x00c") == "a Injected: b\ufffdc"


def test_invisible_format_characters_are_dropped_not_replaced():
    assert decode_header("=?utf-8?Q?a=C2=ADb=E2=80=8Bc=EF=BB=BF?=") == "abc"


def test_none_and_empty():
    assert decode_header(None) == decode_header(b"") == decode_header("") == ""


def test_long_header_is_decoded_whole():
    text = decode_header(raw_header("long-subject.eml", "Subject"))
    assert text.startswith("This is a very long subject line that goes on")
    assert text.endswith("with Ümlauts and 漢字 for good measure")
    assert len(text) > 400 and "  " not in text


# -- decode_text ----------------------------------------------------------------------------

def test_a_multibyte_character_cut_off_at_the_end_costs_one_replacement():
    assert decode_text("日本語テキスト".encode()[:-1]) == "日本語テキス\ufffd"
    assert decode_text("안녕하세요".encode("cp949")[:-1], "euc-kr") == "안녕하세\ufffd"


def test_cut_utf8_under_a_single_byte_label_stays_utf8():
    assert decode_text("Grüß".encode()[:-1], "us-ascii") == "Grü\ufffd"


def test_latin1_ending_in_a_utf8_lead_byte_is_not_mistaken_for_cut_utf8():
    assert decode_text(b"caf\xe9") == "café"
    assert decode_text(b"caf\xe9", "utf-8") == "café"


def test_mostly_utf8_with_a_stray_byte_stays_utf8():
    assert decode_text("Grüße aus Köln".encode() + b" \x93x\x94") == "Grüße aus Köln \ufffdx\ufffd"


def test_seven_bit_iso_2022_jp_with_nec_row_13():
    assert decode_text(b"\x1b$B5DBj\x1b(B \x1b$B-!-\"\x1b(B", "iso-2022-jp") == "議題 ①②"
    assert decode_text(b"\x1b$B2q5D\x1b(B") == "会議"  # unlabelled JIS is still recognised


def test_utf16_body_is_not_read_as_ascii():
    assert decode_text("hé".encode("utf-16"), "utf-16") == "hé"


def test_decode_text_never_raises_and_returns_str():
    for label in (None, "utf-8", "iso-2022-jp", "utf-16", "utf-7", "cp949", "x-unknown"):
        for data in (b"\xff\xfe\xfd", b"\x1b$B\xff", b"+AGQ-\x80", bytes(range(256))):
            assert isinstance(decode_text(data, label), str)


# -- parameters -----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf", {"filename": "€ rates.pdf"}),
    ("attachment; filename*0*=utf-8''Notiz%20f%C3%BCr; filename*1=\" Anna.txt\"",
     {"filename": "Notiz für Anna.txt"}),
    ("attachment; filename*=iso-8859-1'de'Gr%FC%DFe.txt", {"filename": "Grüße.txt"}),
    ("attachment; filename*=x-unknown''caf%C3%A9.txt", {"filename": "café.txt"}),
    ('image/png; name="=?UTF-8?B?QmlsZCDDvC5wbmc=?="', {"name": "Bild ü.png"}),
    ('attachment; filename="a \\"quoted\\" name.txt"', {"filename": 'a "quoted" name.txt'}),
    ('attachment; filename="plain.txt"; filename*=UTF-8\'\'%E2%82%AC.txt',
     {"filename": "€.txt"}),  # RFC 6266: the extended form wins
    ('text/plain; charset="utf-8"; format=flowed', {"charset": "utf-8", "format": "flowed"}),
    ("attachment; filename=\"evil\u202e\r\n.txt\"", {"filename": "evil\ufffd .txt"}),
])
def test_header_params(raw, expected):
    assert header_params(raw)[1] == expected


def test_header_params_main_value_and_raw_eight_bit():
    assert header_params(b"Attachment; filename=\"\xed\x85\x8c\xec\x8a\xa4\xed\x8a\xb8.pdf\"") == (
        "attachment", {"filename": "테스트.pdf"})
    assert header_params(None) == ("", {})


def test_corpus_filenames():
    raw = corpus("mixed-attachments.eml").decode("ascii")
    dispositions = re.findall(r"Content-Disposition: (.*?)\n(?![ \t])", raw, re.DOTALL)
    names = [header_params(d)[1].get("filename") for d in dispositions]
    assert names == ["€ rates 2026.pdf", "Bericht über Qualität.png", "Notiz für Anna.txt"]


# -- columns --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "width"), [
    ("abc", 3), ("한국어", 6), ("ｆｕｌｌ", 8), ("e\u0301", 1), ("🎉", 2), ("", 0), ("a\tb", 2),
    ("\u1100\u1161\u11a8", 2),  # conjoining Hangul jamo make one syllable
])
def test_display_width(text, width):
    assert display_width(text) == width


@pytest.mark.parametrize(("text", "width", "fitted"), [
    ("abcdef", 6, "abcdef"), ("abcdef", 5, "abcd…"), ("abcdef", 1, "…"), ("abcdef", 0, ""),
    ("한국어 텍스트", 7, "한국어…"), ("한국어", 4, "한…"), ("a 한", 3, "a…"),
    ("Lunch on Friday", 9, "Lunch on…"),
])
def test_fit(text, width, fitted):
    assert fit(text, width) == fitted


def test_pad_reaches_exactly_the_width_even_with_wide_characters():
    assert pad("한국어", 7) == "한국어 "
    assert pad("한국어 텍스트", 6) == "한국… "
    assert pad("ab", 5) == "ab   "


# -- properties -----------------------------------------------------------------------------

_words = st.builds(
    lambda charset, enc, payload: f"=?{charset}?{enc}?{payload}?=",
    st.sampled_from(["utf-8", "iso-2022-jp", "euc-kr", "x-unknown", "utf-16", "gb2312", "", "*"]),
    st.sampled_from(["B", "Q", "q", "x"]),
    st.text(alphabet="ABCabc012+/=_?-GyRCMnE1 \x1b\t", max_size=24),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=100),
                 st.lists(st.one_of(_words, st.text(max_size=8)), max_size=8).map(" ".join)))
def test_decode_header_is_total_and_safe(raw):
    text = decode_header(raw)
    assert isinstance(text, str)
    assert not unsafe_characters(text)
    assert text == text.strip() and "  " not in text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_header_params_is_total_and_safe(raw):
    main, params = header_params(b"attachment; " + raw)
    assert not unsafe_characters(main + "".join(params) + "".join(params.values()))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.integers(min_value=0, max_value=50))
def test_fit_and_pad_never_exceed_the_width(text, width):
    assert display_width(fit(text, width)) <= width
    assert display_width(pad(text, width)) == width


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"\r\n ", b"\x1b$B", b"=?", b"?=",
                                 b"=?utf-8?q?caf=C3=A9?=", b"+AGEA-", b"\x7f", b"\x00", b"\xe9"]),
                max_size=10).map(b"".join))
def test_decode_header_of_plain_ascii_is_what_the_full_steps_make(raw):
    assert decode_header(raw) == decode_words(header_text(raw))
