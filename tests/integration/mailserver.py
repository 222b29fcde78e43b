"""A real Dovecot (IMAP) + Postfix (SMTP) on loopback for the integration tests.

Stdlib only. Wraps ``mailserver.sh`` (next to this file), which keeps everything of
one instance (config, test CA, queue, Maildirs, logs, sockets, pids) in one private
directory under /tmp and listens on 127.0.0.1 only:

    IMAP  port_base+143 (STARTTLS when tls)    IMAPS port_base+993 (tls only)
    SMTP  port_base+25  (STARTTLS when tls, AUTH PLAIN/LOGIN, relays nothing)
    SMTPS port_base+465 (tls only)

Users ``alice`` and ``bob`` (password ``pw``) in domain ``example.test``. Postfix hands
each message to Dovecot over LMTP, so SMTP mail shows up in IMAP within milliseconds.
Needs root and the Debian packages of ``scripts/system-packages.sh``.

With ``oauth=True`` Dovecot also takes SASL XOAUTH2 and OAUTHBEARER with a JWT it validates
locally (``MAIL_OAUTH=1``); ``tokens.py`` mints such tokens with the instance's key
(``server.oauth_env``), good ones, expired ones and wrongly signed ones.

    server = start_free_mailserver(tls=True)   # or start_mailserver(free_port_base())
    try:
        server.populate("alice", 100)
        server.deliver("alice", "hi", wait=True)
    finally:
        server.stop()
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shlex
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("mailserver.sh")
PACKAGES_SCRIPT = "scripts/system-packages.sh"

# what mailserver.sh runs (absolute paths: PATH under pytest may lack /usr/sbin)
REQUIRED_BINARIES: tuple[str, ...] = (
    "/usr/sbin/dovecot",
    "/usr/bin/doveadm",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/imap-login",
    "/usr/lib/dovecot/lmtp",
    "/usr/lib/postfix/sbin/master",
    "/usr/sbin/postqueue",
    "/usr/bin/openssl",
    "/usr/bin/setpriv",
    "/usr/bin/python3",
)

# port = base + offset; bases 100 apart never share a port (no two offsets differ by a
# multiple of 100)
PORT_OFFSETS: dict[str, int] = {"smtp": 25, "imap": 143, "smtps": 465, "imaps": 993}
PORT_BASE_MIN, PORT_BASE_MAX, PORT_BASE_STEP = 20000, 60000, 100

EXIT_PORT_IN_USE = 3  # mailserver.sh's exit status when a port is taken


class MailServerError(RuntimeError):
    """The test mail server could not be started, stopped or used."""


class PortInUseError(MailServerError):
    """A port of the chosen base was taken (by another instance or another program)."""


def missing_prerequisites() -> list[str]:
    """What keeps a mail server from starting here, as readable problems (empty: none)."""
    problems: list[str] = []
    missing = [b for b in REQUIRED_BINARIES if not os.access(b, os.X_OK)]
    if missing:
        problems.append(
            f"missing {', '.join(missing)}: install the Debian packages with "
            f"{PACKAGES_SCRIPT} (as root)"
        )
    if not os.access(SCRIPT, os.X_OK):
        problems.append(f"{SCRIPT} is missing or not executable")
    if os.geteuid() != 0:
        problems.append("the test mail server needs root (Postfix's master(8) refuses other users)")
    return problems


_handed_out: set[int] = set()


def _port_free(port: int) -> bool:
    # no SO_REUSEADDR: a port still in TIME_WAIT counts as taken, which errs on the safe side
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port_base() -> int:
    """A base B in 20000..60000 with B+25, B+143, B+465 and B+993 free on 127.0.0.1.

    Bases are 100 apart. Under pytest-xdist each worker draws from its own share of
    them (PYTEST_XDIST_WORKER / PYTEST_XDIST_WORKER_COUNT), so workers of one run never
    pick the same base; the order is random, so concurrent runs rarely collide, and
    bases whose ports lie outside the kernel's ephemeral range come first. A base is
    handed out once per process. Another program can still take a port before the
    server binds it: start_free_mailserver() retries on PortInUseError.
    """
    bases = list(range(PORT_BASE_MIN, PORT_BASE_MAX + 1, PORT_BASE_STEP))
    worker = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if worker and count > 1:
        index = int(worker.group(1)) % count
        bases = bases[index::count]
    random.shuffle(bases)
    ephemeral = _ephemeral_ports()
    bases.sort(key=lambda b: any(b + off in ephemeral for off in PORT_OFFSETS.values()))
    for base in bases:
        if base in _handed_out:
            continue
        if all(_port_free(base + off) for off in PORT_OFFSETS.values()):
            _handed_out.add(base)
            return base
    raise MailServerError(f"no free port base in {PORT_BASE_MIN}..{PORT_BASE_MAX}")


def _run_script(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run mailserver.sh. If we are interrupted (timeout, Ctrl-C, pytest-timeout), send it
    SIGTERM and let it finish: it then takes down any daemon it had launched. (A SIGKILL,
    as subprocess.run sends, would leave a daemon it had just launched running.)"""
    with subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = " ".join(shlex.split(value))
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- {path} (last {len(text)} lines) ---\n" + "\n".join(text)


