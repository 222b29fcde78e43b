"""The line mail commands against Dovecot, Cyrus and Courier, through the real daemon (issue
15, points 1 and 3 to 6).

* ``list`` then ``read`` a few seconds later in a Courier folder nobody opened read-write
  (its UIDVALIDITY comes from the clock) was refused: ``changed on the server (UIDVALIDITY)``.
* A watched mailbox deleted by another client ends the watch with a pushed ``* watch ended``
  line on every server (Dovecot ends the session; Cyrus says ``* 1 EXPUNGE``; Courier
  nothing).
* ``delete`` without UIDPLUS finds the Trash, ``INBOX.Trash`` on Cyrus and Courier (real
  servers started without UIDPLUS); ``list`` marks a message marked \\Deleted with ``D``.
* Courier's ``[ALERT]`` during ``read`` of a message with raw UTF-8 headers reaches the user.
* ``mailboxes`` lists INBOX first (Courier sends it last); Cyrus's LOGINDISABLED before
  STARTTLS is no obstacle.

Each test has its own daemon (a few tenths of a second) and works in its own mailbox.
"""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemon import Daemon, start_daemon
from imapservers import ImapServer, raw_message
from interoprig import new_courier_folder
from lineclient import LineClient

pytestmark = pytest.mark.timeout(120)


@contextmanager
def daemon_for(server: ImapServer, tmp_path: Path, **imap: object) -> Iterator[Daemon]:
    """The daemon with ``[imap]`` on ``server`` (STARTTLS, its CA)."""
    keys = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in imap.items())
    config = ("[line]\nlogin_failures = 50\n"
              f'[imap]\nserver = "tcp:{server.host}:{server.imap_port}"\n'
              f'ca_file = "{server.ca_file}"\n{keys}')
    daemon = start_daemon(tmp_path, config_toml=config)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextmanager
def logged_in(daemon: Daemon, server: ImapServer, user: str = "alice") -> Iterator[LineClient]:
    with LineClient.connect(daemon.port) as client:
        assert client.ask(f"login {user} {server.users[user]}") == f"ok logged in as {user}"
        yield client


def uids_of(lines: list[str]) -> list[int]:
    return [int(line.split()[0]) for line in lines]


def unsettled_folder(server: ImapServer, user: str, messages: int) -> str:
    """A new Courier folder (interoprig) with ``messages`` delivered into its ``new/``: nobody
    has opened it read-write, its UIDVALIDITY comes from the clock."""
    box = new_courier_folder(server, user)
    for n in range(1, messages + 1):
        server.deliver(user, f"message {n}", f"body {n}\n", mailbox=box)
    return box


# -- 1. list, then read a few seconds later ------------------------------------------------------

@pytest.mark.parametrize("imap_server", ["courier"], indirect=True)
def test_list_then_read_in_an_unsettled_courier_folder(imap_server: ImapServer,
                                                       tmp_path: Path) -> None:
    box = unsettled_folder(imap_server, "alice", 3)
    first = imap_server.uidvalidity("alice", box)
    time.sleep(1.1)
    assert imap_server.uidvalidity("alice", box) != first  # the defect's precondition
    with daemon_for(imap_server, tmp_path) as daemon, logged_in(daemon, imap_server) as c:
        listing = c.ask_multi(f"list 5 {box}")
        assert listing.head.startswith(f"ok 3 of 3 messages in {box}"), listing.head
        uids = uids_of(listing.body)
        time.sleep(2)
        read = c.ask_multi(f"read {uids[1]} {box}")
        assert read.head.startswith(f"ok message {uids[1]} in {box}"), read.head
        assert "Subject: message 2" in read.body
        assert c.ask(f"delete {uids[0]}") == f"ok deleted 1 message from {box} (expunged)"
        time.sleep(1.1)
        assert c.ask_multi(f"read {uids[2]}").head.startswith(f"ok message {uids[2]}")


# -- 3. a watched mailbox deleted by another client ------------------------------------------

def test_a_deleted_watched_mailbox_ends_the_watch_with_a_pushed_line(imap_server: ImapServer,
                                                                     tmp_path: Path) -> None:
    box = imap_server.fresh_mailbox("bob", raw_message("one"))
    with daemon_for(imap_server, tmp_path, watch_interval=5) as daemon, \
            logged_in(daemon, imap_server, "bob") as c:
        assert c.ask(f"watch on {box}").startswith(f"ok watching {box} messages=1 ")
        time.sleep(1.5)  # IDLE is out
        imap_server.delete_mailbox("bob", box)
        line, took = c.wait_push("* watch ended: ", 20)
        if imap_server.name == "dovecot":  # it ends the session: said next
            assert line == "* watch ended: the mail session was lost"
            c.wait_push("* mail session lost", 5)
        else:
            assert line.startswith(f"* watch ended: mailbox {box}: "), line
            assert c.ask("check").startswith("ok INBOX messages=")  # the session goes on
            assert c.ask("watch off") == "ok not watching"
    print(f"{imap_server.label}: {line!r} after {took:.2f} s")


