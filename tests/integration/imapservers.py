"""Three REAL IMAP servers behind one interface, for tests that are about server behaviour.

Stdlib only. ``ImapServer`` is what a test sees, whichever server runs:

    dovecot  Dovecot 2.3: the instance of mailserver.py (with its Postfix), wrapped here
    cyrus    Cyrus IMAP 3.6: cyrus.sh (master, imapd, lmtpd, idled), its own directory
    courier  Courier-IMAP 5.0: courier.sh (authdaemond, couriertcpd, imapd); ONE at a time
             on a machine (Courier's authentication uses system paths, see courier.sh)

Cyrus and Courier are started by scriptservers.py (``ScriptServer``). Each listens on 127.0.0.1: ``imap_port`` (STARTTLS) and ``imaps_port`` (implicit TLS), with a
certificate of its own test CA (``ca_file``); users ``alice`` and ``bob`` (``users``, the
passwords). Mailbox names differ: Dovecot's personal namespace has no prefix, Cyrus's and
Courier's (as Debian configures them) is ``INBOX.`` with ``.`` as the delimiter, so a test
names a mailbox through ``server.mailbox("Work")`` (``Work`` or ``INBOX.Work``); ``Trash``,
``Work`` and ``Fresh`` exist for every user of Cyrus and Courier.

    server = start_script_server("cyrus")      # or ("courier", idle=False, uidplus=False)
    try:
        box = server.fresh_mailbox("alice", raw_message(subject="hi"))
        server.deliver("alice", "new mail")     # the server's own delivery path
        assert server.message_count("alice") == 1
        server.kill(); server.start()           # a crash and a restart, same ports and mail
    finally:
        server.shutdown()
"""

from __future__ import annotations

import imaplib
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from mailserver import MailServer, MailServerError, _tail

SERVERS = ("dovecot", "cyrus", "courier")


