"""Cyrus IMAP and Courier IMAP for the tests, each run by its script (cyrus.sh, courier.sh)
from a private directory: ``start_script_server()`` and the ``ScriptServer`` it returns, an
``ImapServer`` (imapservers.py). Stdlib only.

Both need root and what scripts/system-packages.sh installs, and unpacks: Debian's cyrus-imapd
and courier-imap conflict with Dovecot's dovecot-imapd, so their debs are unpacked into
TEST_PKG_CACHE (/var/cache/mailsocketd-tests) and run from there.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imapservers import ImapServer, raw_message
from mailserver import (
    EXIT_PORT_IN_USE,
    PACKAGES_SCRIPT,
    MailServerError,
    PortInUseError,
    _read_env,
    _run_script,
    _tail,
    free_port_base,
)

HERE = Path(__file__).resolve().parent
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

    def deliver(self, user: str, subject: str, body: str = "hello\n", *,
                mailbox: str = "INBOX", wait: bool = True) -> None:
        """Cyrus: LMTP (its deliver tool); Courier: a file in the Maildir's new/."""
        self._run("deliver", user, mailbox,
                  stdin=raw_message(subject, body, to=f"{user}@example.test"))

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
