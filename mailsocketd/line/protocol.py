"""The line protocol: bytes in, requests to the LineServer, replies out.  Thin on purpose.

Framing: a request ends with LF (a CR before it is dropped).  Empty lines are ignored.
Old clients send a bare command word (``time``, ``quit``) with no line ending and wait: when
the bytes received so far, after the last complete line, are exactly such a word and nothing
more arrives within ``bare_command_wait`` seconds, they are served as a request.  A line ending
that arrives later is then just an empty line.  Any other split of a stream into packets
gives the same replies as the unsplit stream.

Limits: line length (reply and close), idle time (a closing line, then close), the time a line
may take from its first byte to its end (``line_timeout``: a client trickling a line a byte at a
time, never ending it, is closed like an idle one; its clock runs only while we read), and output:
when the client does not read, the transport's buffer fills, we stop reading and serving its
requests until it drains, so a client that sends without reading cannot make us buffer without
bound.  Requests are served strictly in order; while one waits for a Deferred reply, the rest
wait in the input buffer.

Hot path: a packet is served straight from the bytes received (the buffer keeps only an
unfinished line or input that waits), and the replies to one packet's requests go out in one
write.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet import interfaces
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsocketd.line.replies import InputReader, Reply, error
from mailsocketd.line.server import LineServer
from mailsocketd.line.session import Session, no_push
from mailsocketd.logs import Events

BANNER = "mailsocketd ready; try 'help'"
BARE_COMMANDS = frozenset({b"time", b"quit"})
# Unserved input kept while a reply is pending, beyond which we stop reading from the socket.
INPUT_BACKLOG = 65536
# Replies gathered while one packet is served, beyond which they are written at once (so that
# a full transport can still stop us).
OUTBOX_LIMIT = 16384
# TCP keepalive of a watching client once it is quiet for the idle limit: probes after 60 s
# of silence, every 15 s, 4 unanswered ones end the connection (a dead client found in 2 min).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 15, 4
# Connection events, in the namespace the class's Logger would use.
_events = Events(f"{__name__}.LineProtocol")


class StreamTransport(TypingProtocol):
    """What the protocol uses of its transport (TCP, TLS or UNIX; all provide it)."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


class Clients(TypingProtocol):
    """What a protocol needs of its factory: to be counted among the open clients (for the
    idle limit and shutdown), and no longer once closed.  A Protocol type, so that this module
    does not import the factory module that imports it."""

    def opened(self, proto: LineProtocol) -> None: ...
    def closed(self, proto: LineProtocol) -> None: ...


def describe_peer(address: IAddress | None) -> tuple[str, str]:
    """(``host:port`` for logs, host for per-address limits) of a peer address."""
    if isinstance(address, IPv4Address | IPv6Address):
        host = address.host
        return (f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"), host
    return "unix", "unix"


def keep_alive(transport: object) -> bool:
    """Turn on TCP keepalive for a quiet client that waits for pushed lines: a dead one (its
    host gone, a NAT that forgot it) is found within KEEPALIVE_IDLE + KEEPALIVE_INTERVAL *
    KEEPALIVE_COUNT seconds and its connection closed.  TLS wraps the TCP transport, so the
    socket is looked for underneath; a UNIX socket needs none (False: nothing was done)."""
    for _ in range(3):  # TCP: its own socket; TLS: its TCP transport's
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            break
        transport = getattr(transport, "transport", None)
    else:
        return False
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE),
                            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                            ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        return False
    return True


def holds_output(transport: object) -> bool:
    """Whether a transport may hold bytes it has not yet handed to the kernel.  Twisted's
    socket transports (TCP, UNIX) tell by their buffers; for any other the answer is yes."""
    queued = getattr(transport, "_tempDataLen", None)
    buffer = getattr(transport, "dataBuffer", None)
    offset = getattr(transport, "offset", None)
    if not isinstance(queued, int) or not isinstance(buffer, bytes | memoryview) \
            or not isinstance(offset, int):
        return True
    return queued > 0 or len(buffer) > offset


