"""A real OAuth2 token endpoint for the tests: HTTPS on loopback, in the test's own reactor.

``TokenEndpoint`` serves, with twisted.web over TLS (a certificate for ``127.0.0.1`` and
``localhost`` from a test CA it makes itself, so the client's verification is exercised):

* ``POST /token``: the refresh grant (RFC 6749 6), the device grant's token request
  (RFC 8628 3.4) and the authorization code grant's (RFC 6749 4.1.3, PKCE checked);
  ``POST /device``: the device authorization request (RFC 8628 3.1); ``GET /authorize``: a
  browser's sign-in, approved at once (``authorize_error`` to refuse it) and redirected to the
  loopback ``redirect_uri`` with a code.
* Access tokens come from ``minter(user, ttl)``: a real JWT signed with the test Dovecot's key
  for the end-to-end tests, or any string.  Each refresh can rotate the refresh token
  (``rotate``); a refresh token that is not current is answered ``invalid_grant``.
* What the next requests get can be scripted, one entry a request, per path (``script_token``,
  ``script_device``): an HTTP status and body, ``"hang"`` (never answer), ``"oversize"``,
  ``"malformed"``, or for device polling ``"pending"``, ``"slow_down"``, ``"expired"``,
  ``"denied"``, ``"approve"``.  Unscripted requests get the normal answer (a device poll:
  ``authorization_pending``).
* Every request's form is recorded (``requests``), with the time it came.

Start it with ``await TokenEndpoint.start(directory, minter)``; ``await endpoint.stop()``
closes it and drops every hanging request.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorSSL, ITCPTransport
from twisted.internet.ssl import PrivateCertificate
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

Minter = Callable[[str, int], str]
Step = str | tuple[int, Any]  # a named behaviour, or (HTTP status, a JSON value or raw bytes)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OVERSIZE = 200 * 1024


def make_ca_and_cert(directory: Path) -> tuple[Path, bytes]:
    """A test CA (``ca.pem`` in ``directory``) and a server certificate with its key (PEM)
    for 127.0.0.1, ::1 and localhost, signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token endpoint test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pem = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
           + cert.public_bytes(serialization.Encoding.PEM))
    return ca_file, pem


@dataclass
class Received:
    """One request the endpoint got: its path, its form, and when (time.monotonic)."""

    path: str
    form: dict[str, str]
    at: float


@dataclass
class Device:
    """One device authorization under way."""

    device_code: str
    user_code: str
    user: str
    approved: bool = False


