"""Three REAL IMAP servers behind one interface, for tests that are about server behaviour.

Stdlib only. ``ImapServer`` is what a test sees, whichever server runs:

    dovecot  Dovecot 2.3: the instance of mailserver.py (with its Postfix), wrapped
    cyrus    Cyrus IMAP 3.6: cyrus.sh (master, imapd, lmtpd, idled), its own directory
    courier  Courier-IMAP 5.0: courier.sh (authdaemond, couriertcpd, imapd); ONE at a time
             on a machine (Courier's authentication uses system paths, see courier.sh)

Each listens on 127.0.0.1: ``imap_port`` (STARTTLS) and ``imaps_port`` (implicit TLS), with a
certificate of its own test CA (``ca_file``); users ``alice`` and ``bob`` (``users``, the
passwords). Mailbox names differ: Dovecot's personal namespace has no prefix, Cyrus's and
Courier's (as Debian configures them) is ``INBOX.`` with ``.`` as the delimiter, so a test
names a mailbox through ``server.mailbox("Work")`` (``Work`` or ``INBOX.Work``); ``Trash``,
``Work`` and ``Fresh`` exist for every user of Cyrus and Courier.

    server = start_imap_server("cyrus")        # or ("courier", idle=False, uidplus=False)
    try:
        box = server.fresh_mailbox("alice", raw_message(subject="hi"))
        server.deliver("alice", "new mail")     # the server's own delivery path
        assert server.message_count("alice") == 1
        server.kill(); server.start()           # a crash and a restart, same ports and mail
    finally:
        server.shutdown()
"""

from __future__ import annotations

import atexit
import imaplib
import os
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from mailserver import (
    EXIT_PORT_IN_USE,
    PACKAGES_SCRIPT,
    MailServer,
    MailServerError,
    PortInUseError,
    _read_env,
    _run_script,
    _tail,
    free_port_base,
)

HERE = Path(__file__).resolve().parent
SERVERS = ("dovecot", "cyrus", "courier")
SCRIPTS = {"cyrus": HERE / "cyrus.sh", "courier": HERE / "courier.sh"}
PKG_CACHE = Path(os.environ.get("TEST_PKG_CACHE", "/var/cache/mailsocketd-tests"))
# what the scripts run that a missing package would take away
REQUIRED_FILES = {
    "cyrus": (PKG_CACHE / "cyrus-imapd/usr/lib/cyrus/bin/imapd", Path("/usr/lib/cyrus/bin/master"),
              Path("/usr/sbin/saslpasswd2")),
    "courier": (PKG_CACHE / "courier-imap/usr/bin/imapd", Path("/usr/sbin/couriertcpd"),
                Path("/usr/lib/courier/courier-authlib/authdaemond"), Path("/usr/sbin/userdb")),
}


def missing_server_prerequisites(name: str) -> list[str]:
    """What keeps the Cyrus or Courier of these tests from starting here (empty: nothing)."""
    problems = [f"missing {path}: install it with {PACKAGES_SCRIPT} (as root)"
                for path in REQUIRED_FILES.get(name, ()) if not path.exists()]
    if os.geteuid() != 0:
        problems.append(f"the test {name} needs root")
    return problems


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
        self._deliver_raw(user, raw_message(subject, body, to=f"{user}@example.test"),
                          mailbox, wait)

    def _deliver_raw(self, user: str, raw: bytes, mailbox: str, wait: bool) -> None:
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

    def _deliver_raw(self, user: str, raw: bytes, mailbox: str, wait: bool) -> None:
        raise AssertionError("deliver() is overridden")

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