def raw_message(subject: str = "test", body: str = "hello\n", *,
                sender: str = "Tester <tester@example.org>",
                to: str = "alice@example.test") -> bytes:
    """A plain message as IMAP wants it (CRLF line ends), with a unique Message-ID."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain="mailsocketd.test")
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Listed:
    """One message as ``list_messages`` sees it."""

    uid: int
    flags: tuple[str, ...]
    subject: str


@dataclass(eq=False)
class ImapServer:
    """One running IMAP server of the tests; see the module docstring."""

    name: str  # "dovecot", "cyrus", "courier"
    dir: Path
    host: str
    imap_port: int
    imaps_port: int
    ca_file: Path
    users: dict[str, str]
    prefix: str  # the personal namespace's prefix: "" or "INBOX."
    delimiter: str
    idle: bool  # IDLE offered
    uidplus: bool  # UIDPLUS offered
    version: str
    log_file: Path
    # False: IDLE reports new mail only every 60 s (Courier's Debian default, ENHANCEDIDLE=0)
    idle_at_once: bool = True
    protocol_log: Path | None = None  # a trace of the sessions (Cyrus: per user; Courier)
    other_ca_file: Path | None = None  # a CA that signed nothing here, for negative tests
    stopped: bool = False  # shut down for good

    @property
    def label(self) -> str:
        """The name, and what this instance lacks: ``courier-noidle-nouidplus``, ``courier-idle60``."""
        return (self.name + ("" if self.idle else "-noidle") + ("" if self.uidplus else "-nouidplus")
                + ("" if self.idle_at_once or not self.idle else "-idle60"))

    def mailbox(self, name: str) -> str:
        """A mailbox's full name in this server's personal namespace: ``Work`` -> ``INBOX.Work``
        on Cyrus and Courier; ``INBOX`` and a name that is full already stay themselves."""
        if name.upper() == "INBOX" or (self.prefix and name.startswith(self.prefix)):
            return name
        return self.prefix + name

    @property
    def trash(self) -> str:
        return self.mailbox("Trash")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against its test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def log_tail(self, lines: int = 15) -> str:
        return _tail(self.log_file, lines)

    # -- IMAP as another client ---------------------------------------------------------
    @contextmanager
    def session(self, user: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib session of ``user`` (STARTTLS, verified); logged out after."""
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        try:
            conn.starttls(self.ssl_context())
            conn.login(user, self.users[user])
            yield conn
        finally:
            try:
                conn.logout()
            except (imaplib.IMAP4.error, OSError):
                conn.shutdown()

    def append(self, user: str, mailbox: str, *messages: bytes, flags: str = "",
               date: str | None = None) -> None:
        """APPEND each message to ``mailbox`` (a full name) as ``user``, in one session;
        ``date``: the internal date (``"25-Nov-2026 14:03:07 +0100"``), else now."""
        with self.session(user) as conn:
            for raw in messages:
                when = f'"{date}"' if date else imaplib.Time2Internaldate(time.time())
                typ, data = conn.append(_quoted(mailbox), flags, when, raw)
                if typ != "OK":
                    raise MailServerError(f"{self.name}: APPEND to {mailbox}: {typ} {data}")

    def populate(self, user: str, n: int, mailbox: str = "INBOX") -> None:
        """n messages "Test message i of n" (unseen, ~1 KB) in ``mailbox``, created if need be
        (Dovecot: written into the Maildir, fast; else APPEND)."""
        if mailbox != "INBOX":
            with self.session(user) as conn:
                conn.create(_quoted(mailbox))  # NO when it exists: fine
        body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 16
        self.append(user, mailbox, *(
            raw_message(f"Test message {i} of {n}", f"Message {i}\n{body}",
                        sender=f"Sender {i % 97} <sender{i % 97}@example.org>",
                        to=f"{user}@example.test") for i in range(1, n + 1)))

    def create_mailbox(self, user: str, mailbox: str) -> None:
        with self.session(user) as conn:
            typ, data = conn.create(_quoted(mailbox))
            if typ != "OK":
                raise MailServerError(f"{self.name}: CREATE {mailbox}: {typ} {data}")

    def delete_mailbox(self, user: str, mailbox: str) -> None:
        """Delete a mailbox and its messages, as another client would."""
        with self.session(user) as conn:
            typ, data = conn.delete(_quoted(mailbox))
            if typ != "OK":
                raise MailServerError(f"{self.name}: DELETE {mailbox}: {typ} {data}")

    def fresh_mailbox(self, user: str, *messages: bytes, name: str = "") -> str:
        """A new mailbox of ``user`` holding ``messages`` (oldest first); its full name."""
        box = self.mailbox(name or "T-" + uuid.uuid4().hex[:8])
        self.create_mailbox(user, box)
        if messages:
            self.append(user, box, *messages)
        return box

    def uidvalidity(self, user: str, mailbox: str = "INBOX") -> int:
        """UIDVALIDITY of the mailbox (STATUS, as another client)."""
        return self._status_item(user, mailbox, "UIDVALIDITY")

    def message_count(self, user: str, mailbox: str = "INBOX") -> int:
        """MESSAGES of the mailbox (STATUS, as another client)."""
        return self._status_item(user, mailbox, "MESSAGES")

    def _status_item(self, user: str, mailbox: str, item: str) -> int:
        with self.session(user) as conn:
            typ, data = conn.status(_quoted(mailbox), f"({item})")
        if typ != "OK" or not data or not isinstance(data[0], bytes):
            raise MailServerError(f"{self.name}: STATUS {mailbox}: {typ} {data}")
        return int(data[0].rsplit(item.encode(), 1)[1].strip(b" ()").split()[0])

    def list_messages(self, user: str, mailbox: str = "INBOX") -> list[Listed]:
        """Every message of the mailbox, oldest first (EXAMINE: nothing is changed)."""
        with self.session(user) as conn:
            typ, data = conn.select(_quoted(mailbox), readonly=True)
            if typ != "OK":
                raise MailServerError(f"{self.name}: EXAMINE {mailbox}: {typ} {data}")
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        found: list[Listed] = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, header = item[0].decode(), item[1].decode(errors="replace")
            uid = int(meta.split("UID ", 1)[1].split()[0].rstrip(")"))
            flags = tuple(meta.split("FLAGS (", 1)[1].split(")", 1)[0].split())
            subject = header.partition(":")[2].strip()
            found.append(Listed(uid, flags, subject))
        return sorted(found, key=lambda m: m.uid)

    def clear_mailbox(self, user: str, mailbox: str = "INBOX") -> None:
        """Expunge every message of the mailbox."""
        with self.session(user) as conn:
            typ, data = conn.select(_quoted(mailbox))
            if typ != "OK":
                raise MailServerError(f"{self.name}: SELECT {mailbox}: {typ} {data}")
            if data and data[0] not in (b"0", None):
                conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                conn.expunge()
            conn.close()

    def deliver(self, user: str, subject: str, body: str = "hello\n", *,
                mailbox: str = "INBOX", wait: bool = True) -> None:
        """A new message for ``user`` in ``mailbox`` the way mail arrives at this server
        (Dovecot: SMTP to Postfix, then LMTP; Cyrus: LMTP; Courier: a file in Maildir/new).
        Returns once it is stored (``wait`` matters only for Dovecot's SMTP)."""
        raise NotImplementedError

    # -- the server's life --------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server (SIGTERM); return when its processes are gone. Mail is kept."""
        raise NotImplementedError

    def kill(self) -> None:
        """Crash it: SIGKILL to every process it runs, sessions included."""
        raise NotImplementedError

    def start(self) -> None:
        """Start it again after stop() or kill(): same ports, users and mail."""
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def shutdown(self, *, remove_dir: bool = True) -> None:
        """Stop for good and remove its directory. Idempotent."""
        raise NotImplementedError