@dataclass
class TokenEndpoint:
    """See the module docstring."""

    ca_file: Path
    port: int
    minter: Minter
    listener: IListeningPort | None = None
    user: str = "alice"
    client_id: str = "mailsocketd-test"
    client_secret: str | None = None
    ttl: int = 3600
    rotate: bool = False
    interval: int = 1
    device_expires_in: int = 600
    refresh_tokens: set[str] = field(default_factory=set)
    script_token: list[Step] = field(default_factory=list)
    script_device: list[Step] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # access tokens handed out
    devices: dict[str, Device] = field(default_factory=dict)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code: (challenge, uri)
    authorize_error: str | None = None
    hanging: list[Request] = field(default_factory=list)

    @classmethod
    async def start(cls, directory: Path, minter: Minter, **settings: Any) -> TokenEndpoint:
        ca_file, pem = make_ca_and_cert(directory)
        options = PrivateCertificate.loadPEM(pem).options()
        endpoint = cls(ca_file=ca_file, port=0, minter=minter, **settings)
        root = Resource()
        root.putChild(b"token", _Handler(endpoint, "token"))
        root.putChild(b"device", _Handler(endpoint, "device"))
        root.putChild(b"authorize", _Handler(endpoint, "authorize"))
        site = Site(root)
        site.displayTracebacks = False
        assert IReactorSSL.providedBy(global_reactor)
        server = SSL4ServerEndpoint(global_reactor, 0, options, interface="127.0.0.1")
        endpoint.listener = await server.listen(site)
        address = endpoint.listener.getHost()
        assert isinstance(address, IPv4Address)
        endpoint.port = address.port
        return endpoint

    async def stop(self) -> None:
        for request in self.hanging:
            transport = request.channel.transport if request.channel is not None else None
            if ITCPTransport.providedBy(transport):
                transport.abortConnection()
        self.hanging.clear()
        if self.listener is not None:
            await maybeDeferred(self.listener.stopListening)

    @property
    def token_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/token"

    @property
    def device_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/device"

    def new_refresh_token(self) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        return token

    def write_client_files(self, directory: Path, account: str = "work") -> tuple[Path, Path]:
        """An account's refresh token file (a current token) and client secret file, 0600, as
        an operator would have them after enrolment: (refresh_token_file, client_secret_file)."""
        assert self.client_secret is not None, "an endpoint started with a client secret"
        refresh = directory / f"{account}.refresh-token"
        secret = directory / f"{account}.client-secret"
        for path, text in ((refresh, self.new_refresh_token()), (secret, self.client_secret)):
            path.write_text(text + "\n")
            path.chmod(0o600)
        return refresh, secret

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    # -- answering -----------------------------------------------------------------------------

    def answer(self, path: str, form: dict[str, str]) -> Step:
        """What to answer: the script's next step, else the normal answer."""
        script = self.script_token if path == "token" else self.script_device
        if script:
            step = script.pop(0)
            if step == "approve" and path == "token":
                return self._device_token(form, approve=True)
            if step not in ("pending", "slow_down", "expired", "denied"):
                return step
            return (400, {"error": {"pending": "authorization_pending",
                                    "denied": "access_denied",
                                    "expired": "expired_token"}.get(step, step)})
        if path == "device":
            return self._device_authorization(form)
        if form.get("grant_type") == DEVICE_CODE_GRANT:
            return self._device_token(form, approve=False)
        if form.get("grant_type") == "authorization_code":
            return self._code_token(form)
        return self._refresh(form)

    def authorize(self, query: dict[str, str]) -> str:
        """The sign-in page's answer: where the browser is sent (the redirect URI + code)."""
        uri = query.get("redirect_uri", "")
        assert uri.startswith("http://127.0.0.1:"), uri
        assert query.get("client_id") == self.client_id
        assert query.get("response_type") == "code"
        assert query.get("code_challenge_method") == "S256"
        if self.authorize_error is not None:
            return uri + "?" + urlencode({"error": self.authorize_error,
                                          "state": query.get("state", "")})
        code = "code-" + secrets.token_urlsafe(16)
        self.codes[code] = (query["code_challenge"], uri)
        return uri + "?" + urlencode({"code": code, "state": query.get("state", "")})

    def _code_token(self, form: dict[str, str]) -> Step:
        if not self._client_ok(form):
            return (401, {"error": "invalid_client"})
        challenge, uri = self.codes.pop(form.get("code", ""), ("", ""))
        verifier = form.get("code_verifier", "").encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if not challenge or digest.decode() != challenge or form.get("redirect_uri") != uri:
            return (400, {"error": "invalid_grant", "error_description": "bad code"})
        reply = self._tokens()
        reply["refresh_token"] = self.new_refresh_token()
        return (200, reply)

    def _client_ok(self, form: dict[str, str]) -> bool:
        return (form.get("client_id") == self.client_id
                and form.get("client_secret") == self.client_secret)

    def _tokens(self) -> dict[str, Any]:
        access = self.minter(self.user, self.ttl)
        self.issued.append(access)
        reply: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                 "expires_in": self.ttl, "scope": "mail"}
        return reply

    def _refresh(self, form: dict[str, str]) -> Step:
        if not self._client_ok(form):
            return (401, {"error": "invalid_client", "error_description": "unknown client"})
        if form.get("grant_type") != "refresh_token":
            return (400, {"error": "unsupported_grant_type"})
        token = form.get("refresh_token", "")
        if token not in self.refresh_tokens:
            return (400, {"error": "invalid_grant",
                          "error_description": "Token has been expired or revoked."})
        reply = self._tokens()
        if self.rotate:
            self.refresh_tokens.discard(token)
            reply["refresh_token"] = self.new_refresh_token()
        return (200, reply)

    def _device_authorization(self, form: dict[str, str]) -> Step:
        if not self._client_ok(form):
            return (401, {"error": "invalid_client"})
        device = Device("dc-" + secrets.token_urlsafe(16), "WDJB-MJHT", self.user)
        self.devices[device.device_code] = device
        return (200, {"device_code": device.device_code, "user_code": device.user_code,
                      "verification_uri": f"https://127.0.0.1:{self.port}/activate",
                      "expires_in": self.device_expires_in, "interval": self.interval})

    def _device_token(self, form: dict[str, str], approve: bool) -> Step:
        device = self.devices.get(form.get("device_code", ""))
        if device is None or not self._client_ok(form):
            return (400, {"error": "invalid_grant"})
        if not (approve or device.approved):
            return (400, {"error": "authorization_pending"})
        del self.devices[device.device_code]
        reply = self._tokens()
        reply["refresh_token"] = self.new_refresh_token()
        return (200, reply)


class _Handler(Resource):
    isLeaf = True

    def __init__(self, endpoint: TokenEndpoint, path: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.endpoint = endpoint
        self.path = path

    def render_GET(self, request: Request) -> bytes:
        assert self.path == "authorize"
        query = {k.decode(): v[0].decode() for k, v in (request.args or {}).items()}
        self.endpoint.requests.append(Received(self.path, query, time.monotonic()))
        request.redirect(self.endpoint.authorize(query).encode())
        return b""

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = request.content.read().decode("ascii")
        form = dict(parse_qsl(body, keep_blank_values=True))
        self.endpoint.requests.append(Received(self.path, form, time.monotonic()))
        step = self.endpoint.answer(self.path, form)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        if step == "hang":
            self.endpoint.hanging.append(request)
            return NOT_DONE_YET
        if step == "oversize":
            return b'{"access_token": "' + b"A" * OVERSIZE + b'", "token_type": "Bearer"}'
        if step == "malformed":
            return b"<html>not json</html>"
        assert isinstance(step, tuple), step
        status, value = step
        request.setResponseCode(status)
        return value if isinstance(value, bytes) else json.dumps(value).encode()
