"""What the mail side needs of the reactor, as one typing Protocol.

A zope interface cannot name several reactor interfaces at once, so ``MailReactor`` does:
connecting with its timeouts (``mail.tls.ConnectReactor``) and running a program
(``mail.process.ProcessReactor``: password commands, the new-mail hook, sendmail).  The global
reactor provides it; tests pass ``MemoryReactorClock`` or a small fake.
"""

from __future__ import annotations

from typing import Protocol

from mailsocketd.mail.process import ProcessReactor
from mailsocketd.mail.tls import ConnectReactor

__all__ = ["MailReactor"]


class MailReactor(ConnectReactor, ProcessReactor, Protocol):
    """Connecting (and its clock) and running programs."""
