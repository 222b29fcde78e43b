"""Fixtures for the integration tests: REAL mail servers on loopback.

``mailserver`` (and ``mailserver_notls``): Dovecot (IMAP) and Postfix (SMTP), from
``mailserver.py`` / ``mailserver.sh``; see ``mailserver.py`` for what an instance offers
(``MailServer``).

``imap_server``: the tests about IMAP server behaviour run against three servers, one
parametrized fixture (test ids ``[dovecot]``, ``[cyrus]``, ``[courier]``), each behind the
one interface of ``imapservers.py`` (``ImapServer``: ports, CA, users, the namespace prefix
and delimiter, deliver/append, create/delete a mailbox, list messages, stop/kill/start):

    dovecot  Dovecot 2.3, the ``mailserver`` instance itself (so Postfix delivers to it)
    cyrus    Cyrus IMAP 3.6 (``cyrus.sh``, ``scriptservers.py``): INBOX. namespace, LOGINDISABLED
             before STARTTLS
    courier  Courier-IMAP 5.0 (``courier.sh``): INBOX. namespace; with IMAP_ENHANCEDIDLE=1,
             so that IDLE reports new mail at once (Debian's default 0 looks every 60 s:
             ``imap_server_variant("courier", idle_at_once=False)``); one instance at a time
             on a machine

What the tests meet of their differences (Debian 12's packages, as Debian configures them):

    namespace   Dovecot: "" with "."; Cyrus and Courier: "INBOX." with "." (INBOX.Trash,
                INBOX.Work); ``server.mailbox("Work")`` gives the full name
    login       Cyrus: LOGINDISABLED before STARTTLS (allowplaintext: no)
    names       Cyrus refuses a backslash or a double quote in a mailbox name ("Invalid
                mailbox name"); Courier refuses "[" and "]" in a name sent as an atom
    LIST        Courier lists INBOX last
    \\Recent     Courier: APPENDed messages are not \\Recent (Dovecot, Cyrus: they are)
    UIDVALIDITY Courier: of a folder no client opened read-write, taken from the clock (it
                changes every second until a read-write SELECT writes the UID database)
    IDLE        Courier with Debian's IMAP_ENHANCEDIDLE=0 looks for new mail every 60 s
    extensions  Courier: no MOVE, no SPECIAL-USE; Cyrus: both, and UIDPLUS, CONDSTORE ...
    8-bit       Cyrus stores raw 8-bit header bytes as "X" (munge8bit)

``imap_server_variant`` starts, for one test, a Cyrus or Courier without IDLE and/or UIDPLUS
(``imap_server_variant("courier", uidplus=False)``). The debs of Cyrus's and Courier's IMAP
servers conflict with Dovecot's: ``scripts/system-packages.sh`` unpacks them into a root-only
cache instead of installing them (see there).

The servers are session-scoped: give each test its own user or mailbox
(``server.fresh_mailbox()``), or clean up with ``clear_mailbox()``; a test that stops or kills
a server should start it again itself (try/finally); as a safety net, a server is restarted
after any test that left it down. Courier changes system files while it runs (see
``courier.sh``): the first test that needs it takes a lock file for the rest of the run
(another run waits for it, up to COURIER_LOCK_WAIT seconds), and its ``stop`` puts them back.

Missing Debian packages (or not running as root) make the fixtures FAIL, never skip:
run ``scripts/system-packages.sh`` as root. Set ``MAILSERVER_KEEP=1`` to keep the
instances' directories (config, logs, Maildirs, protocol traces) after the run for a
post-mortem.

This is the only conftest.py for tests/integration: add shared fixtures here.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# make "from mailserver import ..." work whatever pytest's import mode
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from imapservers import SERVERS, DovecotServer, ImapServer  # noqa: E402
from mailserver import (  # noqa: E402
    MailServer,
    MailServerError,
    missing_prerequisites,
    start_free_mailserver,
)
from scriptservers import ScriptServer, start_script_server  # noqa: E402

COURIER_LOCK = Path("/run/lock/mailsocketd-test-courier.lock")
COURIER_LOCK_WAIT = 90.0  # seconds; below pytest-timeout's 120, which counts fixture set-up


def _start_mailserver(tls: bool, oauth: bool = False) -> MailServer:
    problems = missing_prerequisites()
    if problems:
        pytest.fail("cannot run the real mail server: " + "; ".join(problems), pytrace=False)
    try:
        return start_free_mailserver(tls=tls, oauth=oauth)
    except MailServerError as e:
        pytest.fail(f"could not start the test mail server: {e}", pytrace=False)


def _stop_mailserver(server: MailServer) -> None:
    keep = os.environ.get("MAILSERVER_KEEP") == "1"
    server.stop(remove_dir=not keep)
    if keep:
        print(f"\nmail server directory kept: {server.dir}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "server_defect(servers, reason): a known defect of ours that shows on these "
        "servers of imap_server: the test is xfail(strict=True) there (so a fix is noticed)")


@pytest.fixture(autouse=True)
def _server_defects(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.server_defect(("cyrus", "courier"), "issue 15 point 4: ...")``: strict
    xfail for those values of ``imap_server``; the other servers must pass."""
    marks = list(request.node.iter_markers("server_defect"))
    if not marks or "imap_server" not in request.fixturenames:
        return
    server: ImapServer = request.getfixturevalue("imap_server")
    for mark in marks:
        servers, reason = mark.args
        if server.name in servers:
            request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(autouse=True)
