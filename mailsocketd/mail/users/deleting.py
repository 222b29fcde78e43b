"""How ``delete`` removes messages by UID, and where it finds the Trash.

With UIDPLUS: ``UID STORE +FLAGS (\\Deleted)`` then ``UID EXPUNGE`` of exactly those UIDs.
Without it a bare EXPUNGE would also remove what another client marked \\Deleted, so the
messages are moved to the Trash (UID MOVE, or UID COPY and marked \\Deleted), and only marked
\\Deleted when there is no Trash (or they are in it).

The Trash is ``[imap] trash`` when set; else the mailbox LIST flags ``\\Trash`` (SPECIAL-USE,
RFC 6154); else the first of the usual names that exists, tried in the server's personal
namespace (NAMESPACE, RFC 2342: ``INBOX.`` on Cyrus and Courier as Debian sets them up) and
with its hierarchy delimiter: ``Trash``, ``Deleted Items``, ``Deleted Messages`` (so
``INBOX.Trash``, ``Trash``, ``INBOX/Trash``...), then ``[Gmail]/Trash``; exact names first,
then the same names in any case.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailsocketd.mail.errors import MailError, ServerRefused, clean_text
from mailsocketd.mail.imap.commands import MailboxEntry, UserImapClient, mailbox_key

__all__ = ["TRASH_NAMES", "find_trash", "remove", "trash_candidates"]

TRASH_NAMES = ("Trash", "Deleted Items", "Deleted Messages")
WHOLE_NAMES = ("[Gmail]/Trash", "[Google Mail]/Trash")


def trash_candidates(prefix: str, delimiter: str | None) -> list[str]:
    """The usual names of a Trash, most likely first, for a server whose personal namespace
    has this prefix (``INBOX.``, or "") and whose hierarchy has this delimiter."""
    names: list[str] = []
    for base in TRASH_NAMES:
        for name in (prefix + base, base,
                     f"INBOX{delimiter}{base}" if delimiter else base):
            if name not in names:
                names.append(name)
    return names + [n for n in WHOLE_NAMES if n not in names]


def find_trash(entries: Sequence[MailboxEntry], prefix: str = "") -> str | None:
    """The Trash among the server's mailboxes (see the module docstring), None if none."""
    usable = [e for e in entries if e.name is not None and e.selectable]
    for entry in usable:
        if "\\trash" in {f.lower() for f in entry.flags}:
            return entry.name
    delimiter = next((e.delimiter for e in entries if e.delimiter), None)
    names = {e.name: e.name for e in usable if e.name is not None}
    folded = {name.casefold(): name for name in reversed(list(names))}
    candidates = trash_candidates(prefix, delimiter)
    for name in candidates:
        if name in names:
            return name
    for name in candidates:
        if name.casefold() in folded:
            return folded[name.casefold()]
    return None


async def remove(client: UserImapClient, capabilities: frozenset[bytes], mailbox: str,
                 uids: list[int], trash: str | None) -> str:
    """Delete these existing UIDs of the selected ``mailbox``; how, for the reply
    ("expunged", "moved to INBOX.Trash", "marked deleted").  ``trash`` is where they go without
    UIDPLUS (None: nowhere, only mark them)."""
    if b"UIDPLUS" in capabilities:
        await client.uid_store_deleted(uids)
        await client.uid_expunge(uids)
        return "expunged"
    if trash is not None and mailbox_key(trash) != mailbox_key(mailbox):
        try:
            if b"MOVE" in capabilities:
                await client.uid_transfer(b"MOVE", uids, trash)
            else:
                await client.uid_transfer(b"COPY", uids, trash)
        except ServerRefused as e:
            raise MailError(f"cannot move the messages to the Trash ({clean_text(trash, 100)}"
                            f"): {clean_text(e.text, 200) or e.status}; nothing deleted"
                            ) from None
        if b"MOVE" not in capabilities:
            await client.uid_store_deleted(uids)
        return f"moved to {trash}"
    await client.uid_store_deleted(uids)
    return "marked deleted"
