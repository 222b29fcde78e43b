"""The OAuth2 messages the daemon sends and reads, pure: forms to send, JSON replies to check.

* The refresh grant (RFC 6749 section 6) and the device authorization grant (RFC 8628): form
  bodies (``application/x-www-form-urlencoded``).  The client authenticates with
  ``client_id`` (and ``client_secret`` when it has one) in the body, which Google, Microsoft
  and the usual servers (Keycloak, Authentik, Dovecot's own) accept.
* Their replies: a token reply (section 5.1), a device authorization reply (RFC 8628 3.2), or
  an error reply (section 5.2), whose ``error`` code the callers act on.

Every problem is a ``TokenError`` (or ``TokenRefused``) whose text is one clean line starting
with ``what`` (``token endpoint oauth2.googleapis.com``).  No text here ever holds a token or
a secret: the server's own ``error_description`` is cleaned, bounded, and has any secret that
was sent replaced, in case a server echoes one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from mailsocketd.mail.errors import SecretError, TokenError, TokenRefused, clean_text
from mailsocketd.mail.oauth.config import OAuth2Config
from mailsocketd.mail.oauth.tokens import check_bearer_token
from mailsocketd.mail.secrets import Secret

__all__ = ["REFUSING_ERRORS", "DeviceAuthorization", "ErrorReply", "GrantError", "TokenReply",
           "authorization_code_form", "authorization_request_url", "check_refresh_token",
           "device_authorization_form", "device_token_form", "parse_device_authorization",
           "parse_token_reply", "pkce_pair", "refresh_form", "refresh_token_of"]

# Error codes that no retry will cure: the refresh token or the client is not (or no longer)
# accepted.  The rest (a 5xx, temporarily_unavailable, a garbled reply) may pass.
REFUSING_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client",
                             "unsupported_grant_type", "invalid_scope", "access_denied",
                             "expired_token"})
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_REFRESH_TOKEN = 16384
PRINTABLE = re.compile(rb"[\x21-\x7e]+\Z")  # RFC 6749 A.17 (VSCHAR), no spaces
ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}\Z")  # RFC 6749 A.7, bounded


class GrantError(TokenRefused):
    """Enrolment ended without a refresh token: denied, expired, or refused by the server."""


@dataclass(frozen=True)
class TokenReply:
    """A successful token reply: the access token, how long it lives (None: not said), and a
    new refresh token when the server rotated it."""

    access_token: Secret
    expires_in: float | None
    refresh_token: Secret | None


@dataclass(frozen=True)
class DeviceAuthorization:
    """What RFC 8628 3.2 hands out: the code to poll with, and what to show the user."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@dataclass(frozen=True)
class ErrorReply:
    """An OAuth2 error reply (RFC 6749 5.2): its code and a cleaned description."""

    status: int
    error: str
    description: str

    def line(self) -> str:
        text = f"{self.error} ({self.description})" if self.description else self.error
        return text if self.status in (200, 400, 401) else f"HTTP {self.status}: {text}"


def _client(config: OAuth2Config, client_secret: Secret | None) -> list[tuple[str, str | bytes]]:
    fields: list[tuple[str, str | bytes]] = [("client_id", config.client_id)]
    if client_secret is not None:
        fields.append(("client_secret", client_secret.reveal()))
    return fields


def refresh_form(config: OAuth2Config, refresh_token: Secret,
                 client_secret: Secret | None) -> Secret:
    """The refresh grant's body (a Secret: it holds the refresh token)."""
    fields: list[tuple[str, str | bytes]] = [("grant_type", "refresh_token"),
                                             ("refresh_token", refresh_token.reveal())]
    if config.scope is not None:
        fields.append(("scope", config.scope))
    return Secret(urlencode(fields + _client(config, client_secret)).encode("ascii"))