# -- 4. delete without UIDPLUS; list shows \Deleted ------------------------------------------

@pytest.mark.parametrize("name", ["cyrus", "courier"])
def test_delete_without_uidplus_moves_to_inbox_trash(
        imap_server_variant: Callable[..., ImapServer], name: str, tmp_path: Path) -> None:
    server = imap_server_variant(name, uidplus=False)
    box = server.fresh_mailbox("alice", *(raw_message(f"m{n}") for n in (1, 2, 3)))
    in_trash = server.message_count("alice", server.trash)
    with daemon_for(server, tmp_path) as daemon, logged_in(daemon, server) as c:
        uids = uids_of(c.ask_multi(f"list 5 {box}").body)
        assert c.ask(f"delete {uids[0]}") == (
            f"ok deleted 1 message from {box} (moved to {server.trash})")
        assert server.message_count("alice", server.trash) == in_trash + 1
        left = {m.uid: m.flags for m in server.list_messages("alice", box)}
        if name == "cyrus":  # MOVE
            assert uids[0] not in left
        else:  # COPY, then marked \Deleted: list shows it so
            assert "\\Deleted" in left[uids[0]]
            marks = {int(line.split()[0]): line.split()[1]
                     for line in c.ask_multi(f"list 5 {box}").body}
            assert marks[uids[0]] == "D" and marks[uids[1]] == "N", marks


def test_list_marks_a_message_marked_deleted(imap_server: ImapServer,
                                             tmp_path: Path) -> None:
    box = imap_server.fresh_mailbox("alice", raw_message("kept"), raw_message("doomed"))
    with imap_server.session("alice") as conn:
        conn.select(f'"{box}"')
        conn.uid("STORE", "2", "+FLAGS", "(\\Deleted)")  # another client's pending deletion
    with daemon_for(imap_server, tmp_path) as daemon, logged_in(daemon, imap_server) as c:
        lines = c.ask_multi(f"list 5 {box}").body
        assert [line.split()[:2] for line in lines] == [["2", "D"], ["1", "N"]], lines


# -- 5. [ALERT] ---------------------------------------------------------------------------------

@pytest.mark.parametrize("imap_server", ["courier"], indirect=True)
def test_courier_alert_during_read_is_pushed(imap_server: ImapServer,
                                             tmp_path: Path) -> None:
    """Courier: ``* OK [ALERT] Message N appears to be a Unicode message and your E-mail reader
    did not enable Unicode support...`` when a message with raw UTF-8 headers is fetched."""
    box = imap_server.fresh_mailbox(
        "alice", "From: Jürgen <j@example.org>\r\nSubject: Привет\r\n\r\nhi\r\n".encode())
    with daemon_for(imap_server, tmp_path) as daemon, logged_in(daemon, imap_server) as c:
        uid = uids_of(c.ask_multi(f"list 1 {box}").body)[0]
        read = c.ask_multi(f"read {uid} {box}")
        assert read.head.startswith(f"ok message {uid} in {box}")
        alert, _ = c.wait_push("* mail server alert: ", 5)
        assert re.fullmatch(r"\* mail server alert: Message \d+ appears to be a Unicode message "
                            r"and your E-mail reader did not enable Unicode support\..*", alert)
    assert "imap_alert" in daemon.log() or "the mail server says" in daemon.log()


# -- 6. INBOX first; LOGINDISABLED ----------------------------------------------------------

def test_mailboxes_lists_inbox_first(imap_server: ImapServer,
                                     tmp_path: Path) -> None:
    with daemon_for(imap_server, tmp_path) as daemon, logged_in(daemon, imap_server) as c:
        reply = c.ask_multi("mailboxes")
        assert reply.body[0].split()[-1] == "INBOX", reply.body


@pytest.mark.parametrize("imap_server", ["cyrus"], indirect=True)
def test_cyrus_logindisabled_before_starttls_is_no_obstacle(imap_server: ImapServer,
                                                            tmp_path: Path) -> None:
    conn = imaplib.IMAP4(imap_server.host, imap_server.imap_port, timeout=30)
    try:
        assert "LOGINDISABLED" in conn.capabilities and "STARTTLS" in conn.capabilities
    finally:
        conn.shutdown()
    with daemon_for(imap_server, tmp_path) as daemon, logged_in(daemon, imap_server) as c:
        assert c.ask("check").startswith("ok INBOX messages=")
