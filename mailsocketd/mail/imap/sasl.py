"""AUTHENTICATE XOAUTH2 and OAUTHBEARER (RFC 7628): logging in with an OAuth2 access token.

``oauth_initial_response`` builds what the client sends first (the token inside it), sent with
the command itself when the server offers SASL-IR (RFC 4959), else after its empty ``+``.
A server that refuses the token does not answer NO at once: it sends an *error challenge*, a
base64 JSON object (``{"status":"401","schemes":"bearer","scope":"mail"}`` for XOAUTH2,
``{"status":"invalid_token"}`` for OAUTHBEARER), and waits for the client to acknowledge it:
with an empty response for XOAUTH2 (Google's protocol description) and with a single ``%x01``
(the kvsep) for OAUTHBEARER (RFC 7628 3.2.3).  Then the tagged NO comes at once.  The JSON is
kept, cleaned and bounded, for the error text (``describe_error_challenge``).

``TokenRejected`` is the refusal: an AuthFailed (the long backoff, if a fresh token does not
help: the retry is ``login.py``'s), whose text has the server's words and the challenge, never
the token.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from twisted.internet.defer import Deferred

from mailsocketd.mail.errors import AuthFailed, ProtocolViolation, clean_text
from mailsocketd.mail.imap.client import ImapClient, command
from mailsocketd.mail.secrets import Secret

__all__ = ["ERROR_ACKNOWLEDGEMENT", "MECHANISMS", "TokenRejected", "authenticate_with_token",
           "describe_error_challenge", "oauth_initial_response"]

# The configuration's ``auth`` values and the SASL mechanisms they name.
MECHANISMS = {"xoauth2": b"XOAUTH2", "oauthbearer": b"OAUTHBEARER"}
# The client's answer to an error challenge, before base64 (an empty line for b"").
ERROR_ACKNOWLEDGEMENT = {b"XOAUTH2": b"", b"OAUTHBEARER": b"\x01"}
ERROR_FIELDS = ("status", "schemes", "scope")
MAX_CHALLENGE = 4096


class TokenRejected(AuthFailed):
    """The server refused the access token (after its error challenge, or with a plain NO)."""


def _gs2_name(user: bytes) -> bytes:
    """RFC 5801 saslname: ``=`` and ``,`` escaped as ``=3D`` and ``=2C``."""
    return user.replace(b"=", b"=3D").replace(b",", b"=2C")


def oauth_initial_response(mechanism: bytes, user: str, token: Secret, host: str,
                           port: int) -> Secret:
    """The client's first message (before base64), holding the token, so itself a Secret.

    XOAUTH2: ``user=U ^A auth=Bearer T ^A ^A``.  OAUTHBEARER (RFC 7628 3.1): the GS2 header
    ``n,a=U,`` then ``host``, ``port`` and ``auth`` key/value pairs, each ended by ``^A``, and a
    final ``^A``.  ``host`` and ``port`` are the server's as configured.
    """
    name = user.encode("utf-8")
    bearer = b"auth=Bearer " + token.reveal()
    if mechanism == b"XOAUTH2":
        return Secret(b"user=" + name + b"\x01" + bearer + b"\x01\x01")
    if mechanism == b"OAUTHBEARER":
        pairs = [b"host=" + host.encode("idna"), b"port=" + str(port).encode(), bearer]
        return Secret(b"n,a=" + _gs2_name(name) + b",\x01" + b"".join(p + b"\x01" for p in pairs)
                      + b"\x01")
    raise ValueError(f"not an OAuth2 mechanism: {mechanism!r}")


def describe_error_challenge(data: bytes) -> str:
    """The error challenge's JSON as ``status 401, schemes bearer, scope mail`` (its fields
    cleaned and bounded), or what was wrong with it."""
    try:
        value: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "an unreadable error challenge"
    if not isinstance(value, dict):
        return "an unreadable error challenge"
    parts = [f"{name} {clean_text(str(value[name]), 100)}" for name in ERROR_FIELDS
             if isinstance(value.get(name), str | int)]
    return ", ".join(parts) or "an error challenge without a status"


def authenticate_with_token(client: ImapClient, mechanism: bytes, response: Secret,
                            sasl_ir: bool) -> tuple[Deferred[Any], list[str]]:
    """AUTHENTICATE ``mechanism`` with the initial ``response`` (a Secret: it holds the token).

    Returns the command's Deferred (a tagged NO fails it with ServerRefused) and a list that
    receives the described error challenge, if the server sends one.  A challenge that is not
    base64, or one more than the protocol has, is answered ``*`` (cancel) and drops the
    connection.
    """
    encoded = base64.b64encode(response.reveal())
    sent = [sasl_ir]
    errors: list[str] = []

    def answer(challenge: bytes) -> None:
        if not sent[0]:  # the server's empty "+": now the initial response
            sent[0] = True
            client.send_line(encoded)
            return
        try:
            decoded = base64.b64decode(challenge, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
        if decoded is None or errors or len(challenge) > MAX_CHALLENGE:
            client.send_line(b"*")
            client.drop(ProtocolViolation(f"unexpected {mechanism.decode()} challenge"))
            return
        errors.append(describe_error_challenge(decoded))
        client.send_line(base64.b64encode(ERROR_ACKNOWLEDGEMENT[mechanism]))

    args = mechanism + b" " + (encoded or b"=") if sasl_ir else mechanism
    d = client.run(command(b"AUTHENTICATE", args, answer), "the reply to AUTHENTICATE")
    return d, errors
