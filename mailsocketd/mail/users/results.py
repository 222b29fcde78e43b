"""What a line user's mail operations return (Listing, Deletion) and raise (MailErrors whose
``str()`` is one line for the user), and the check every mailbox name passes first."""

from __future__ import annotations

from dataclasses import dataclass

from mailsocketd.mail.errors import MailError, ServerRefused, clean_text
from mailsocketd.mail.imap.commands import ListedMessage

__all__ = ["MAX_NAME", "Deletion", "Listing", "MailboxError", "NoSuchMessage", "SessionLost",
           "UidValidityChanged", "check_mailbox_name", "refusal"]

MAX_NAME = 1000  # characters in a mailbox name


class UidValidityChanged(MailError):
    """The mailbox's UIDVALIDITY differs from the one ``list`` saw: its UIDs mean other mail."""


class NoSuchMessage(MailError):
    """The UID (or none of the UIDs) exists in the mailbox."""


class MailboxError(MailError):
    """A bad or nonexistent mailbox (the server's refusal, cleaned)."""


class SessionLost(MailError):
    """The IMAP connection is gone (or was logged out): log in again."""


@dataclass(frozen=True)
class Listing:
    """The newest messages of a mailbox (``messages`` newest first)."""

    mailbox: str
    uidvalidity: int
    exists: int
    messages: tuple[ListedMessage, ...]


@dataclass(frozen=True)
class Deletion:
    """What ``delete`` did: which UIDs it removed, which did not exist, and how."""

    deleted: tuple[int, ...]
    missing: tuple[int, ...]
    method: str  # "expunged" | "moved to TRASH" (its name) | "marked deleted"


def check_mailbox_name(mailbox: str) -> str:
    """The name, or MailboxError if it cannot go into a command (empty, control characters)."""
    if not mailbox or len(mailbox) > MAX_NAME:
        raise MailboxError(f"bad mailbox name (1 to {MAX_NAME} characters)")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in mailbox):
        raise MailboxError("bad mailbox name: control characters are not allowed")
    return mailbox


def refusal(mailbox: str, error: ServerRefused) -> MailboxError:
    """The server's NO/BAD about a mailbox, as one line without the response code."""
    text = clean_text(error.text)
    if text.startswith("[") and "]" in text:
        text = text.split("]", 1)[1].strip()
    return MailboxError(f"mailbox {clean_text(mailbox, 100)}: {text or error.status}")