def _restart_crashed_dovecot(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used a mail server: if the test left Dovecot stopped or
    killed (say it failed before its own start_dovecot()), start it again, so that one
    failure does not cascade into every later test. Costs nothing for other tests."""
    yield
    for name in ("mailserver", "mailserver_notls", "mailserver_oauth"):
        server = request.node.funcargs.get(name)  # only fixtures that were set up
        if isinstance(server, MailServer) and not server.stopped and not server.dovecot_running():
            server.start_dovecot()
    imap = request.node.funcargs.get("imap_server")
    if isinstance(imap, ScriptServer) and not imap.stopped and not imap.running():
        imap.start()


@pytest.fixture(scope="session")
def mailserver() -> Iterator[MailServer]:
    """TLS instance: IMAP with STARTTLS, IMAPS, SMTP with STARTTLS + AUTH, SMTPS.
    Verify with ``mailserver.ssl_context()`` (the test CA, ``mailserver.ca_file``)."""
    server = _start_mailserver(tls=True)
    try:
        yield server
    finally:
        _stop_mailserver(server)


@pytest.fixture(scope="session")
def mailserver_notls() -> Iterator[MailServer]:
    """Instance WITHOUT any TLS (MAIL_TLS=0): no STARTTLS, no IMAPS/SMTPS, but plaintext
    LOGIN is accepted - for tests that our client refuses to log in in clear."""
    server = _start_mailserver(tls=False)
    try:
        yield server
    finally:
        _stop_mailserver(server)


@pytest.fixture(scope="session")
def mailserver_oauth() -> Iterator[MailServer]:
    """TLS instance whose Dovecot ALSO takes SASL XOAUTH2 and OAUTHBEARER (MAIL_OAUTH=1), with
    JWTs it validates locally: mint them with ``tokens.mint(mailserver_oauth, "alice")``
    (``expired=True``, ``wrong_key=True``, ...). Password logins work as on ``mailserver``."""
    server = _start_mailserver(tls=True, oauth=True)
    try:
        yield server
    finally:
        _stop_mailserver(server)


class _ImapServers:
    """The session's Cyrus and Courier, started when a test first needs them, stopped at the
    end; and the one-test variants, which take Courier's place while they run."""

    def __init__(self) -> None:
        self.servers: dict[str, ScriptServer] = {}
        self._courier_lock: int | None = None

    def _lock_courier(self) -> None:
        if self._courier_lock is not None:
            return
        fd = os.open(COURIER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + COURIER_LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    pytest.fail(f"another test run holds the test Courier ({COURIER_LOCK}) for "
                                f"more than {COURIER_LOCK_WAIT:.0f} s: one run at a time",
                                pytrace=False)
                time.sleep(0.5)
        self._courier_lock = fd

    def start(self, name: str, *, idle: bool = True, uidplus: bool = True,
              idle_at_once: bool = True) -> ScriptServer:
        settings: dict[str, str] = {}
        if name == "courier":
            self._lock_courier()
            settings["ENHANCEDIDLE"] = "1" if idle_at_once else "0"
        try:
            return start_script_server(name, idle=idle, uidplus=uidplus, settings=settings)
        except MailServerError as e:
            pytest.fail(f"could not start the test {name}: {e}", pytrace=False)

    def session_server(self, name: str) -> ScriptServer:
        server = self.servers.get(name)
        if server is None:
            server = self.servers[name] = self.start(name)
        elif not server.running():
            server.start()  # displaced by a variant, or left down by a test
        return server

    def variant(self, name: str, *, idle: bool, uidplus: bool,
                idle_at_once: bool) -> tuple[ScriptServer, ScriptServer | None]:
        """A new instance, and the session's Courier it stopped (one Courier at a time)."""
        displaced = self.servers.get("courier") if name == "courier" else None
        if displaced is not None and displaced.running():
            displaced.stop()
        else:
            displaced = None
        return self.start(name, idle=idle, uidplus=uidplus, idle_at_once=idle_at_once), displaced

    def close(self) -> None:
        keep = os.environ.get("MAILSERVER_KEEP") == "1"
        for server in self.servers.values():
            server.shutdown(remove_dir=not keep)
            if keep:
                print(f"\n{server.name} directory kept: {server.dir}")
        if self._courier_lock is not None:
            os.close(self._courier_lock)


@pytest.fixture(scope="session")
def _imap_servers() -> Iterator[_ImapServers]:
    servers = _ImapServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session", params=SERVERS)
def imap_server(request: pytest.FixtureRequest, _imap_servers: _ImapServers) -> ImapServer:
    """Dovecot, Cyrus, Courier in turn (test ids ``[dovecot]``, ``[cyrus]``, ``[courier]``):
    one ``ImapServer`` each, with IDLE (reporting at once) and UIDPLUS. Dovecot is the
    ``mailserver`` instance."""
    name: str = request.param
    if name == "dovecot":
        mail: MailServer = request.getfixturevalue("mailserver")
        return DovecotServer.wrap(mail)
    missing = missing_prerequisites()  # Postfix and Dovecot are the suite's base: checked too
    if missing:
        pytest.fail("cannot run the real mail servers: " + "; ".join(missing), pytrace=False)
    return _imap_servers.session_server(name)


@pytest.fixture
def imap_server_variant(
        _imap_servers: _ImapServers) -> Iterator[Callable[..., ImapServer]]:
    """``imap_server_variant(name, idle=True, uidplus=True, idle_at_once=True)``: a Cyrus or
    Courier of this test alone, started on the call and shut down after the test.
    ``idle_at_once=False`` (Courier): Debian's IMAP_ENHANCEDIDLE=0, IDLE looks for new mail
    only every 60 s. A Courier variant stops the session's Courier meanwhile (one at a time),
    which is started again after the test."""
    started: list[tuple[ScriptServer, ScriptServer | None]] = []

    def start(name: str, *, idle: bool = True, uidplus: bool = True,
              idle_at_once: bool = True) -> ImapServer:
        if name not in ("cyrus", "courier") or (name == "cyrus" and not idle_at_once):
            raise ValueError(f"no such variant of {name}")
        started.append(_imap_servers.variant(name, idle=idle, uidplus=uidplus,
                                             idle_at_once=idle_at_once))
        return started[-1][0]

    yield start
    for server, displaced in reversed(started):
        server.shutdown(remove_dir=os.environ.get("MAILSERVER_KEEP") != "1")
        if displaced is not None:
            displaced.start()