@dataclass(eq=False)
class MailServer:
    """One running instance; made by start_mailserver(), read from DIR/mail.env."""

    dir: Path
    host: str
    port_base: int
    imap_port: int
    imaps_port: int | None
    smtp_port: int
    smtps_port: int | None
    ca_file: Path | None  # the test CA (None when TLS is off)
    tls: bool
    users: dict[str, str]  # {"alice": "pw", "bob": "pw"}
    domain: str  # "example.test"
    dovecot_conf: Path
    dovecot_log: Path
    postfix_log: Path
    oauth_env: dict[str, str] | None = None  # MAIL_OAUTH=1: OAUTH_KEY_FILE, OAUTH_ISSUER, ...
    owns_dir: bool = True  # stop() removes dir
    stopped: bool = False

    @classmethod
    def from_dir(cls, directory: Path, *, owns_dir: bool = True) -> MailServer:
        env = _read_env(directory / "mail.env")
        tls = env["MAIL_TLS"] == "1"
        return cls(
            dir=Path(env["MAIL_DIR"]),
            host=env["MAIL_HOST"],
            port_base=int(env["PORT_BASE"]),
            imap_port=int(env["IMAP_PORT"]),
            imaps_port=int(env["IMAPS_PORT"]) if tls else None,
            smtp_port=int(env["SMTP_PORT"]),
            smtps_port=int(env["SMTPS_PORT"]) if tls else None,
            ca_file=Path(env["MAIL_CA"]) if tls else None,
            tls=tls,
            users=dict(u.split(":", 1) for u in env["MAIL_USERS"].split()),
            domain=env["MAIL_DOMAIN"],
            dovecot_conf=Path(env["DOVECOT_CONF"]),
            dovecot_log=Path(env["DOVECOT_LOG"]),
            postfix_log=Path(env["POSTFIX_LOG"]),
            oauth_env=env if env.get("MAIL_OAUTH") == "1" else None,
            owns_dir=owns_dir,
        )

    # -- helpers ----------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 60) -> str:
        cmd = [str(SCRIPT), args[0], str(self.dir), *args[1:]]
        try:
            r = _run_script(cmd, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise MailServerError(f"{shlex.join(cmd)} timed out after {timeout} s") from e
        if r.returncode != 0:
            raise MailServerError(
                f"{shlex.join(cmd)} failed (exit {r.returncode}):\n{r.stderr.strip()}"
                + self.log_tail()
            )
        return r.stdout

    def log_tail(self, lines: int = 15) -> str:
        """The end of the Dovecot and Postfix logs, for failure messages."""
        return _tail(self.dovecot_log, lines) + _tail(self.postfix_log, lines)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against the test CA."""
        if self.ca_file is None:
            raise MailServerError("this instance runs without TLS")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    # -- the API ----------------------------------------------------------------------
    def populate(self, user: str, n: int, mailbox: str = "INBOX") -> None:
        """Write n messages ("Test message i of n", unseen, ~1.2 KB) straight into the
        Maildir (tmp/ then rename into cur/), then let Dovecot index them if it runs."""
        self._run("populate", user, str(n), mailbox, timeout=600)

    def stop_dovecot(self) -> None:
        """Stop Dovecot only: SIGTERM to its master, return when its processes are gone
        (~1.1 s: Dovecot's master always sleeps a second on shutdown)."""
        self._run("dovecot-stop")

    def kill_dovecot(self) -> None:
        """Crash Dovecot: SIGKILL to its master, then to the rest of its process group
        (a killed master leaves log/auth/stats processes behind); return when all are
        gone. Postfix keeps accepting mail and defers it."""
        self._run("dovecot-kill")

    def start_dovecot(self) -> None:
        """Start Dovecot again, same config and ports; return once a LOGIN works.
        Mail Postfix deferred meanwhile is then flushed at once."""
        self._run("dovecot-start")

    def stop_postfix(self) -> None:
        """Stop Postfix only (SIGTERM; SMTP is then refused); mail it queued stays queued."""
        self._run("postfix-stop")

    def start_postfix(self) -> None:
        """Start Postfix again, same config and ports; return once the SMTP banner comes."""
        self._run("postfix-start")

    def dovecot_running(self) -> bool:
        """Whether the Dovecot master this instance started still runs (cheap: /proc)."""
        try:
            pid, start = (self.dir / "run" / "dovecot.id").read_text().split()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return False
        return fields[19] == start and fields[0] != "Z"

    def clear_mailbox(self, user: str, mailbox: str = "INBOX") -> None:
        """Expunge every message in the mailbox (doveadm; Dovecot must be running)."""
        self._run("clear", user, mailbox)

    def delete_mailbox(self, user: str, mailbox: str) -> None:
        """Delete a mailbox and its messages, as another client would (doveadm)."""
        self._doveadm("mailbox", "delete", "-u", user, mailbox)

    def message_count(self, user: str, mailbox: str = "INBOX") -> int:
        """MESSAGES of the mailbox, asked through doveadm (Dovecot must be running)."""
        out = self._doveadm("-f", "flow", "mailbox", "status", "-u", user, "messages", mailbox)
        m = re.search(r"messages=(\d+)", out)
        if not m:
            raise MailServerError(f"unexpected doveadm output: {out!r}")
        return int(m.group(1))

    def _has_message_id(self, user: str, message_id: str) -> bool:
        query = ("mailbox", "*", "header", "Message-ID", message_id)
        out = self._doveadm("search", "-u", user, *query)
        return bool(out.strip())

    def _doveadm(self, *args: str) -> str:
        cmd = ["/usr/bin/doveadm", "-c", str(self.dovecot_conf), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if r.returncode != 0:
            raise MailServerError(f"{shlex.join(cmd)} failed (exit {r.returncode}): {r.stderr}")
        return r.stdout

    def deliver(
        self,
        to_user: str,
        subject: str,
        body: str = "hello\n",
        *,
        wait: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Send one message over SMTP (plain, no AUTH: 127.0.0.1 is a trusted network)
        to the real Postfix, which hands it to Dovecot over LMTP. Returns once Postfix
        has accepted (queued) it; with wait=True, once Dovecot has stored it."""
        msg = EmailMessage()
        msg["From"] = "Tester <tester@example.org>"
        msg["To"] = self.address(to_user)
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = message_id = make_msgid(domain="mailsocketd.test")
        msg.set_content(body)
        with smtplib.SMTP(self.host, self.smtp_port, timeout=timeout) as smtp:
            refused = smtp.send_message(msg)
        if refused:
            raise MailServerError(f"Postfix refused {refused}")
        if wait:
            deadline = time.monotonic() + timeout
            while not self._has_message_id(to_user, message_id):
                if time.monotonic() > deadline:
                    raise MailServerError(
                        f"message {message_id} to {to_user} not stored after {timeout} s"
                        + self.log_tail()
                    )
                time.sleep(0.02)

    def stop(self, *, remove_dir: bool | None = None) -> None:
        """Stop Postfix and Dovecot (every process they started), then remove dir
        (unless remove_dir=False, or the dir was not made by start_mailserver()).
        Idempotent."""
        if self.stopped:
            return
        self._run("stop")
        self.stopped = True
        if self.owns_dir if remove_dir is None else remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MailServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_mailserver(port_base: int, tls: bool = True, oauth: bool = False) -> MailServer:
    """Start an instance on port_base in a new private directory /tmp/msd.XXXXXXXX.

    Raises PortInUseError when one of its ports is taken, MailServerError otherwise.
    Returns once IMAP LOGIN and the SMTP banner work (~0.2 s). The instance is
    stopped at interpreter exit if nobody stopped it before.
    """
    problems = missing_prerequisites()
    if problems:
        raise MailServerError("; ".join(problems))
    # short: unix socket paths under it must stay below 108 bytes
    directory = Path(tempfile.mkdtemp(prefix="msd.", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("MAIL_UID", "MAIL_GID")}
    env.update(
        PORT_BASE=str(port_base),
        MAIL_TLS="1" if tls else "0",
        MAIL_USERS="alice:pw bob:pw",
        MAIL_DOMAIN="example.test",
        MAIL_OAUTH="1" if oauth else "0",
    )
    cmd = [str(SCRIPT), "start", str(directory)]
    try:
        r = _run_script(cmd, env=env, timeout=120)
    except BaseException as e:  # a timeout, Ctrl-C, pytest-timeout: leave no daemon behind
        _run_script([str(SCRIPT), "stop", str(directory)], timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(e, subprocess.TimeoutExpired):
            raise MailServerError(f"{shlex.join(cmd)} timed out") from e
        raise
    if r.returncode != 0:  # the script has taken down whatever it had started
        logs = _tail(directory / "log" / "dovecot.log") + _tail(directory / "log" / "postfix.log")
        shutil.rmtree(directory, ignore_errors=True)
        error = PortInUseError if r.returncode == EXIT_PORT_IN_USE else MailServerError
        raise error(
            f"PORT_BASE={port_base} {shlex.join(cmd)} failed (exit {r.returncode}):\n"
            f"{r.stderr.strip()}{logs}"
        )
    server = MailServer.from_dir(directory)
    atexit.register(server.stop)
    return server


def start_free_mailserver(tls: bool = True, attempts: int = 5, oauth: bool = False) -> MailServer:
    """start_mailserver() on free_port_base(), with another base if a port was taken
    between the probe and the bind."""
    for attempt in range(attempts):
        try:
            return start_mailserver(free_port_base(), tls=tls, oauth=oauth)
        except PortInUseError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
