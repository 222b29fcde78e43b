"""The mail corpus (tests/corpus/*.eml) and checks shared by the tests of ``list`` and ``read``."""

# ruff: noqa: RUF001 - real-world Unicode text (dashes, curly quotes, fullwidth forms) is the point

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.eml"))
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
CET = "CET-1CEST,M3.5.0,M10.5.0/3"  # POSIX rule: no tz database needed

# The decoded display name of From and the Subject of each corpus message (long-subject.eml:
# tests of its own).
SUMMARIES = {
    "utf8-base64-subject.eml": ("Jürgen Groß", "Grüße aus Köln – 東京 🎉"),
    "utf8-q-subject.eml": ("Zoë Saldaña", "Réunion café à 10 h"),
    "iso-8859-1.eml": ("François Müller", "Café crème für Sébastien"),
    "iso-8859-15.eml": ("Kassenwart", "Beitrag: 100 € für Œuvre"),
    "windows-1251.eml": ("Иван Петров", "Привет, мир! Отчёт за ноябрь"),
    "windows-1252.eml": ("Renée O’Connor", "“Smart quotes” – €5 … done"),
    "koi8-r.eml": ("Сергей", "Счёт на оплату"),
    "euc-kr.eml": ("김철수", "안녕하세요 회의 일정 안내"),
    "ks_c_5601-1987.eml": ("이영희", "똠방각하 견적서"),
    "iso-2022-jp.eml": ("山田太郎", "会議の件について"),
    "gb2312.eml": ("王喆", "你好，世界：会议通知"),
    "big5.eml": ("陳大文", "測試郵件：報價單"),
    "shift_jis.eml": ("鈴木花子", "①見積書の送付"),
    "split-encoded-words.eml": ("José Muñoz", "Re: [list] Grüße ☃ 日本 (fwd) end"),
    "raw-8bit-utf8-subject.eml": ("Märta Sjöberg", "Räksmörgås für alle – 今日は"),
    "raw-8bit-latin1-from.eml": ("José Müller", "Rückfrage zur Lieferung"),
    "raw-8bit-euc-kr-from.eml": ("박지성", "주간 보고서 제출"),
    "quoted-printable-body.eml": ("QP Tester", "Quoted-printable body"),
    "base64-body.eml": ("B64 Tester", "Base64 body"),
    "alternative.eml": ("Shop", "Text and HTML"),
    "html-only.eml": ("Reports", "HTML only"),
    "mixed-attachments.eml": ("Accounts", "Invoice with attachments"),
    "nested-multipart.eml": ("Nested", "Nested multipart"),
    "forwarded-rfc822.eml": ("Forwarder", "Fwd: The original"),
    "missing-headers.eml": ("", ""),
    "bad-date.eml": ("Sloppy", "Bad date"),
    "broken-encoded-words.eml": ("Broken", "=?utf-8?B?not base64!?= and =?utf-8?Q?unterminated"),
    "unknown-charset.eml": ("René", "café crème"),
    "charset-lie.eml": ("Liar", "Ünïcödé lie"),
    "charset-lie-latin1.eml": ("Liar Two", "Grüße"),
    "dot-lines.eml": ("Dots", "Dots"),
    "control-characters.eml": ("Mallory \ufffd[2J\ufffd",
                               "Invoice \ufffd[31mred\ufffd[0m \ufffdgpj.exe\ufffd Injected: yes"),
}


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def imap_header(raw: bytes) -> bytes:
    """What ``BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT CONTENT-TYPE)]`` returns for a message:
    those fields (folds kept) in their original order, then an empty line."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    fields = re.findall(rb"^(?:date|from|subject|content-type):.*?(?:\r?\n(?=[ \t]).*?)*(?=\r?\n|\Z)",
                        head, re.MULTILINE | re.IGNORECASE)
    return b"".join(field + b"\r\n" for field in fields) + b"\r\n"


def assert_safe(lines: list[str]) -> None:
    """No control, format, surrogate or line-break character (tabs aside) in any line."""
    for line in lines:
        bad = [c for c in line if unicodedata.category(c) in UNSAFE and c != "\t"]
        assert not bad, (line, bad)
