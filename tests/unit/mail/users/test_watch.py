"""The watch depends on its session only through the WatchedSession protocol."""

from __future__ import annotations

import ast
from pathlib import Path

from mailsocketd.mail.users import session, watch


def imported_modules(module):
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_watch_imports_nothing_of_the_session():
    assert not {m for m in imported_modules(watch) if m.endswith("users.session")}


def test_the_session_offers_what_the_watch_needs_and_not_its_lock():
    wanted = {name for name in vars(watch.WatchedSession) if not name.startswith("_")}
    assert wanted == {"alive", "selected", "select", "status", "settle", "exclusive",
                      "if_free"}
    assert wanted <= set(dir(session.UserSession))
    assert not {"acquire", "release", "busy"} & set(dir(session.UserSession))
