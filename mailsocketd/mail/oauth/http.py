"""One bounded HTTPS form POST to a token endpoint, with Twisted's own HTTP client.

``twisted.web.client.Agent`` under the daemon's reactor, nothing else: no thread, no new
dependency (treq would add little over these sixty lines: the size bound, the deadline and the
failure texts are ours either way).  TLS is verified as for the mail servers (``mail.tls``:
the system CAs, or the ``ca_file`` of the ``[oauth2]`` table, read at each request).  The
whole exchange (connect, TLS, request, headers, body) has one deadline; the body is read up to
``limit`` bytes and the connection dropped past it.  Every failure is a ``TokenError`` whose
text is one line starting with ``what``; a secret sent in the body can never be in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from mailsocketd.mail.errors import TokenError, describe_failure
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ConnectReactor, tls_options

__all__ = ["MAX_REPLY", "HttpReply", "post_form"]

MAX_REPLY = 64 * 1024  # a token reply is a few KB (Microsoft's, with an id_token, the largest)
USER_AGENT = b"mailsocketd"


@dataclass(frozen=True)
class HttpReply:
    """A complete HTTP reply: its status and its body (at most the limit)."""

    status: int
    body: bytes


@implementer(IPolicyForHTTPS)
class _VerifyingPolicy:
    """The Agent's TLS options: ``mail.tls``'s verifying ones, with the ``ca_file``."""

    def __init__(self, ca_file: str | None) -> None:
        self.ca_file = ca_file

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return tls_options(hostname.decode("ascii"), self.ca_file)


@implementer(IBodyProducer)
class _FormBody:
    """The request body, written at once (it is small)."""

    def __init__(self, form: Secret) -> None:
        self._form = form
        self.length = len(form.reveal())

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._form.reveal())
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _TooLarge(Exception):
    pass


class _BoundedBody(Protocol):
    """Collects a response body up to ``limit`` bytes, or drops the connection."""

    def __init__(self, finished: Deferred[bytes], limit: int, length: Any) -> None:
        self.finished = finished
        self.limit = limit
        self.length = length
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False

    def connectionMade(self) -> None:
        if isinstance(self.length, int) and self.length > self.limit:
            self._drop()

    def dataReceived(self, data: bytes) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > self.limit:
            self._drop()
            return
        self.chunks.append(data)

    def _drop(self) -> None:
        self.too_large = True
        self.chunks.clear()
        if self.transport is not None:
            IPushProducer(self.transport).stopProducing()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.finished.called:
            return
        if self.too_large:
            self.finished.errback(_TooLarge())
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def _read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    def cancel(d: Deferred[bytes]) -> None:
        if protocol.transport is not None:
            IPushProducer(protocol.transport).stopProducing()

    finished: Deferred[bytes] = Deferred(cancel)
    protocol = _BoundedBody(finished, limit, response.length)
    response.deliverBody(protocol)
    return finished


def _describe(failure: Failure, what: str, timeout: float, limit: int) -> TokenError:
    """One line for a failed exchange (the body we sent is never part of it)."""
    value = failure.value
    if isinstance(value, TokenError):
        return value
    if isinstance(value, ResponseFailed) and value.reasons:  # the cause is inside
        failure = value.reasons[0]
        value = failure.value
    if isinstance(value, _TooLarge):
        text = f"the reply is larger than {limit} bytes"
    elif isinstance(value, CancelledError | neterror.TimeoutError):
        text = f"no complete reply within {timeout:g} s"
    elif isinstance(value, neterror.ConnectionDone | neterror.ConnectionLost):
        text = "the connection closed before a complete reply"
    else:  # refused, DNS, TLS, a ca_file that cannot be read (a MailError): their own line
        text = describe_failure(failure)
    return TokenError(f"{what}: {text}")


def post_form(reactor: ConnectReactor, url: str, form: Secret, *, ca_file: str | None,
              timeout: float, what: str, limit: int = MAX_REPLY) -> Deferred[HttpReply]:
    """POST ``form`` (``application/x-www-form-urlencoded``) to the https ``url``; the reply
    whatever its status, or a TokenError (see the module docstring)."""
    agent = Agent(reactor, contextFactory=_VerifyingPolicy(ca_file), connectTimeout=timeout)
    headers = Headers({b"Content-Type": [b"application/x-www-form-urlencoded"],
                       b"Accept": [b"application/json"], b"User-Agent": [USER_AGENT]})

    async def exchange() -> HttpReply:
        response = await agent.request(b"POST", url.encode("ascii"), headers,
                                       _FormBody(form))
        data = await _read_body(response, limit)
        return HttpReply(response.code, data)

    def failed(failure: Failure) -> HttpReply:
        raise _describe(failure, what, timeout, limit)

    d = ensureDeferred(exchange())
    d.addTimeout(timeout, IReactorTime(reactor))
    return d.addErrback(failed)
