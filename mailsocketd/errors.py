"""Failures a user may read, shared by the line service and the mail side.

``UserError`` is the base of every failure whose message is meant for the person at the other
end: the line service's ``CommandError`` (the user's own mistake) and the mail side's
``MailError`` (a mail server's refusal, a timeout).  Its ``str()`` is one clean line.  The line
service's one failure->reply place handles exactly this type, so it needs nothing of the mail
side; the mail bridge (``line.mail``) makes other mail-side failures (a lost connection, a TLS
error) into a UserError with a description first.  Anything else is a bug of ours: it is
logged with its traceback and the user reads only ``INTERNAL_ERROR_TEXT``.
"""

from __future__ import annotations

__all__ = ["INTERNAL_ERROR_TEXT", "UserError"]

# What a user is told of a failure that is a bug of ours; the traceback goes to the log.
INTERNAL_ERROR_TEXT = "internal error (the server logged the details)"


class UserError(Exception):
    """A failure whose ``str()`` is a line fit for the user (and for the log).

    The line service answers it with ``error: ``, its text; with ``close`` set it then closes
    the connection.
    """

    close: bool = False
