"""How a configured account logs in: with its password, or with OAuth2 access tokens.

The daemon keeps one token provider per account for as long as it runs (``AccountWatcher``),
so a token the refresh grant got is reused across connections until it nears its expiry;
``mailsocketd-check`` makes one per run.  Tokens from a password source (``SourceTokens``)
are asked for again at every login; an ``[oauth2]`` table makes the daemon refresh them itself
(``mail.oauth.refresh``).
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred

from mailsocketd.mail.accounts.config import AccountConfig
from mailsocketd.mail.imap.login import Credentials, TokenLogin
from mailsocketd.mail.imap.sasl import MECHANISMS
from mailsocketd.mail.oauth.refresh import refreshing_provider
from mailsocketd.mail.oauth.tokens import SourceTokens, TokenProvider
from mailsocketd.mail.reactor import MailReactor
from mailsocketd.mail.secrets import Secret, SecretError, fetch_password

__all__ = ["account_credentials", "account_tokens"]


def account_tokens(account: AccountConfig, reactor: MailReactor,
                   environ: Mapping[str, str] | None = None) -> TokenProvider | None:
    """The account's access token provider; None when it logs in with a password."""
    if account.auth == "password":
        return None
    if account.oauth2 is not None:
        return refreshing_provider(account.oauth2, reactor, label=account.name, environ=environ)
    if account.password is None:  # the configuration does not allow it
        raise ValueError(f"account {account.name}: no token source")
    return SourceTokens(account.password, reactor, environ)


def account_credentials(account: AccountConfig, reactor: MailReactor,
                        environ: Mapping[str, str] | None = None,
                        tokens: TokenProvider | None = None) -> Credentials:
    """What ``log_in`` needs: the access tokens of ``tokens`` (made by ``account_tokens`` and
    kept by the caller), or a password fetched at each login."""
    if tokens is not None:
        return TokenLogin(MECHANISMS[account.auth], tokens)
    source = account.password

    def password() -> Deferred[Secret]:
        if source is None:
            raise SecretError(f"account {account.name}: no password source")
        return fetch_password(source, reactor, environ)

    return password
