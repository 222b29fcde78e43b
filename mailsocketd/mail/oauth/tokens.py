"""Where an account's OAuth2 access tokens come from: the one interface, and today's sources.

A ``TokenProvider`` hands out a usable access token (``token()``), cached while it is valid
when the provider can tell, and is told when the server refused the last one (``refused()``):
the next ``token()`` must then get a fresh one, not the cached one.  The IMAP side
(``imap/sasl.py``) asks for a token when it is about to authenticate, and after one refusal asks
once more before it gives up.

``SourceTokens`` takes the token from one of the password sources (``password_file``,
``password_command``, ``password_env``: ``mail.secrets``), asked again every time a token is
needed, so an external helper that refreshes (oama, pizauth, mutt_oauth2.py) is simply run
again.  The daemon's own refreshing provider (the RFC 6749 refresh grant) is ``refresh.py``.

Tokens travel as ``Secret`` and no error here ever contains one: errors name the source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

from twisted.internet.defer import Deferred

from mailsocketd.mail.errors import SecretError, TokenError, TokenRefused
from mailsocketd.mail.process import ProcessReactor
from mailsocketd.mail.secrets import PasswordSource, Secret, fetch_password

__all__ = ["SourceTokens", "TokenError", "TokenProvider", "TokenRefused", "check_bearer_token"]

# RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
BEARER_TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*\Z")
MAX_TOKEN = 8192 - 256  # Dovecot's limit on the SASL data, less room for the user name


class TokenProvider(Protocol):
    """An account's access tokens (see the module docstring)."""

    def token(self) -> Deferred[Secret]:
        """A usable access token; fails with TokenError (TokenRefused when it is for good) or
        SecretError, whose text is one line without the token."""

    def refused(self) -> None:
        """The server refused the last token: the next ``token()`` must get a fresh one."""


def check_bearer_token(token: Secret, what: str) -> Secret:
    """``token`` if it looks like a bearer token (RFC 6750 characters, bounded), else a
    SecretError naming ``what`` (and never the value: it may be a password by mistake)."""
    value = token.reveal()
    if len(value) > MAX_TOKEN:
        raise SecretError(f"{what} gave an access token longer than {MAX_TOKEN} bytes")
    if not BEARER_TOKEN.match(value):
        raise SecretError(f"{what} gave something that is not an access token "
                          "(a bearer token is letters, digits and -._~+/ only)")
    return token


class SourceTokens:
    """Access tokens from a password source, asked again for every token (see the module
    docstring); nothing is cached, so ``refused()`` has nothing to forget."""

    def __init__(self, source: PasswordSource, reactor: ProcessReactor,
                 environ: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.reactor = reactor
        self.environ = environ

    def token(self) -> Deferred[Secret]:
        what = self.source.describe()
        d = fetch_password(self.source, self.reactor, self.environ)
        return d.addCallback(check_bearer_token, what)

    def refused(self) -> None:
        """Nothing cached: the next ``token()`` asks the source again anyway."""
