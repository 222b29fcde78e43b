"""One log vocabulary: every event name the code emits is documented, under the one key."""

from __future__ import annotations

import re
from pathlib import Path

# The checkout's files, not the installed copy (CI installs the package into a venv).
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mailsocketd"
DOCS = ROOT / "docs"
EMITTED = re.compile(r"""\bevent=["']([a-z_]+)["']|_events\.(?:info|warn|error)\(\s*["']([a-z_]+)""")


def emitted_names() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for keyword, events in EMITTED.findall(path.read_text()):
            names.add(keyword or events)
    return names


def test_the_code_emits_events() -> None:
    """The pattern below must keep finding them, or the next test proves nothing."""
    assert {"command", "connection_closed", "check", "login", "idle_fallback"} <= emitted_names()


def test_every_event_name_is_documented() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", (DOCS / "configuration.md").read_text()))
    documented |= set(re.findall(r"^\| `([a-z_]+)`", (DOCS / "mail-checks.md").read_text(),
                                 re.MULTILINE))
    missing = emitted_names() - documented
    assert not missing, f"events logged but not documented in docs/configuration.md: {missing}"


def test_the_mail_side_uses_the_same_key() -> None:
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if "mail_event" in p.read_text()]
    assert not offenders