def _quoted(mailbox: str) -> str:
    """A mailbox name as imaplib must be given it (it sends arguments as they are): quoted."""
    if mailbox.startswith('"'):
        return mailbox
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(eq=False)
class DovecotServer(ImapServer):
    """The Dovecot of a ``MailServer`` (which keeps the Postfix and its own fixture)."""

    mail: MailServer | None = None

    @classmethod
    def wrap(cls, mail: MailServer) -> DovecotServer:
        if mail.ca_file is None or mail.imaps_port is None:
            raise MailServerError("the IMAP server tests need the Dovecot with TLS")
        return cls(name="dovecot", dir=mail.dir, host=mail.host, imap_port=mail.imap_port,
                   imaps_port=mail.imaps_port, ca_file=mail.ca_file, users=dict(mail.users),
                   prefix="", delimiter=".", idle=True, uidplus=True, version="Dovecot 2.3",
                   log_file=mail.dovecot_log, mail=mail)

    @property
    def _mail(self) -> MailServer:
        assert self.mail is not None
        return self.mail

    def deliver(self, user: str, subject: str, body: str = "hello\n", *,
                mailbox: str = "INBOX", wait: bool = True) -> None:
        if mailbox == "INBOX":
            self._mail.deliver(user, subject, body, wait=wait)
        else:
            self.append(user, mailbox, raw_message(subject, body, to=f"{user}@example.test"))

    def clear_mailbox(self, user: str, mailbox: str = "INBOX") -> None:
        self._mail.clear_mailbox(user, mailbox)

    def populate(self, user: str, n: int, mailbox: str = "INBOX") -> None:
        self._mail.populate(user, n, mailbox)

    def message_count(self, user: str, mailbox: str = "INBOX") -> int:
        return self._mail.message_count(user, mailbox)

    def stop(self) -> None:
        self._mail.stop_dovecot()

    def kill(self) -> None:
        self._mail.kill_dovecot()

    def start(self) -> None:
        self._mail.start_dovecot()

    def running(self) -> bool:
        return self._mail.dovecot_running()

    def shutdown(self, *, remove_dir: bool = True) -> None:
        """Nothing: the ``mailserver`` fixture owns this Dovecot."""