def device_authorization_form(config: OAuth2Config, client_secret: Secret | None) -> Secret:
    """The device authorization request's body (RFC 8628 3.1)."""
    fields: list[tuple[str, str | bytes]] = []
    if config.scope is not None:
        fields.append(("scope", config.scope))
    return Secret(urlencode(_client(config, client_secret) + fields).encode("ascii"))


def device_token_form(config: OAuth2Config, device_code: Secret,
                      client_secret: Secret | None) -> Secret:
    """The device access token request's body (RFC 8628 3.4)."""
    fields: list[tuple[str, str | bytes]] = [("grant_type", DEVICE_CODE_GRANT),
                                             ("device_code", device_code.reveal())]
    return Secret(urlencode(fields + _client(config, client_secret)).encode("ascii"))


def pkce_pair() -> tuple[Secret, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(48).encode("ascii")
    return Secret(verifier), s256_challenge(verifier)


def s256_challenge(verifier: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()


def authorization_request_url(config: OAuth2Config, redirect_uri: str, state: str,
                              challenge: str) -> str:
    """Where the browser signs in (RFC 6749 4.1.1 with PKCE).  ``access_type=offline`` and
    ``prompt=consent`` make Google hand out a refresh token every time; other servers ignore
    the first, and the second only shows the consent page again."""
    if config.authorization_url is None:
        raise GrantError("no authorization_url in the [oauth2] table, and none is known for "
                         "this token_url")
    fields = [("response_type", "code"), ("client_id", config.client_id),
              ("redirect_uri", redirect_uri)]
    if config.scope is not None:
        fields.append(("scope", config.scope))
    fields += [("state", state), ("code_challenge", challenge),
               ("code_challenge_method", "S256"), ("access_type", "offline"),
               ("prompt", "consent")]
    separator = "&" if "?" in config.authorization_url else "?"
    return config.authorization_url + separator + urlencode(fields)


def authorization_code_form(config: OAuth2Config, code: Secret, redirect_uri: str,
                            verifier: Secret, client_secret: Secret | None) -> Secret:
    """The token request for an authorization code (RFC 6749 4.1.3, RFC 7636 4.5)."""
    fields: list[tuple[str, str | bytes]] = [
        ("grant_type", "authorization_code"), ("code", code.reveal()),
        ("redirect_uri", redirect_uri), ("code_verifier", verifier.reveal())]
    return Secret(urlencode(fields + _client(config, client_secret)).encode("ascii"))


def _redact(text: str, hidden: Iterable[Secret]) -> str:
    for secret in hidden:
        value = secret.reveal().decode("ascii", "replace")
        if len(value) >= 4:
            text = text.replace(value, "<hidden>")
    return text


def _json_object(status: int, body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        if status != 200:
            raise TokenError(f"{what}: HTTP {status}, not an OAuth2 reply") from None
        raise TokenError(f"{what}: the reply is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"{what}: the reply is not a JSON object")
    return value


def error_reply(status: int, value: dict[str, Any], sent: Iterable[Secret]) -> ErrorReply | None:
    """The error reply in ``value``, if it is one (any status: some servers use 200)."""
    code = value.get("error")
    if not isinstance(code, str) or not ERROR_CODE.match(code):
        return None
    description = value.get("error_description")
    text = _redact(description, sent) if isinstance(description, str) else ""
    return ErrorReply(status, code, clean_text(text, limit=160))


def _check_reply(status: int, body: bytes, what: str,
                 sent: Iterable[Secret]) -> dict[str, Any] | ErrorReply:
    """The JSON object of a 200 reply, or the ErrorReply of an error; TokenError otherwise."""
    if status >= 500:
        raise TokenError(f"{what}: HTTP {status} (the server failed; retried later)")
    value = _json_object(status, body, what)
    error = error_reply(status, value, sent)
    if error is not None:
        return error
    if status != 200:
        raise TokenError(f"{what}: HTTP {status} without an OAuth2 error code")
    return value


def _seconds(value: Any, what: str, name: str, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, str) and value.isdigit():  # some servers send "3599"
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise TokenError(f"{what}: {name} is not a number of seconds")
    return float(value)


def check_refresh_token(value: bytes, what: str) -> Secret:
    """A refresh token must be printable ASCII without spaces, and bounded."""
    if len(value) > MAX_REFRESH_TOKEN or not PRINTABLE.match(value):
        raise TokenError(f"{what}: not a usable refresh token (printable ASCII without "
                         f"spaces, at most {MAX_REFRESH_TOKEN} bytes)")
    return Secret(value)


def parse_token_reply(status: int, body: bytes, what: str,
                      sent: Iterable[Secret] = ()) -> TokenReply | ErrorReply:
    """A token reply (5.1) or an error reply (5.2); TokenError for anything else."""
    value = _check_reply(status, body, what, sent)
    if isinstance(value, ErrorReply):
        return value
    access = value.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenError(f"{what}: no access_token in the reply")
    token_type = value.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"{what}: the token is not a bearer token "
                         f"(token_type {clean_text(str(token_type), limit=40)!r})")
    try:
        token = check_bearer_token(Secret(access.encode("ascii")), what)
    except UnicodeEncodeError:
        raise TokenError(f"{what}: the access token is not ASCII") from None
    except SecretError as e:  # the endpoint's fault, not a source's: it backs off as such
        raise TokenError(str(e)) from None
    refresh = value.get("refresh_token")
    if refresh is not None and not isinstance(refresh, str):
        raise TokenError(f"{what}: refresh_token is not a string")
    return TokenReply(
        access_token=token,
        expires_in=_seconds(value.get("expires_in"), what, "expires_in", None),
        refresh_token=check_refresh_token(refresh.encode("utf-8"), what) if refresh else None,
    )


def refresh_token_of(reply: TokenReply, what: str) -> Secret:
    """The refresh token an enrolment is for; GrantError when the server gave none."""
    if reply.refresh_token is None:
        raise GrantError(f"{what} gave an access token but no refresh token (does the scope "
                         "ask for offline access? Microsoft: offline_access)")
    return reply.refresh_token


def _uri(value: dict[str, Any], name: str, what: str) -> str | None:
    uri = value.get(name)
    if uri is None:
        return None
    if not isinstance(uri, str) or not uri.startswith("https://") or len(uri) > 2048 \
            or not PRINTABLE.match(uri.encode("utf-8")):
        raise TokenError(f"{what}: {name} is not an https:// URL")
    return uri


def parse_device_authorization(status: int, body: bytes, what: str,
                               sent: Iterable[Secret] = ()) -> DeviceAuthorization:
    """RFC 8628 3.2; an error reply is a TokenRefused (the request itself was refused)."""
    value = _check_reply(status, body, what, sent)
    if isinstance(value, ErrorReply):
        raise TokenRefused(f"{what}: {value.line()}")
    device_code, user_code = value.get("device_code"), value.get("user_code")
    if not isinstance(device_code, str) or not PRINTABLE.match(device_code.encode("utf-8")):
        raise TokenError(f"{what}: no usable device_code in the reply")
    if not isinstance(user_code, str) or not 0 < len(user_code) <= 64 \
            or not user_code.isprintable():
        raise TokenError(f"{what}: no usable user_code in the reply")
    # Google says verification_url, the name of an RFC 8628 draft
    uri = _uri(value, "verification_uri", what) or _uri(value, "verification_url", what)
    if uri is None:
        raise TokenError(f"{what}: no verification_uri in the reply")
    return DeviceAuthorization(
        device_code=Secret(device_code.encode("ascii")),
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=_uri(value, "verification_uri_complete", what),
        expires_in=_seconds(value.get("expires_in"), what, "expires_in", None) or 1800.0,
        interval=_seconds(value.get("interval"), what, "interval", 5.0) or 5.0,
    )
