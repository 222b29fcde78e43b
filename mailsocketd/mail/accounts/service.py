"""The configured accounts under watch: one persistent connection each, in the daemon's reactor.

``AccountsService`` holds one ``AccountWatcher`` per account.  A watcher keeps one connection
through a ClientService (whose retry policy is our ``Backoff``), runs an
``AccountConnection`` on each connection, and records what happens in an ``AccountState``
(the ``status`` lines) and the log.
Stopping logs out politely (bounded by STOP_GRACE), closes the connection and cancels every
timer: retries, heartbeats, timeouts and pending hook runs.

A reload (``AccountsService.reconfigure``) starts the accounts added, stops those removed, and
replaces (logs out, then in again) only those whose settings changed; the others keep their
connection, and those waiting to retry (a long wait after a refused password, say) retry now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.mail.imap4 import IMAP4Exception
from twisted.python.failure import Failure

from mailsocketd.mail.accounts.auth import account_credentials, account_tokens
from mailsocketd.mail.accounts.backoff import Backoff
from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.accounts.connection import AccountConnection
from mailsocketd.mail.accounts.hooks import NewMailHook
from mailsocketd.mail.accounts.state import AccountState, StateName
from mailsocketd.mail.errors import FailureKind, MailError, describe_failure, failure_kind
from mailsocketd.mail.imap.client import ImapClient
from mailsocketd.mail.imap.connect import ImapClientFactory, ImapEndpoint, QuietClientService
from mailsocketd.mail.imap.login import Credentials
from mailsocketd.mail.oauth.tokens import TokenProvider
from mailsocketd.mail.reactor import MailReactor

__all__ = ["STOP_GRACE", "AccountReactor", "AccountWatcher", "AccountsService"]

STOP_GRACE = 3.0
HARD_BACKOFF_KINDS: tuple[FailureKind, ...] = ("auth", "cleartext", "secret")


# What an account needs of the reactor: connecting and its clock, and running
# ``password_command`` and the ``on_new_mail`` hook.
AccountReactor = MailReactor


class AccountWatcher(Service):
    """One account: connection, sessions, reconnection with backoff, state, hook."""

    log = Logger()

    def __init__(self, account: AccountConfig, reactor: AccountReactor,
                 environ: Mapping[str, str] | None = None,
                 endpoint: IStreamClientEndpoint | None = None) -> None:
        self.account = account
        self.reactor = reactor
        clock = IReactorTime(reactor)  # the same object, typed as its users want it
        self.environ = environ
        self.hook = NewMailHook(account, reactor, environ)
        self.state = AccountState(account, clock, on_new_mail=self.hook.notify)
        self.backoff = Backoff(clock)
        self.tokens: TokenProvider | None = None  # made at the first connection, then kept
        self.session: AccountConnection | None = None
        self._session_done: Deferred[None] = succeed(None)
        self._failure: tuple[str, StateName] | None = None
        if endpoint is None:
            endpoint = ImapEndpoint(reactor, account.address, account.tls, account.timeout,
                                    on_attempt=self.attempting, on_failure=self.note_failure)
        factory = ImapClientFactory(self._client, on_connected=self.connected)
        self.connector = QuietClientService(endpoint, factory, retryPolicy=self._retry_delay,
                                       clock=clock)
        self.setName(account.name)  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.state.set_state("connecting")
        self.connector.startService()

    def retry_now(self) -> bool:
        """If waiting to reconnect (backing off), stop waiting and connect now: a reload may
        have fixed what failed (the password file, the server).  Says whether it did."""
        if not self.running or self.state.state not in ("backing-off", "auth-failed"):
            return False
        connector = self.connector

        def restart(_: object) -> None:
            if self.running and not connector.running:
                connector.startService()

        connector.stopService().addCallback(restart)
        return True

    def _client(self) -> ImapClient:
        return ImapClient(self.reactor, self.account.timeout, label=self.account.name)

    def attempting(self) -> None:
        self.state.set_state("connecting")

    def _credentials(self) -> Credentials:
        """The password source, or the token provider, which is kept for the daemon's life so
        that a refreshed token outlives a connection."""
        if self.tokens is None:
            self.tokens = account_tokens(self.account, self.reactor, self.environ)
        return account_credentials(self.account, self.reactor, self.environ, self.tokens)

    def connected(self, client: ImapClient) -> None:
        """A new connection: run a session on it until it ends, then close it."""
        if not self.running:
            client.drop(MailError("the service is stopping"))
            return
        session = AccountConnection(client, account=self.account, state=self.state,
                                    clock=self.reactor, password=self._credentials(),
                                    on_logged_in=self.backoff.logged_in,
                                    on_healthy=self.backoff.healthy)
        self.session = session
        done = ensureDeferred(session.run())
        done.addErrback(self._session_failed)
        self._session_done = done.addBoth(self._session_over, client, session)

    def _session_failed(self, failure: Failure) -> None:
        expected = (MailError, IMAP4Exception)
        if failure_kind(failure) == "other" and not failure.check(*expected):  # a bug
            self.log.failure("{account}: unexpected error in the session", failure,
                             account=self.account.name)
        if self.running:
            self.note_failure(failure)

    def note_failure(self, failure: Failure) -> None:
        """Remember why the attempt failed, for the retry that follows."""
        kind = failure_kind(failure)
        if kind in HARD_BACKOFF_KINDS:
            self.backoff.auth_failed()
        state: StateName = "auth-failed" if kind in HARD_BACKOFF_KINDS else "backing-off"
        self._failure = (describe_failure(failure), state)

    def _session_over(self, result: object, client: ImapClient, session: AccountConnection) -> None:
        if self.session is session:
            self.session = None
        if client.connected_ok:
            client.drop(MailError("session over"))

    def _retry_delay(self, attempt: int) -> float:
        """ClientService's retry policy: our Backoff, and the news in the state and log."""
        delay = self.backoff.delay(attempt)
        if self.running:
            error, state = self._failure or ("connection lost", "backing-off")
            self.state.connection_failed(error, state, delay)
        self._failure = None
        return delay

    def stopService(self) -> Deferred[None]:
        """Log out (for at most STOP_GRACE seconds), close, cancel every timer."""
        super().stopService()  # type: ignore[no-untyped-call]
        self.hook.stop()
        session = self.session
        if session is None:
            return self._stop_connector(None)
        session.stop()
        timer = self.reactor.callLater(STOP_GRACE, session.client.drop,
                                       MailError("stopping: no reply to LOGOUT"))
        waiter: Deferred[None] = Deferred()

        def ended(result: object) -> object:
            if timer.active():
                timer.cancel()
            waiter.callback(None)
            return result

        self._session_done.addBoth(ended)
        return waiter.addCallback(self._stop_connector)

    def _stop_connector(self, _: object) -> Deferred[None]:
        d: Deferred[None] = self.connector.stopService()

        def stopped(result: object) -> None:
            self.state.set_state("stopped")

        return d.addCallback(stopped)


