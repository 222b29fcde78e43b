"""The mail bridge: the line service's mail commands (login, logout, check, mailboxes, list,
read, delete, send, watch) and its users' IMAP sessions, as one Service.

A line client logs in with its own IMAP credentials; the IMAP session (``UserSession``) lives
as long as the line connection, until ``logout``, or until the daemon stops: ``stopService``
logs every user out of IMAP, within ``line.close_grace`` seconds.  The logged-in user is the
line Session's ``user`` (a MailUser) and nothing else, so login gating, ``status`` and
``logout`` read one state.

The handlers only translate: typed arguments (split and checked by the command table) to calls,
results to replies.  Mail-side failures become UserErrors in one place, ``as_user_error``; the
line server turns those into ``error:`` lines and needs nothing of the mail side.

This module holds what is the bridge's alone: the one command table, that translation, the
status line and the shutdown.  The handlers live by concern in login.py, reading.py,
sending.py and watching.py, mixins over one state (state.py).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsocketd.line.commands import Arg, Command
from mailsocketd.line.mail.login import LoginCommands
from mailsocketd.line.mail.reading import DEFAULT_COUNT, ReadingCommands
from mailsocketd.line.mail.sending import SendingCommands
from mailsocketd.line.mail.state import SHUTTING_DOWN, MailUser
from mailsocketd.line.mail.watching import WatchingCommands
from mailsocketd.line.replies import CommandError, Reply
from mailsocketd.line.session import Session
from mailsocketd.mail.errors import MailError, clean_text, describe_failure, failure_kind
from mailsocketd.mail.tls import CaFileError

__all__ = ["MailBridge", "as_user_error"]

CA_FILE_BROKEN = ("cannot reach the mail server: this server's TLS settings are broken "
                  "(its ca_file; the details are in its log)")
_log = Logger()


def as_user_error(error: Exception) -> Exception:
    """The one place a mail-side failure becomes a line for the user: a MailError, or a
    failure the mail side can name (a timeout, a lost connection, TLS), as a CommandError with
    ``describe_failure``'s text.  Anything else is returned as it is: a bug, which the line
    server logs with its traceback."""
    if isinstance(error, CommandError):
        return error
    if isinstance(error, CaFileError):  # the server's own file: its path is for the log only
        _log.error("{error}", error=clean_text(str(error)), event="ca_file_unusable")
        return CommandError(CA_FILE_BROKEN)
    failure = Failure(error)
    if isinstance(error, MailError) or failure_kind(failure) != "other":
        return CommandError(describe_failure(failure))
    return error


def translated(handler: Callable[..., Awaitable[Reply]]
               ) -> Callable[..., Coroutine[Any, Any, Reply]]:
    """``handler`` with its mail-side failures made UserErrors (see ``as_user_error``)."""
    @functools.wraps(handler)  # the table reads the handler's parameters through it
    async def run(session: Session, **args: Any) -> Reply:
        try:
            return await handler(session, **args)
        except Exception as e:
            user_error = as_user_error(e)
            if user_error is e:
                raise
            raise user_error from e
    return run


class MailBridge(LoginCommands, ReadingCommands, SendingCommands, WatchingCommands, Service):
    """The mail commands' handlers, the login throttle, and the IMAP logout of every user on
    shutdown.  ``sessions`` is the line server's set of open sessions (wired after both are
    built): the logged-in users are those whose ``user`` is a MailUser."""

    def commands(self) -> list[Command]:
        """The mail commands, for the command table."""
        mailbox = Arg("mailbox", kind="rest", optional=True)
        table = [
            Command(name="login", handler=self.log_in, summary="log in with your mail user "
                    "and password", args=(Arg("user"), Arg("password", kind="rest"))),
            Command(name="logout", handler=self.log_out, summary="end your mail session",
                    needs_login=True),
            Command(name="check", handler=self.check_mailbox, args=(mailbox,),
                    summary="message, unseen and recent counts", needs_login=True),
            Command(name="mailboxes", handler=self.list_mailboxes,
                    summary="your mailboxes with their counts", needs_login=True),
            Command(name="list", handler=self.list_messages,
                    args=(Arg("count", kind="number", optional=True), mailbox),
                    summary=f"the newest COUNT ({DEFAULT_COUNT}) messages", needs_login=True),
            Command(name="read", handler=self.read_message,
                    args=(Arg("uid", kind="uid"), mailbox),
                    summary="a message as text; marks it seen", needs_login=True),
            Command(name="delete", handler=self.delete_messages,
                    args=(Arg("uids", kind="uid", repeat=True, shown="UID"),),
                    summary="delete messages of the current mailbox", needs_login=True),
            Command(name="send", handler=self.send_message, needs_login=True, reads_input=True,
                    args=(Arg("to", kind="rest", optional=True, shown="TO[,TO...]",
                              about="the addresses, separated by commas or spaces (or give "
                              "them in To:/Cc:/Bcc: lines)"),),
                    summary="write and send a message, end with '.'"),
            Command(name="watch", handler=self.watch_mailbox,
                    args=(Arg("switch", choices=("on", "off")), mailbox),
                    summary="push '* new mail' lines", needs_login=True),
        ]
        # Listed by help only while [imap] is configured (a reload may add or remove it); they
        # still answer, that mail is not configured.
        return [replace(command, listed=self.mail_configured,
                        handler=translated(command.handler)
                        if inspect.iscoroutinefunction(command.handler) else command.handler)
                for command in table]

    def mail_configured(self) -> bool:
        """Whether ``[imap]`` is configured (users may log in)."""
        return self.imap is not None

    def status_lines(self, viewer: str = "local") -> list[str]:
        """The mail sessions' numbers (the same for every viewer: no names, no addresses)."""
        users = self._live_users()
        watching = sum(1 for u in users if u.watching is not None)
        return [f"mail sessions: {len(users)} logged in, {watching} watching; "
                f"failed logins on record from {self.throttle.addresses()} addresses"]

    # -- shutdown ----------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Log every user out of IMAP; fires when all are out or after ``line.close_grace``
        seconds, whichever is first (a mail server that does not answer cannot hold up the
        daemon's exit)."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        logouts = [self._end(s, SHUTTING_DOWN) for s in list(self.sessions)
                   if isinstance(s.user, MailUser)]
        if not logouts:
            return succeed(None)
        self.log.info("logging {count} mail users out", count=len(logouts),
                      event="mail_logout_all")
        return self._within_grace(logouts)

    def _within_grace(self, logouts: list[Deferred[None]]) -> Deferred[None]:
        done: Deferred[None] = Deferred()

        def finish(timed_out: bool) -> None:
            if done.called:
                return
            if timer.active():
                timer.cancel()
            if timed_out:
                left = sum(1 for d in logouts if not d.called)
                self.log.warn("{count} mail logouts unfinished after {grace:g} s; stopping "
                              "anyway", count=left, grace=self.line.close_grace,
                              event="mail_logout_timeout")
            done.callback(None)

        timer = self.clock.callLater(self.line.close_grace, finish, True)
        DeferredList(logouts).addCallback(lambda _: finish(False))
        return done
