"""Fixtures for the integration tests: a REAL Dovecot (IMAP) and Postfix (SMTP) on loopback.

The servers come from ``mailserver.py`` / ``mailserver.sh`` in this directory; see
``mailserver.py`` for what an instance offers (``MailServer``). Both fixtures are
session-scoped: give each test its own user or mailbox, or clean up with
``clear_mailbox()``; a test that stops or kills Dovecot should start it again itself
(try/finally); as a safety net, Dovecot is restarted after any test that left it down.

Missing Debian packages (or not running as root) make the fixtures FAIL, never skip:
run ``scripts/system-packages.sh`` as root. Set ``MAILSERVER_KEEP=1`` to keep the
instances' directories (config, logs, Maildirs) after the run for a post-mortem.

This is the only conftest.py for tests/integration: add shared fixtures here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# make "from mailserver import ..." work whatever pytest's import mode
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from mailserver import (  # noqa: E402
    MailServer,
    MailServerError,
    missing_prerequisites,
    start_free_mailserver,
)


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
