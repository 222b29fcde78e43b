"""JWT access tokens that the test Dovecot (``mailserver_oauth``, MAIL_OAUTH=1) accepts, or not.

Stdlib only (HMAC over base64url).  The key is the instance's (``OAUTH_KEY_FILE`` of its
``mail.env``), so a token minted here logs in as its user; the knobs make the tokens Dovecot
refuses, each for one reason it logs (``auth_verbose``):

    mint(server, "alice")                  # valid for an hour
    mint(server, "alice", expired=True)    # "Token has expired"
    mint(server, "alice", wrong_key=True)  # "Incorrect JWT signature"
    mint(server, "bob")                    # for user alice: "Username 'alice' did not match 'bob'"

Dovecot 2.3.19 insists on ``typ: JWT``, ``sub``, ``exp``, an allowed ``iss``, and the user claim
(``email``: ``alice@example.test``) matching the SASL user as ``%Ln``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["jwt_hs", "mint", "oauthbearer_string", "xoauth2_string"]

HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


class OAuthServer(Protocol):
    """What minting needs of a MailServer: its MAIL_OAUTH settings and its domain."""

    @property
    def oauth_env(self) -> dict[str, str] | None: ...
    @property
    def domain(self) -> str: ...


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_hs(claims: Mapping[str, Any], key: bytes, alg: str = "HS256",
           kid: str | None = None) -> str:
    """A JWT signed with HMAC (``alg`` HS256/384/512), header ``kid`` when given."""
    header: dict[str, str] = {"alg": alg, "typ": "JWT"}  # Dovecot 2.3.19 insists on typ
    if kid is not None:
        header["kid"] = kid
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode()))
    signature = hmac.new(key, signing_input.encode("ascii"), HASHES[alg]).digest()
    return signing_input + "." + _b64url(signature)


def signing_key(server: OAuthServer) -> bytes:
    """The instance's HMAC secret (its key file holds the base64 of it, as Dovecot reads it)."""
    env = _oauth_env(server)
    return base64.b64decode(Path(env["OAUTH_KEY_FILE"]).read_text().strip(), validate=True)


def _oauth_env(server: OAuthServer) -> dict[str, str]:
    if server.oauth_env is None:
        raise ValueError("this mail server runs without MAIL_OAUTH=1 (use mailserver_oauth)")
    return server.oauth_env


def mint(server: OAuthServer, user: str, *, ttl: int = 3600, expired: bool = False,
         not_yet_valid: bool = False, wrong_key: bool = False, issuer: str | None = None,
         kid: str | None = None, claims: Mapping[str, Any] | None = None,
         now: float | None = None) -> str:
    """A signed access token for ``user`` (``alice`` or ``alice@example.test``); see the module
    docstring.  ``claims`` adds or overrides claims (a value None removes one)."""
    env = _oauth_env(server)
    local = user.split("@", 1)[0]
    issued = int(time.time() if now is None else now)
    body: dict[str, Any] = {
        "iss": env["OAUTH_ISSUER"] if issuer is None else issuer,
        "sub": local,
        "email": f"{local}@{server.domain}",
        "iat": issued,
        "exp": issued + ttl,
        "jti": secrets.token_hex(8),
    }
    body.setdefault(env.get("OAUTH_USER_CLAIM", "email"), body["email"])
    if expired:
        body["iat"], body["exp"] = issued - 7200, issued - 3600
    if not_yet_valid:
        body["nbf"], body["exp"] = issued + 3600, issued + 7200
    for name, value in (claims or {}).items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    key = secrets.token_bytes(64) if wrong_key else signing_key(server)
    return jwt_hs(body, key, env.get("OAUTH_ALG", "HS256"),
                  env.get("OAUTH_KID") if kid is None else kid)


def xoauth2_string(user: str, token: str) -> str:
    """The XOAUTH2 initial response, unencoded."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer_string(user: str, token: str, host: str = "localhost", port: int = 143) -> str:
    """The OAUTHBEARER (RFC 7628) initial response, unencoded."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