class AccountsService(MultiService):
    """Every configured account under watch; ``status_lines()`` feeds the line service."""

    def __init__(self, accounts: Sequence[AccountConfig], reactor: AccountReactor,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.reactor = reactor
        self.environ = environ
        self.watchers = [AccountWatcher(account, reactor, environ) for account in accounts]
        for watcher in self.watchers:
            watcher.setServiceParent(self)  # type: ignore[no-untyped-call]

    def reconfigure(self, accounts: Sequence[AccountConfig]) -> list[str]:
        """Apply a reloaded ``[accounts]`` (see the module docstring); one line per account
        that changed, for the log."""
        before = {watcher.account.name: watcher for watcher in self.watchers}
        news: list[str] = []
        watchers: list[AccountWatcher] = []
        for account in accounts:
            watcher = before.pop(account.name, None)
            if watcher is not None and watcher.account == account:
                if watcher.retry_now():
                    news.append(f"account {account.name}: retrying now")
                watchers.append(watcher)
                continue
            if watcher is not None:
                self._stop(watcher)
            news.append(f"account {account.name}: "
                        f"{'changed, reconnecting' if watcher else 'added'}")
            watchers.append(AccountWatcher(account, self.reactor, self.environ))
        for name, watcher in before.items():
            self._stop(watcher)
            news.append(f"account {name}: removed")
        self.watchers = watchers
        for watcher in watchers:
            if watcher.parent is None:
                watcher.setServiceParent(self)  # type: ignore[no-untyped-call]
        return news

    def _stop(self, watcher: AccountWatcher) -> None:
        """Log out and forget an account (in the background, within STOP_GRACE)."""
        stopped = watcher.disownServiceParent()  # type: ignore[no-untyped-call]
        if isinstance(stopped, Deferred):
            stopped.addErrback(lambda f: AccountWatcher.log.failure(
                "{account}: stopping failed", f, account=watcher.account.name))

    def status_lines(self, viewer: str = "local") -> list[str]:
        """One line per account and mailbox, in configuration order, for a ``viewer`` of
        ``status``: "local" sees everything, "user" (a remote user the configuration allows)
        no error texts (they may name files or quote servers), "public" no account at all."""
        if viewer == "public":
            return []
        detailed = viewer == "local"
        return [line for watcher in self.watchers
                for line in watcher.state.status_lines(detailed)]
