"""find_trash: SPECIAL-USE first, then the usual names in the server's namespace."""

from __future__ import annotations

import pytest

from mailsocketd.mail.imap.commands import MailboxEntry
from mailsocketd.mail.users.deleting import find_trash, trash_candidates


def entries(*names, delimiter=".", special=None):
    return [MailboxEntry(n, n.encode(), frozenset({"\\Trash"} if n == special else ()),
                         delimiter) for n in names]


@pytest.mark.parametrize(("names", "prefix", "delimiter", "found"), [
    (("INBOX", "Trash", "Bin"), "", "/", "Trash"),
    (("INBOX", "INBOX.Trash", "INBOX.Work"), "INBOX.", ".", "INBOX.Trash"),
    (("INBOX", "INBOX.Trash", "Trash"), "INBOX.", ".", "INBOX.Trash"),  # the namespace's first
    (("INBOX", "INBOX.Trash", "Trash"), "", ".", "Trash"),
    (("INBOX", "INBOX.Trash"), "", ".", "INBOX.Trash"),  # no NAMESPACE: INBOX + delimiter
    (("INBOX", "INBOX/Trash"), "", "/", "INBOX/Trash"),
    (("INBOX", "Deleted Items"), "", "/", "Deleted Items"),
    (("INBOX", "Deleted Messages"), "", "/", "Deleted Messages"),
    (("INBOX", "[Gmail]", "[Gmail]/Trash"), "", "/", "[Gmail]/Trash"),
    (("INBOX", "INBOX.trash"), "INBOX.", ".", "INBOX.trash"),  # any case, exact names first
    (("INBOX", "TRASH", "Trash"), "", "/", "Trash"),
    (("INBOX", "Work", "Trashcan"), "", "/", None),
])
def test_usual_names(names, prefix, delimiter, found):
    assert find_trash(entries(*names, delimiter=delimiter), prefix) == found


def test_special_use_comes_first_and_noselect_is_never_the_trash():
    found = entries("INBOX", "Trash", "Papierkorb", special="Papierkorb")
    assert find_trash(found, "") == "Papierkorb"
    gone = [MailboxEntry("Trash", b"Trash", frozenset({"\\Noselect"}), "/")]
    assert find_trash(gone, "") is None


def test_candidates_have_no_duplicates():
    names = trash_candidates("", ".")
    assert len(names) == len(set(names)) and names[:2] == ["Trash", "INBOX.Trash"]