@implementer(interfaces.IPushProducer, interfaces.IHalfCloseableProtocol)
class LineProtocol(Protocol):
    """One telnet/netcat client."""

    log = Logger()

    def __init__(self, server: LineServer, clock: IReactorTime, session: Session,
                 clients: Clients) -> None:
        self.server = server
        self.clock = clock
        self.session = session
        self.clients = clients
        self._buffer = bytearray()  # an unfinished line, or input waiting to be served
        self._max_line = server.config.max_line_length
        self._idle_limit = server.config.idle_timeout
        self._line_timeout = server.config.line_timeout
        self._line_started: float | None = None  # when the unfinished line's first byte came
        self._line_call: IDelayedCall | None = None
        self._outbox: list[bytes] | None = None  # replies to the packet being served
        self._outbox_size = 0
        self.last_activity = 0.0  # when the last packet came (kept with an idle limit)
        self._bare_call: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None
        self._waiting = False  # a Deferred reply is outstanding
        self._answered_later = False  # ... and it was not there when the request was made
        self._paused = False  # the transport's output buffer is full
        self._reading = True
        self._closing = False
        self._eof = False
        self._opened = 0.0
        self._reader: InputReader | None = None  # lines are input for it (send's body)

    # -- connection --------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.out = cast(StreamTransport, self.transport)
        self._opened = self.last_activity = self.clock.seconds()
        self.session.push = self.push
        self.session.secure = interfaces.ISSLTransport.providedBy(self.transport)
        self.clients.opened(self)
        self.out.registerProducer(self, True)
        if self.server.log_commands:  # traced connections; otherwise one event, at the close
            peer = self.session.peer
            _events.info("connection_opened", f"connection opened: {peer}", peer=peer)
        if self.server.config.banner:
            self._write(Reply(BANNER))

    def connectionLost(self, reason: Failure | None = None) -> None:
        for call in (self._bare_call, self._abort_call, self._line_call):
            if call is not None and call.active():
                call.cancel()
        self._bare_call = self._abort_call = self._line_call = None
        if self._reader is not None:
            self._drop_reader(self._reader)
        self.server.release(self.session)
        self.session.push = no_push  # no cycle left: the connection is freed by its refcount
        self.clients.closed(self)
        peer, commands = self.session.peer, self.session.commands
        duration = self.clock.seconds() - self._opened
        _events.info("connection_closed",
                     f"connection closed: {peer} after {duration:.3f} s, {commands} commands",
                     peer=peer, duration=round(duration, 3), commands=commands)

    # -- input -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._bare_call is not None:
            self._cancel_bare_command()
        if self._idle_limit > 0:
            self.last_activity = self.clock.seconds()
        buffer = self._buffer
        if self._waiting or self._paused:
            buffer += data  # served once the reply is out or the client reads again
            if self._line_started is not None and b"\n" in data:
                self._line_started = None  # the unfinished line ended; any left is new
            self._after_serving()
        elif not buffer:
            self._serve_lines(data, 0)
        elif b"\n" in data:
            scan = len(buffer)  # the unfinished line before it holds no line end
            buffer += data
            self._line_started = None  # the unfinished line ends here; any left is new
            self._serve(scan)
        else:
            buffer += data  # the unfinished line grows: nothing to search again (slow drip)
            self._after_serving(len(buffer))

    def _serve(self, scan: int = 0) -> None:
        """Serve the buffered input, as far as the client lets us."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._serve_lines(data, scan)

    def _serve_lines(self, data: bytes, scan: int) -> None:
        """Serve the complete lines of ``data`` (no line end before ``scan``) as far as the
        client lets us, with one write for their replies; keep the rest in the buffer."""
        start = 0
        unfinished: int | None = None  # the last line's length, once all before it is served
        end = data.find(b"\n", scan)
        batch = 0 <= end < len(data) - 1  # more than a single line
        if batch:
            self._outbox = []
        try:
            while not (self._waiting or self._paused or self._closing):
                if end < 0:
                    unfinished = len(data) - start
                    break
                line = data[start:end]
                start = end + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self._max_line:
                    self._line_too_long(len(line))
                    return
                if self._reader is not None:
                    self._input(self._reader, line)
                elif line.strip():
                    self._request(line)
                end = data.find(b"\n", start)
        finally:
            if batch:
                self._flush()
                self._outbox = None
        if unfinished == 0 and self._reading and not self._eof:
            self._line_started = None
            return  # all served, nothing left to check (the common case)
        if self._closing:
            return
        if start < len(data):
            self._buffer += memoryview(data)[start:]
        self._after_serving(unfinished)

    def _after_serving(self, unfinished: int | None = None) -> None:
        """Check and act on what is left in the buffer once the complete lines are served.
        ``unfinished`` is the buffer's length when it holds only an unfinished line."""
        buffer = self._buffer
        if unfinished is None:
            unfinished = self._unfinished_length()
        elif unfinished and buffer.endswith(b"\r"):
            unfinished -= 1  # measured as the complete line will be, without its CR
        if unfinished > self._max_line:
            self._line_too_long(unfinished, complete=False)
            return
        if unfinished <= 0:
            self._line_started = None
        elif self._line_started is None and self._line_timeout > 0:
            self._line_begun()
        if self._waiting or self._paused:
            self._update_reading()
        elif self._eof:
            self._finish_after_eof()
        else:
            if buffer and len(buffer) <= 8 and self._reader is None:
                self._maybe_bare_command()
            if not self._reading:
                self._update_reading()

    def _unfinished_length(self) -> int:
        """The length of the buffer's unfinished last line (without its CR), looking back only
        as far as the limit needs unless the line is too long."""
        buffer = self._buffer
        floor = max(0, len(buffer) - self._max_line - 2)
        newline = buffer.rfind(b"\n", floor)
        if newline < 0 and floor:  # too long in any case; measure it for the log
            newline = buffer.rfind(b"\n")
        return len(buffer) - (newline + 1) - buffer.endswith(b"\r")

    def readConnectionLost(self) -> None:
        """The client sent EOF (``printf 'time' | nc ...``): serve what it sent, then close."""
        self._eof = True
        self._cancel_bare_command()
        if self._closing:
            self.out.loseConnection()
        elif not (self._buffer or self._waiting or self._paused or self._reader):
            self._close()  # nothing left to serve: the common end of a connection
        else:
            self._serve()

    def writeConnectionLost(self) -> None:
        """Our side is shut after a lingering close; the client's EOF or the abort ends it."""

    def _finish_after_eof(self) -> None:
        line = bytes(self._buffer).rstrip(b"\r")
        self._buffer.clear()
        if self._reader is not None:
            if line == b".":
                self._input(self._reader, line)
                if not (self._waiting or self._closing):
                    self._close()
            else:
                self._drop_reader(self._reader)
                self.close_with(error("input ended before the line holding only '.'; "
                                      "nothing was sent", close=True))
            return
        if line.strip():
            self._request(line)
            if self._waiting or self._closing:
                return
        self._close()

    def _line_begun(self) -> None:
        """An unfinished line is in the buffer: its clock starts (one timer per connection,
        armed only while a line is unfinished; it finds out at its end whether the line it was
        armed for is still the one waiting)."""
        self._line_started = self.clock.seconds()
        if self._line_call is None:
            self._line_call = self.clock.callLater(self._line_timeout, self._check_line_time)

    def _check_line_time(self) -> None:
        self._line_call = None
        started = self._line_started
        if started is None or self._closing or self._eof:
            return
        now = self.clock.seconds()
        if self._waiting or self._paused:
            started = self._line_started = now  # we are the slow side: the line's time restarts
        deadline = started + self._line_timeout
        if now >= deadline:
            self._line_timed_out(now - started)
        else:
            self._line_call = self.clock.callLater(deadline - now, self._check_line_time)

    def _line_timed_out(self, waited: float) -> None:
        """A line not ended within ``line_timeout`` (a slowloris client): say so and close."""
        timeout = self._line_timeout
        self.log.info("{peer}: line not ended within {timeout:g} s ({length} bytes so far); "
                      "closing", peer=self.session.peer, timeout=timeout,
                      length=self._unfinished_length(), waited=round(waited, 3),
                      event="line_timeout")
        self._buffer.clear()
        self._line_started = None
        self.close_with(error(f"line not ended within {timeout:g} s, closing", close=True))

    def _maybe_bare_command(self) -> None:
        if bytes(self._buffer).strip().lower() not in BARE_COMMANDS:
            return
        wait = self.server.config.bare_command_wait
        if wait <= 0:
            self._serve_bare_command()
        else:
            self._bare_call = self.clock.callLater(wait, self._serve_bare_command)

    def _serve_bare_command(self) -> None:
        self._bare_call = None
        if self._closing or self._paused or self._waiting:
            return
        line = bytes(self._buffer)
        self._buffer.clear()
        self._request(line)
        self._serve()

    def _cancel_bare_command(self) -> None:
        if self._bare_call is not None:
            if self._bare_call.active():
                self._bare_call.cancel()
            self._bare_call = None

    def _request(self, line: bytes) -> None:
        result = self.server.execute(self.session, line)
        if type(result) is Reply:
            self._write(result)
        else:
            self._await(result)  # type: ignore[arg-type]

    def _input(self, reader: InputReader, line: bytes) -> None:
        """A line of input for the reader: the lone ``.`` ends it, ``..`` is a stuffed ``.``."""
        if line == b".":
            self._reader = None
            self._answer(self.server.finish_input(self.session, reader))
        else:
            reader.line(line[1:] if line.startswith(b".") else line)

    def _drop_reader(self, reader: InputReader) -> None:
        self._reader = None
        reader.abandon()

    def _answer(self, result: Reply | Deferred[Reply]) -> None:
        if type(result) is Reply:
            self._write(result)
        else:
            self._await(result)  # type: ignore[arg-type]

    def _await(self, result: Deferred[Reply]) -> None:
        """Hold further requests until ``result`` fires.  A Deferred that has fired already
        (a handler that failed at once) is answered in place, and the caller goes on serving;
        one that fires later serves what waited meanwhile."""
        self._waiting = True
        self._answered_later = False
        result.addCallback(self._deferred_reply)
        self._answered_later = self._waiting

    def _deferred_reply(self, reply: Reply) -> None:
        self._waiting = False
        if self._closing:
            return
        self._write(reply)
        if self._answered_later:
            self._serve()

    def _update_reading(self) -> None:
        """Read from the socket unless output is stuck or too much input waits unserved."""
        want = not self._paused and not (self._waiting and len(self._buffer) > INPUT_BACKLOG)
        if want != self._reading and not (self._closing or self._eof):
            self._reading = want
            if want:
                self.out.resumeProducing()
            else:
                self.out.pauseProducing()

    # -- output ------------------------------------------------------------------------

    def _write(self, reply: Reply) -> None:
        if self._outbox is None:
            self.out.write(reply.encode())
        else:
            self._send(reply.encode())
        if reply.close:
            self._close()
        elif reply.reader is not None:
            self._reader = reply.reader

    def _send(self, data: bytes) -> None:
        """Write, or add to the replies of the packet being served (written together)."""
        outbox = self._outbox
        if outbox is None:
            self.out.write(data)
            return
        outbox.append(data)
        self._outbox_size += len(data)
        if self._outbox_size > OUTBOX_LIMIT:
            self._flush()

    def _flush(self) -> None:
        outbox = self._outbox
        if outbox:
            data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            outbox.clear()
            self._outbox_size = 0
            self.out.write(data)

    def push(self, line: str) -> None:
        """Send an unsolicited line (such as a new-mail notice) between replies."""
        if not self._closing:
            self._send((line + "\r\n").encode("utf-8"))

    def pauseProducing(self) -> None:
        self._paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._paused = False
        self._serve()

    def stopProducing(self) -> None:
        self._closing = True

    # -- closing -----------------------------------------------------------------------

    def _close(self) -> None:
        """Close once the output is flushed; abort if the client will not take it."""
        if self._closing:
            return
        self._closing = True
        self.server.release_address(self.session)  # not after the lingering close below
        self._flush()  # the replies served before this one go first
        self._cancel_bare_command()
        self.out.unregisterProducer()
        if not (self._reading or self._eof):
            self.out.resumeProducing()  # drain (and drop) input, so the client's EOF is seen
        if self._eof and not holds_output(self.transport):
            # The client is gone and all we wrote is with the kernel: close at once, as Twisted
            # does for a protocol that is not half-closeable, instead of a reactor pass spent
            # on an empty write.  (The common end of a connection: the client's EOF.)
            # Behind a PROXY listener the transport is a wrapper: its socket's is beneath it.
            raw = getattr(self.transport, "socket_transport", self.transport)
            raw.connectionLost(connectionDone)  # type: ignore[union-attr]
            return
        # A lingering close: shut our side once the output is flushed and wait for the
        # client's EOF, so that input still in flight cannot turn the close into a reset
        # that destroys our last reply.  TLS has no half-close; it closes at once.
        # (A TLS transport would pass loseWriteConnection on to the TCP socket underneath and
        # cut its own pending records, so TLS connections are closed the ordinary way.)
        half_close = None if self.session.secure else getattr(
            self.transport, "loseWriteConnection", None)
        if half_close is None or self._eof:
            self.out.loseConnection()
        else:
            half_close()
        grace = self.server.config.close_grace
        self._abort_call = self.clock.callLater(grace, self.out.abortConnection)

    def close_with(self, reply: Reply) -> None:
        """Send a last line and close (idle timeout, shutdown, limits)."""
        if not self._closing:
            self._write(replace(reply, close=True))

    def _line_too_long(self, length: int, complete: bool = True) -> None:
        """Refuse a line over the limit and close.  ``length`` is what was seen of it: the
        whole line when its end came, else only the part received so far ("at least")."""
        seen = f"{length}" if complete else f"at least {length}"
        self.log.warn("{peer}: line of {seen} bytes exceeds the limit of {limit}; closing",
                      peer=self.session.peer, seen=seen, length=length, complete=complete,
                      limit=self._max_line, event="line_too_long")
        self._buffer.clear()
        self.close_with(error("line too long", close=True))

    @property
    def closing(self) -> bool:
        return self._closing

    def set_idle_limit(self, seconds: float) -> None:
        """A reload changed ``idle_timeout``: it applies from now on (0: off)."""
        if self._idle_limit <= 0 < seconds:
            self.last_activity = self.clock.seconds()  # not kept while off: quiet from now
        self._idle_limit = seconds

    def idle_timeout(self) -> None:
        """Quiet for longer than the limit (the factory watches): say so and close.  A client
        that waits for pushed lines (``watch on``) is not idle: it is kept, its quiet time
        starts again, and TCP keepalive is turned on to find out if it is dead."""
        awaits_push = self.session.awaits_push
        if awaits_push is not None and awaits_push(self.session):
            self.last_activity = self.clock.seconds()
            keep_alive(self.transport)
            return
        timeout = self._idle_limit
        self.log.info("{peer}: idle for {timeout:g} s; closing", peer=self.session.peer,
                      timeout=timeout, event="idle_timeout")
        self.close_with(error(f"idle timeout ({timeout:g} s), closing", close=True))

