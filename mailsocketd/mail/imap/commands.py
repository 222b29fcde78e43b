"""UserImapClient: the IMAP commands behind a line user's mail commands, with bounded replies.

A ImapClient (IDLE, timeouts, limits) that also speaks SELECT/EXAMINE, LIST, FETCH by
sequence range, and the UID commands (FETCH, SEARCH, STORE, EXPUNGE, MOVE, COPY).  Twisted's
IMAP4Client has no UID EXPUNGE or MOVE, and its FETCH helpers turn bodies into ``str``: these
methods send the commands themselves and parse the untagged replies into plain values.

Its limits are per connection, sized from the ``[imap]`` configuration: one literal may hold
``read_limit`` bytes (a ``read``), one reply ``list_max`` header blocks of at most
HEADER_LIMIT bytes each (a ``list``); anything larger still drops the connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from mailsocketd.mail.address import ServerAddress
from mailsocketd.mail.errors import (
    CheckTimeout,
    MailError,
    ProtocolViolation,
    ServerClosed,
    ServerRefused,
    describe_failure,
    failure_kind,
)
from mailsocketd.mail.imap.client import ImapClient, command, mailbox_arg
from mailsocketd.mail.imap.login import log_in
from mailsocketd.mail.imap.replies import (
    FetchedMessage,
    ListedMessage,
    MailboxEntry,
    Selected,
    decoded_name,
    mailbox_key,
    parse_body,
    parse_headers,
    parse_mailboxes,
    parse_selected,
    uid_set,
)
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.tls import ReactorClock, TlsPolicy

# The replies' values and parsers live in replies.py; the values are exported from here too.
__all__ = ["HEADER_FIELDS", "HEADER_ITEMS", "HEADER_LIMIT", "FetchedMessage", "ListedMessage",
           "MailboxEntry", "Selected", "UserImapClient", "id_arguments", "log_in_user", "loss_line",
           "mailbox_key", "uid_set", "unreachable"]

HEADER_FIELDS = b"DATE FROM SUBJECT CONTENT-TYPE"  # Content-Type: the charset of raw 8-bit headers
HEADER_LIMIT = 2048  # bytes of the HEADER_FIELDS block fetched per listed message
HEADER_ITEMS = (b"(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS ("
                + HEADER_FIELDS + b")]<0." + str(HEADER_LIMIT).encode() + b">)")
MAX_MAILBOX_LINES = 10000  # LIST replies accepted (the session STATUSes far fewer)
T = TypeVar("T")
SELECTING = (b"SELECT", b"EXAMINE")


class UserImapClient(ImapClient):
    """A ImapClient with the commands of a user's session and limits sized for them."""

    def __init__(self, clock: ReactorClock, command_timeout: float = 30.0, label: str = "imap", *,
                 read_limit: int = 4 << 20, list_max: int = 500) -> None:
        super().__init__(clock, command_timeout, label)
        self.MAX_LITERAL = max(ImapClient.MAX_LITERAL, read_limit, HEADER_LIMIT)
        self.MAX_RESPONSE = max(ImapClient.MAX_RESPONSE, read_limit + 64 * 1024,
                                list_max * (HEADER_LIMIT + 512) + 64 * 1024,
                                MAX_MAILBOX_LINES * 256)
        self.MAX_UNTAGGED = max(ImapClient.MAX_UNTAGGED, 2 * list_max + 100,
                                MAX_MAILBOX_LINES + 100)
        # EXISTS of the selected mailbox, kept current from every untagged EXISTS and EXPUNGE
        # whatever command (or IDLE) they come with, so a mailbox that stays selected need not
        # be selected again: SELECT costs in proportion to the mailbox on some servers.
        self.exists: int | None = None

    def _untagged(self, rest: bytes) -> None:
        """Keep ``n FETCH`` / ``n EXISTS`` lines in the reply of the command that collects them
        (ImapClient reports them as changes only); an EXISTS outside SELECT is also reported:
        the selected mailbox grew."""
        cmd = self.tags.get(self.waiting) if self.waiting else None
        words = rest.split(b" ", 2)
        is_change = len(words) >= 2 and words[0].isdigit() and words[1].upper() in (
            b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT")
        if is_change:
            self._track_exists(int(words[0]), words[1].upper())
        if cmd is None or cmd is self._idle_command or not is_change:
            super()._untagged(rest)
            return
        if len(cmd.lines) >= self.MAX_UNTAGGED:
            raise ProtocolViolation(f"more than {self.MAX_UNTAGGED} untagged responses "
                                    f"to one {cmd.command.decode('ascii', 'replace')}")
        cmd.lines.append(rest)
        if (words[1].upper() == b"EXISTS" and cmd.command not in SELECTING
                and self.on_change is not None):
            self.on_change("exists")

    def _track_exists(self, number: int, kind: bytes) -> None:
        if kind == b"EXISTS":
            self.exists = number
        elif kind == b"EXPUNGE" and self.exists:
            self.exists -= 1

    async def _reply(self, name: bytes, args: bytes | None = None) -> list[list[Any]]:
        """Send one command; its parsed untagged lines (Command.finish keeps the known kinds)."""
        lines, _last = await self.run(command(name, args))
        return list(lines)

    def _parse(self, parse: Callable[..., T], *args: Any) -> T:
        """Run a reply parser; a malformed reply drops the connection (nothing after it can
        be trusted) and raises ProtocolViolation."""
        try:
            return parse(*args)
        except ProtocolViolation as e:
            self.drop(e)
            raise

    async def select_mailbox(self, mailbox: str, readonly: bool) -> Selected:
        """SELECT (read-write) or EXAMINE (read-only): EXISTS, UIDVALIDITY, UIDNEXT."""
        verb = b"EXAMINE" if readonly else b"SELECT"
        self.exists = None
        lines, last = await self.run(command(verb, mailbox_arg(mailbox)))
        selected = self._parse(parse_selected, lines, last, mailbox, readonly)
        self.exists = selected.exists
        return selected

    async def list_mailboxes(self) -> list[MailboxEntry]:
        """``LIST "" "*"``: every mailbox, names decoded from modified UTF-7."""
        return parse_mailboxes(await self._reply(b"LIST", b'"" "*"'))

    async def fetch_headers(self, first: int, last: int) -> list[ListedMessage]:
        """One FETCH of the messages ``first:last``: UID, flags, size, arrival date,
        Date/From/Subject; newest (highest number) first."""
        lines = await self._reply(b"FETCH", f"{first}:{last} ".encode() + HEADER_ITEMS)
        return self._parse(parse_headers, lines, first, last)

    async def uid_fetch_headers(self, uids: Sequence[int]) -> list[ListedMessage]:
        """What ``fetch_headers`` fetches, of the messages with these UIDs (those that
        exist)."""
        lines = await self._reply(b"UID FETCH", uid_set(uids) + b" " + HEADER_ITEMS)
        return self._parse(parse_headers, lines)

    async def personal_namespace(self) -> tuple[str, str | None] | None:
        """NAMESPACE (RFC 2342): the first personal namespace's prefix and delimiter
        (``("INBOX.", ".")`` on Cyrus and Courier as Debian sets them up), None if none."""
        for parts in await self._reply(b"NAMESPACE"):
            if len(parts) >= 2 and parts[0] == b"NAMESPACE" and isinstance(parts[1], list):
                for space in parts[1]:
                    if not (isinstance(space, list) and space and isinstance(space[0], bytes)):
                        continue
                    prefix = decoded_name(space[0])
                    delimiter = space[1] if len(space) > 1 else None
                    if prefix is not None:
                        return prefix, (delimiter.decode("utf-8", "replace")
                                        if isinstance(delimiter, bytes) else None)
        return None

    async def fetch_body(self, uid: int, limit: int) -> FetchedMessage | None:
        """``UID FETCH uid (RFC822.SIZE BODY[]<0.limit>)`` (not PEEK: the server sets \\Seen);
        None when the server has no such UID."""
        args = f"{uid} (UID RFC822.SIZE BODY[]<0.{limit}>)".encode()
        lines = await self._reply(b"UID FETCH", args)
        return self._parse(parse_body, lines, uid, limit)

    async def uid_search(self, uids: Sequence[int]) -> list[int]:
        """Which of ``uids`` exist in the selected mailbox (``UID SEARCH UID set``)."""
        wanted = set(uids)
        found: set[int] = set()
        for parts in await self._reply(b"UID SEARCH", b"UID " + uid_set(uids)):
            if parts and parts[0] == b"SEARCH":
                found.update(int(p) for p in parts[1:] if isinstance(p, bytes) and p.isdigit())
        return sorted(found & wanted)

    async def uid_store_deleted(self, uids: Sequence[int]) -> None:
        await self._reply(b"UID STORE", uid_set(uids) + b" +FLAGS.SILENT (\\Deleted)")

    async def uid_expunge(self, uids: Sequence[int]) -> None:
        """UID EXPUNGE (UIDPLUS): removes exactly these, not what others marked \\Deleted."""
        await self._reply(b"UID EXPUNGE", uid_set(uids))

    async def uid_transfer(self, verb: bytes, uids: Sequence[int], target: str) -> None:
        """``UID MOVE`` or ``UID COPY`` the messages to ``target``."""
        await self._reply(b"UID " + verb, uid_set(uids) + b" " + mailbox_arg(target))


def unreachable(error: BaseException, timeout: float) -> MailError:
    """A failure to connect or log in, as a MailError (MailErrors pass unchanged)."""
    if isinstance(error, MailError):
        return error
    if isinstance(error, CancelledError):
        return CheckTimeout("the connection to the mail server", timeout)
    return MailError(f"cannot reach the mail server: {describe_failure(Failure(error))}")


def id_arguments(client_ip: str) -> bytes | None:
    """The ID (RFC 2971) arguments that tell the IMAP server the line client's address
    (``x-originating-ip``, which Dovecot takes from ``login_trusted_networks``); None for
    anything that is not an IP address."""
    try:
        address = ipaddress.ip_address(client_ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return b'("x-originating-ip" "' + str(mapped or address).encode("ascii") + b'")'


async def send_id(client: UserImapClient, client_ip: str) -> None:
    """ID with the line client's address, if the server offers ID; a refusal is no error
    (the login goes on, the server then sees only the daemon's address)."""
    arguments = id_arguments(client_ip)
    caps = await client.capabilities(cached=True)
    if arguments is None or b"ID" not in caps:
        return
    with contextlib.suppress(ServerRefused):
        await client.run(command(b"ID", arguments))


async def log_in_user(client: UserImapClient, address: ServerAddress, tls: TlsPolicy,
                      user: str, password: Secret, *, timeout: float,
                      client_ip: str | None = None) -> frozenset[bytes]:
    """STARTTLS (verified) or refuse cleartext, ID (``client_ip``, see ``send_id``),
    authenticate: the capabilities after login.  The whole login takes at most ``timeout``;
    on failure the connection is dropped."""

    async def identify_then_password() -> Secret:
        # log_in asks for the password after TLS and right before authenticating: where
        # Dovecot must see the ID for the login (and its penalties) to count for client_ip.
        if client_ip is not None:
            await send_id(client, client_ip)
        return password

    client.deadline = client.clock.seconds() + timeout
    try:
        caps = await log_in(client, address, tls, user,
                            lambda: Deferred.fromCoroutine(identify_then_password()))
    except Exception as e:
        client.drop(MailError("login failed"))
        raise unreachable(e, timeout) from None
    client.deadline = None
    return frozenset(caps)


def loss_line(reason: Failure) -> str:
    """Why the connection is gone, as one line for the user (on_lost's reason)."""
    kind = failure_kind(reason)
    if isinstance(reason.value, ServerClosed):
        said = str(reason.value).removeprefix("the server closed the connection: ")
        return f"the mail server closed the connection ({said})"
    if kind == "closed":
        return "the mail server closed the connection"
    return f"lost the connection to the mail server ({describe_failure(reason)})"
