"""What can go wrong on the mail side, and one place that turns a failure into a clear line.

``describe_failure`` is shared by the daemon's status/logs and by ``mailsocketd-check``, so a
refused connection, a TLS failure, a rejected login and a timeout read the same everywhere.
Server text is cleaned (``clean_text``: no control characters, bounded length) before it is
shown.
"""

from __future__ import annotations

from typing import Literal

from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from mailsocketd.clean import clean
from mailsocketd.errors import INTERNAL_ERROR_TEXT, UserError

__all__ = [
    "INTERNAL_ERROR_TEXT",
    "AuthFailed",
    "CheckTimeout",
    "CleartextRefused",
    "FailureKind",
    "MailError",
    "ProtocolViolation",
    "SecretError",
    "ServerClosed",
    "ServerRefused",
    "TokenError",
    "TokenRefused",
    "clean_text",
    "describe_failure",
    "failure_kind",
]

class MailError(UserError):
    """Base of the mail side's own errors; ``str()`` is a line fit for a sysadmin."""


class ServerRefused(MailError):
    """A command got a tagged NO or BAD."""

    def __init__(self, command: str, status: str, text: str) -> None:
        super().__init__(f"{command} refused: {status} {clean_text(text)}".rstrip())
        self.command = command
        self.status = status
        self.text = text


class ServerClosed(MailError):
    """The server said BYE and closed the connection."""


class AuthFailed(MailError):
    """The server rejected the credentials (a wrong password must not be retried soon)."""


class CleartextRefused(MailError):
    """Logging in would send the password unencrypted and the configuration does not allow it."""


class SecretError(MailError):
    """The password could not be fetched.  The message names the source, never the secret."""


class TokenError(MailError):
    """An OAuth2 access token could not be had for now (a token endpoint that is down, times
    out or answers nonsense): retried with the ordinary backoff, like a server that is down.
    The message is one line naming the source; it never holds a token."""


class TokenRefused(TokenError):
    """The token source refuses for good (``invalid_grant``: a revoked or expired refresh
    token, ``invalid_client``): like a wrong password, it waits for the long backoff."""


class ProtocolViolation(MailError):
    """The server sent something too big or malformed; the connection is dropped."""


class CheckTimeout(MailError):
    """A step (connect, greeting, login, a command) took longer than the timeout."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {step}")
        self.step = step
        self.seconds = seconds


def clean_text(text: str | bytes, limit: int = 200) -> str:
    """Server-supplied text made safe for one log/status line: each unsafe character (a
    control, a line end, a bidi override) a space, ends stripped, bounded."""
    return clean(text, replacement=" ", layout="strip", limit=limit)


def _tls_reason(value: BaseException | None) -> str:
    """OpenSSL's error stack -> its reason strings (``certificate verify failed``)."""
    reasons: list[str] = []
    args = getattr(value, "args", ())
    for entry in args[0] if args and isinstance(args[0], list) else []:
        if isinstance(entry, tuple) and entry:
            reasons.append(str(entry[-1]))
    return ", ".join(reasons) or clean_text(str(value)) or "handshake failed"


# The categories of failure_kind (status backoff, plugin lines, the user's messages).
FailureKind = Literal["refused", "dns", "timeout", "tls", "auth", "cleartext", "secret",
                      "token", "protocol", "closed", "other"]
_KINDS: tuple[tuple[tuple[type[BaseException], ...], FailureKind], ...] = (
    ((neterror.ConnectionRefusedError,), "refused"),
    ((neterror.DNSLookupError,), "dns"),
    ((CheckTimeout, neterror.TimeoutError, CancelledError), "timeout"),
    ((AuthFailed, TokenRefused), "auth"),
    ((CleartextRefused,), "cleartext"),
    ((SecretError,), "secret"),
    ((TokenError,), "token"),
    ((ProtocolViolation,), "protocol"),
    ((neterror.ConnectionDone, neterror.ConnectionLost, ServerClosed), "closed"),
)


def failure_kind(failure: Failure) -> FailureKind:
    """A short category: refused, dns, timeout, tls, auth, cleartext, secret, token, protocol,
    closed, other."""
    value = failure.value
    if _is_tls_error(value):
        return "tls"
    for types, kind in _KINDS:
        if isinstance(value, types):
            return kind
    return "other"


def _is_tls_error(value: BaseException | None) -> bool:
    module = type(value).__module__
    return module.startswith(("OpenSSL", "service_identity"))


def describe_failure(failure: Failure) -> str:
    """One clean line for a failed connection or check."""
    value = failure.value
    kind = failure_kind(failure)
    if isinstance(value, MailError):
        return str(value)
    if kind == "tls":
        return _describe_tls(value)
    fixed = {
        "refused": "connection refused",
        "timeout": "timed out",
        "closed": "connection lost" if isinstance(value, neterror.ConnectionLost)
        else "connection closed by the server",
    }
    if kind in fixed:
        return fixed[kind]
    if kind == "dns":
        return f"cannot resolve the server's name: {clean_text(str(value))}"
    return clean_text(f"{type(value).__name__}: {value}")


def _describe_tls(value: BaseException | None) -> str:
    if type(value).__module__.startswith("service_identity"):
        return ("TLS failure: the certificate does not match the server name "
                f"({clean_text(str(value))})")
    return f"TLS failure: {_tls_reason(value)}"
