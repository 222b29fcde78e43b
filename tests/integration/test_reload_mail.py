"""SIGHUP with REAL Dovecot: accounts added, removed and changed (only the changed one
reconnects), a logged-in line user and their watch carry on, ``[imap]`` changes new logins only,
and an account waiting out a wrong password retries at once once the password is fixed."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from daemon import Daemon, start_daemon
from lineclient import LineClient
from mailrig import account_toml, write_password
from mailserver import MailServer
from test_reload import reload

pytestmark = pytest.mark.timeout(120)


def status(daemon: Daemon) -> str:
    return daemon.exchange(b"status\r\nquit\r\n").decode().replace("\r\n", "\n")


def wait_for_status(daemon: Daemon, pattern: str, timeout: float = 20.0,
                    present: bool = True) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = status(daemon)
        if bool(re.search(pattern, text, re.M)) == present:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"status never {'' if present else 'stopped '}matching "
                                 f"{pattern!r}; last:\n{text}\n--- log ---\n"
                                 f"{daemon.log()[-3000:]}")
        time.sleep(0.1)


def imap_section(server: MailServer, port: int | None = None) -> str:
    return (f'[imap]\nserver = "tcp:127.0.0.1:{port or server.imap_port}"\n'
            f'ca_file = "{server.ca_file}"\n[line]\nlogin_failures = 50\n')


def test_accounts_change_while_a_logged_in_user_and_their_watch_carry_on(
        mailserver: MailServer, tmp_path) -> None:
    box = "R" + uuid.uuid4().hex[:8]
    mailserver.populate("alice", 2, box)
    password = write_password(tmp_path)
    work = dict(server=f"tls:127.0.0.1:{mailserver.imaps_port}", user="alice",
                password_file=password, ca_file=str(mailserver.ca_file), mailboxes=[box])
    home = dict(work, user="bob", mailboxes=["INBOX"])
    base = imap_section(mailserver)
    daemon = start_daemon(tmp_path, config_toml=base + account_toml("work", **work))
    config = tmp_path / "mailsocketd.toml"
    try:
        wait_for_status(daemon, rf"account work {box}: state=idling messages=2 ")
        with LineClient.connect(daemon.port) as bob:
            assert bob.ask("login bob pw") == "ok logged in as bob"
            assert bob.ask("watch on").startswith("ok watching INBOX ")

            line = reload(daemon, config, base + account_toml("work", **work)
                          + account_toml("home", **home))
            assert "account home: added" in line and "account work" not in line
            wait_for_status(daemon, r"account home INBOX: state=idling ")
            assert daemon.log().count("work: logged in to") == 1  # not reconnected

            mailserver.deliver("bob", "after the reload", wait=True)
            pushed, _ = bob.wait_push("* new mail: INBOX", timeout=15)
            assert pushed.startswith("* new mail: INBOX messages=")  # the watch carried on
            assert bob.ask("check").startswith("ok INBOX messages=")  # and the session

            line = reload(daemon, config, base + account_toml("work", **work, interval=60))
            assert "account work: changed, reconnecting" in line
            assert "account home: removed" in line
            wait_for_status(daemon, r"^account home ", present=False)
            wait_for_status(daemon, rf"account work {box}: state=idling messages=2 ")
            assert daemon.log().count("work: logged in to") == 2  # only the changed one

            # [imap] for new logins only: a wrong port refuses them, bob's session goes on
            line = reload(daemon, config, imap_section(mailserver, port=1)
                          + account_toml("work", **work, interval=60))
            assert "imap.server changed" in line
            with LineClient.connect(daemon.port) as alice:
                assert alice.ask("login alice pw").startswith("error: ")
            assert bob.ask("check").startswith("ok INBOX messages=")
            assert daemon.alive()
    finally:
        code = daemon.stop()
    assert code is not None
    assert "Traceback" not in daemon.log()


def test_an_account_waiting_after_a_wrong_password_retries_at_once_on_reload(
        mailserver: MailServer, tmp_path) -> None:
    password = tmp_path / "password"
    write_password(tmp_path, "wrong")
    toml = account_toml("work", server=f"tls:127.0.0.1:{mailserver.imaps_port}", user="alice",
                        password_file=str(password), ca_file=str(mailserver.ca_file))
    daemon = start_daemon(tmp_path, config_toml=toml)
    try:
        wait_for_status(daemon, r"account work INBOX: state=auth-failed ")
        write_password(tmp_path, "pw")  # the operator fixes the password file...
        started = time.monotonic()
        line = reload(daemon, tmp_path / "mailsocketd.toml", toml)  # ...and reloads
        assert "account work: retrying now" in line
        wait_for_status(daemon, r"account work INBOX: state=idling ", timeout=15)
        assert time.monotonic() - started < 15  # not the 300 s wait
    finally:
        daemon.stop()