@dataclass(eq=False)
class ScriptServer(ImapServer):
    """Cyrus or Courier, run by its script (cyrus.sh, courier.sh) from ``dir``."""

    @property
    def script(self) -> Path:
        return SCRIPTS[self.name]

    def _run(self, command: str, *args: str, stdin: bytes | None = None,
             timeout: float = 60) -> None:
        cmd = [str(self.script), command, str(self.dir), *args]
        try:
            r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                               check=False)
        except subprocess.TimeoutExpired as e:
            raise MailServerError(f"{shlex.join(cmd)} timed out after {timeout} s") from e
        if r.returncode != 0:
            raise MailServerError(f"{shlex.join(cmd)} failed (exit {r.returncode}):\n"
                                  f"{r.stderr.decode(errors='replace').strip()}"
                                  + self.log_tail())

    def _deliver_raw(self, user: str, raw: bytes, mailbox: str, wait: bool) -> None:
        self._run("deliver", user, mailbox, stdin=raw)

    def stop(self) -> None:
        self._run("stop")

    def kill(self) -> None:
        self._run("kill")

    def start(self) -> None:
        self._run("start")

    def running(self) -> bool:
        r = subprocess.run([str(self.script), "status", str(self.dir)], capture_output=True,
                           timeout=30, check=False)
        return r.returncode == 0

    def shutdown(self, *, remove_dir: bool = True) -> None:
        if self.stopped:
            return
        self._run("stop")
        self.stopped = True
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @classmethod
    def from_dir(cls, directory: Path) -> ScriptServer:
        env = _read_env(directory / "server.env")
        return cls(
            name=env["SERVER"], dir=directory, host="127.0.0.1",
            imap_port=int(env["IMAP_PORT"]), imaps_port=int(env["IMAPS_PORT"]),
            ca_file=Path(env["CA"]), other_ca_file=Path(env["OTHER_CA"]),
            users=dict(u.split(":", 1) for u in env["MAIL_USERS"].split()),
            prefix=env["NAMESPACE_PREFIX"], delimiter=env["DELIMITER"],
            idle=env["NO_IDLE"] != "1", uidplus=env["NO_UIDPLUS"] != "1",
            version=env["SERVER_VERSION"], log_file=Path(env["LOG"]),
            idle_at_once=env.get("ENHANCEDIDLE", "1") == "1",
            protocol_log=Path(env["PROTOCOL_LOG"]))


def start_script_server(name: str, *, idle: bool = True, uidplus: bool = True,
                        settings: dict[str, str] | None = None,
                        attempts: int = 5) -> ScriptServer:
    """Start a Cyrus or Courier in a new private directory /tmp/msd.XXXXXXXX on a free port
    base (IMAP base+143, IMAPS base+993). ``settings``: more of the script's variables
    (Courier: ``{"ENHANCEDIDLE": "1", "TRACE": "0"}``). Stopped at interpreter exit if nobody
    did."""
    problems = missing_server_prerequisites(name)
    if problems:
        raise MailServerError("; ".join(problems))
    for attempt in range(attempts):
        base = free_port_base()
        directory = Path(tempfile.mkdtemp(prefix="msd.", dir="/tmp"))
        env = dict(os.environ, IMAP_PORT=str(base + 143), IMAPS_PORT=str(base + 993),
                   MAIL_USERS="alice:pw bob:pw", NO_IDLE="0" if idle else "1",
                   NO_UIDPLUS="0" if uidplus else "1", **(settings or {}))
        cmd = [str(SCRIPTS[name]), "start", str(directory)]
        try:
            r = _run_script(cmd, env=env, timeout=120)
        except BaseException:  # a timeout, Ctrl-C, pytest-timeout: leave no daemon behind
            _run_script([str(SCRIPTS[name]), "stop", str(directory)], timeout=60)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        if r.returncode == 0:
            server = ScriptServer.from_dir(directory)
            atexit.register(server.shutdown)
            return server
        logs = "".join(_tail(p) for p in sorted((directory / "log").glob("*.log")))
        _run_script([str(SCRIPTS[name]), "stop", str(directory)], timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
        if r.returncode != EXIT_PORT_IN_USE or attempt == attempts - 1:
            error = PortInUseError if r.returncode == EXIT_PORT_IN_USE else MailServerError
            raise error(f"{shlex.join(cmd)} failed (exit {r.returncode}):\n"
                        f"{r.stderr.strip()}{logs}")
    raise AssertionError("unreachable")
