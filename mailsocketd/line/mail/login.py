"""``login`` and ``logout``, and the end of a user's IMAP session however it comes (logout,
the line connection closing, the IMAP session lost, the daemon stopping).

Apart from the reading commands because a login is policy, not mail: cleartext refusal, the
session caps and the two login throttles, all checked before the IMAP server is asked.
"""

from __future__ import annotations

import functools

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from mailsocketd.line.mail.state import NOT_CONFIGURED, SHUTTING_DOWN, BridgeState, MailUser
from mailsocketd.line.mail.throttle import MAX_DELAY, client_key, user_key
from mailsocketd.line.replies import CommandError, Reply, printable
from mailsocketd.line.session import Session
from mailsocketd.mail.errors import AuthFailed, clean_text
from mailsocketd.mail.imap.client import ALERT_LIMIT
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.users.session import UserSession
from mailsocketd.net import is_local

__all__ = ["LoginCommands"]


class LoginCommands(BridgeState):
    """The login and logout handlers of MailBridge, and the ends of its users' sessions."""

    def _login_refusal(self, session: Session) -> str | None:
        if self.imap is None:
            return NOT_CONFIGURED
        if self._stopping:
            return SHUTTING_DOWN
        if not (session.secure or is_local(session.host) or self.line.allow_cleartext_login):
            return ("login refused: this connection is neither encrypted nor local, so the "
                    "password would cross the network in clear; use the server's TLS listener")
        user = session.user
        if isinstance(user, MailUser) and not user.imap.alive:
            session.user = None  # lost (and pushed): a new login replaces it
        elif user is not None:
            return f"already logged in as {printable(user.name)}; 'logout' first"
        return None

    def _throttled(self, client: str, name: str) -> str | None:
        """Why the failures and attempts under way of this client or user name refuse one
        more; None when they do not, and then the attempt is reserved in both throttles."""
        wait = self.throttle.locked_for(client)
        if wait > 0:
            return (f"too many failed logins from your address; try again in "
                    f"{int(wait) + 1} s")
        if not self.throttle.reserve(client):
            return ("too many logins from your address are waiting for the mail server; "
                    "try again when they are answered")
        if self.line.login_user_failures == 0:
            return None
        wait = self.user_throttle.locked_for(name)
        if wait > 0:
            self.throttle.release(client)
            return f"too many failed logins for this user name; try again in {int(wait) + 1} s"
        if not self.user_throttle.reserve(name):
            self.throttle.release(client)
            return ("too many logins for this user name are waiting for the mail server; "
                    "try again when they are answered")
        return None

    def _session_cap(self, name: str) -> str | None:
        """Why one more IMAP session (for the user name key ``name``) is refused, if it is:
        the sessions logged in and being opened count, per user and in total."""
        users = self._live_users()
        under_way = self._logins_under_way
        if len(users) + sum(under_way.values()) >= self.line.mail_sessions:
            return (f"too many mail sessions on this server ({self.line.mail_sessions} at "
                    "most); try again later")
        mine = sum(1 for u in users if user_key(u.name) == name) + under_way.get(name, 0)
        if mine >= self.line.mail_sessions_per_user:
            return (f"too many mail sessions for this user ({self.line.mail_sessions_per_user} "
                    "at most); log out of another first")
        return None

    async def log_in(self, session: Session, user: str, password: str) -> Reply:
        """``login USER PASSWORD``: the password is the rest of the line, as typed."""
        refusal = self._login_refusal(session)
        client, name = client_key(session.host, session.uid), user_key(user)
        refusal = refusal or self._session_cap(name) or self._throttled(client, name)
        if refusal is not None:
            self.logins["refused"] += 1
            raise CommandError(refusal)
        secret = Secret(password.encode("utf-8"))
        self._logins_under_way[name] = self._logins_under_way.get(name, 0) + 1
        try:
            imap = await self.opener(self._imap(), user, secret,
                                     None if session.host == "unix" else session.host)
        except AuthFailed as e:
            self.logins["failed"] += 1
            await self._failed_login(session, client, name, user, str(e))
            raise CommandError("login failed: wrong user name or password") from None
        except BaseException:
            self.logins["error"] += 1
            self._release(client, name)
            raise
        finally:
            left = self._logins_under_way.pop(name) - 1
            if left:
                self._logins_under_way[name] = left
        self._release(client, name)
        mail_user = MailUser(user, secret, imap)
        if session.closed or self._stopping:  # the client or the daemon went meanwhile
            self.logins["error"] += 1
            self._log_out_of_imap(mail_user, "connection closed during login")
            raise CommandError(SHUTTING_DOWN if self._stopping else "connection closed")
        session.user = mail_user
        self.logins["ok"] += 1
        if self._session_closed not in session.on_close:
            session.on_close.append(self._session_closed)
        imap.on_lost = functools.partial(self._lost, session)
        imap.listen_for_alerts(functools.partial(self._alert, session, imap))
        self.log.info("{peer}: {user} logged in", peer=session.peer, user=printable(user),
                      event="login")
        return Reply(f"ok logged in as {printable(user)}")

    def _release(self, client: str, name: str) -> None:
        """A reserved attempt ended without a failed login (it succeeded, or broke)."""
        self.throttle.release(client)
        if self.line.login_user_failures:
            self.user_throttle.release(name)

    async def _failed_login(self, session: Session, client: str, name: str, user: str,
                            reason: str) -> None:
        delay = self.throttle.failed(client, reserved=True)
        if self.line.login_user_failures:
            delay = max(delay, self.user_throttle.failed(name, reserved=True))
        self.log.warn("{peer}: login failed for {user}: {reason}", peer=session.peer,
                      user=printable(user), reason=clean_text(reason), event="login_failed")
        locked = self.throttle.locked_for(client)
        if locked > 0:
            self.log.warn("{host}: {count} failed logins; refusing logins from it for "
                          "{seconds:.0f} s", host=client, count=self.throttle.limit,
                          seconds=locked, event="login_lockout")
        if self.line.login_user_failures and self.user_throttle.locked_for(name) > 0:
            self.log.warn("user name {user}: {count} failed logins; refusing it for "
                          "{seconds:.0f} s", user=printable(name),
                          count=self.user_throttle.limit,
                          seconds=self.user_throttle.locked_for(name),
                          event="login_user_lockout")
        await deferLater(self.clock, min(delay, MAX_DELAY), lambda: None)

    def _lost(self, session: Session, reason: str) -> None:
        """The IMAP session died under a logged-in user: say so in a pushed ``*`` line (it may
        come between a command and its reply), after ``* watch ended`` if it watched (Dovecot
        ends a session whose selected mailbox another client deleted); the user stays on the
        session, dead, so the next mail command answers ``error: the mail session was lost``."""
        user = session.user
        if not isinstance(user, MailUser):
            return
        self.log.info("{peer}: mail session of {user} lost: {reason}", peer=session.peer,
                      user=printable(user.name), reason=reason, event="mail_session_lost")
        if user.watching is not None:  # every watch ends with "* watch ended" or "ok not ..."
            user.watching = None
            session.push("* watch ended: the mail session was lost")
        session.push(f"* mail session lost ({clean_text(reason)}); login again")

    def _alert(self, session: Session, imap: UserSession, text: str) -> None:
        """An ``[ALERT]`` from the mail server: the user must see it (RFC 3501 7.1), in a
        pushed ``*`` line (it may come before the reply of the command that brought it)."""
        user = session.user
        if isinstance(user, MailUser) and user.imap is imap and not session.closed:
            session.push(f"* mail server alert: {clean_text(text, ALERT_LIMIT)}")

    def log_out(self, session: Session) -> Reply:
        self._end(session, "logout")
        return Reply("ok logged out")

    # -- the end of a session ----------------------------------------------------------

    def _session_closed(self, session: Session) -> None:
        self._end(session, "connection closed")

    def _end(self, session: Session, why: str) -> Deferred[None]:
        """Forget the session's user and log it out of IMAP; fires when it is out."""
        user, session.user = session.user, None
        if not isinstance(user, MailUser):
            return succeed(None)
        return self._log_out_of_imap(user, why)

    def _log_out_of_imap(self, user: MailUser, why: str) -> Deferred[None]:
        """LOGOUT in the background; a failure is logged, never raised."""
        user.imap.on_lost = None
        done = Deferred.fromCoroutine(user.imap.logout())
        return done.addErrback(self._logout_failed, user.name, why)

    def _logout_failed(self, failure: Failure, user: str, why: str) -> None:
        self.log.info("logout of {user} ({why}) failed: {error}", user=user, why=why,
                      error=clean_text(str(failure.value)))
