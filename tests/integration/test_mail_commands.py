"""The mail commands end to end: telnet-like sessions through the installed daemon, against the
REAL Dovecot (IMAP, STARTTLS verified with the test CA) and Postfix (SMTP, STARTTLS + AUTH).

A user logs in with their own credentials, lists, reads, deletes and sends, and a second user
sees the sent message arrive through ``watch``; then the failure paths: bad login and the rate
limit, unknown UID, stale UIDVALIDITY, a refused recipient, the SMTP server down, Dovecot
killed in the middle of a session.
"""

from __future__ import annotations

import imaplib
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate

import pytest
from daemon import Daemon, free_port, start_daemon
from lineclient import LineClient
from mailserver import MailServer

pytestmark = pytest.mark.timeout(120)

COUNTS = re.compile(r"^ok (?P<box>\S+) messages=(?P<messages>\d+) unseen=(?P<unseen>\d+) "
                    r"recent=(?P<recent>\d+)$")
LIST_HEAD = re.compile(r"^ok (\d+) of (\d+) messages in (.+), newest first "
                       r"\(uidvalidity (\d+)\)$")


def mail_config(server: MailServer, *, smtp_port: int | None = None, smtp_extra: str = "",
                **line: object) -> str:
    """[line] keys (a high login_failures unless given), [imap] and [smtp] of the test server."""
    line.setdefault("login_failures", 50)
    return ("[line]\n" + "".join(f"{key} = {value}\n" for key, value in line.items())
            + f'[imap]\nserver = "tcp:127.0.0.1:{server.imap_port}"\n'
            f'ca_file = "{server.ca_file}"\n'
            f'[smtp]\nserver = "tcp:127.0.0.1:{smtp_port or server.smtp_port}"\n'
            f'ca_file = "{server.ca_file}"\nfrom_domain = "{server.domain}"\n{smtp_extra}')


@pytest.fixture(scope="module")
def maild(mailserver: MailServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = start_daemon(tmp_path_factory.mktemp("maild"), config_toml=mail_config(mailserver))
    yield daemon
    daemon.stop()


def imap(server: MailServer, user: str) -> imaplib.IMAP4:
    conn = imaplib.IMAP4("127.0.0.1", server.imap_port)
    conn.starttls(server.ssl_context())
    conn.login(user, server.users[user])
    return conn


def message(subject: str, body: str, sender: str = "Tester <tester@example.org>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def with_attachment(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.org>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg.set_content("See the attached report.\n")
    msg.add_attachment(b"%PDF-1.4\n" + b"x" * 3000, maintype="application", subtype="pdf",
                       filename="report.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def fresh_mailbox(server: MailServer, user: str, *messages: bytes) -> str:
    """A new mailbox of ``user`` holding ``messages`` (oldest first); returns its name."""
    name = "T-" + uuid.uuid4().hex[:8]
    conn = imap(server, user)
    try:
        assert conn.create(name)[0] == "OK"
        for data in messages:
            assert conn.append(name, "", imaplib.Time2Internaldate(time.time()), data)[0] == "OK"
    finally:
        conn.logout()
    return name


def uids_of(lines: list[str]) -> list[int]:
    return [int(line.split()[0]) for line in lines]


def logged_in(daemon: Daemon, user: str, server: MailServer) -> LineClient:
    client = LineClient.connect(daemon.port)
    assert client.ask(f"login {user} {server.users[user]}") == f"ok logged in as {user}"
    return client


def test_mail_commands_need_login(maild: Daemon) -> None:
    with LineClient.connect(maild.port) as c:
        for command in ("check", "list", "read 1", "delete 1", "send bob@example.test",
                        "watch on", "mailboxes"):
            assert c.ask(command) == "error: login first", command
        assert re.match(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d$", c.ask("time"))


def test_login_list_read_delete(maild: Daemon, mailserver: MailServer) -> None:
    box = fresh_mailbox(mailserver, "alice",
                        message("first", "one\n"),
                        with_attachment("=?utf-8?b?0J/RgNC40LLQtdGC?="),
                        message("dots", "before\n.\n..two\nafter\n"))
    with logged_in(maild, "alice", mailserver) as c:
        counts = COUNTS.match(c.ask(f"check {box}"))
        assert counts and counts["messages"] == "3" and counts["unseen"] == "3"

        listing = c.ask_multi(f"list 10 {box}")
        head = LIST_HEAD.match(listing.head)
        assert head and head.group(1, 2, 3) == ("3", "3", box), listing.head
        uids = uids_of(listing.body)
        assert uids == sorted(uids, reverse=True) and len(uids) == 3  # newest first
        assert "dots" in listing.body[0] and "Привет" in listing.body[1]
        assert "Tester" in listing.body[0] and "Jürgen Müller" in listing.body[1]
        assert all(line.split()[1] == "N" for line in listing.body)  # all unseen

        read = c.ask_multi(f"read {uids[0]}")  # the mailbox of the last list
        assert read.head.startswith(f"ok message {uids[0]} in {box}")
        assert "Subject: dots" in read.body
        text = read.body[read.body.index(""):]
        assert [t for t in text if t.startswith(".")] == [".", "..two"]  # as in the message

        attached = c.ask_multi(f"read {uids[1]} {box}")
        assert "Subject: Привет" in attached.body
        assert "See the attached report." in attached.body
        assert any(re.search(r"report\.pdf \(application/pdf, [\d.]+ KB\)", line)
                   for line in attached.body), attached.body

        counts = COUNTS.match(c.ask(f"check {box}"))
        assert counts and counts["unseen"] == "1"  # read marks seen
        assert [line.split()[1] for line in c.ask_multi(f"list {box}").body] == ["-", "-", "N"]

        assert c.ask(f"delete {uids[1]}") == f"ok deleted 1 message from {box} (expunged)"
        assert mailserver.message_count("alice", box) == 2
        assert c.ask(f"read {uids[1]}") == f"error: no message with UID {uids[1]} in {box}"
        assert uids_of(c.ask_multi(f"list {box}").body) == [uids[0], uids[2]]


def test_delete_leaves_messages_other_clients_marked(maild: Daemon,
                                                      mailserver: MailServer) -> None:
    box = fresh_mailbox(mailserver, "alice", message("keep me", "k\n"),
                        message("delete me", "d\n"))
    other = imap(mailserver, "alice")
    try:
        other.select(box)
        other.uid("STORE", "1", "+FLAGS", r"(\Deleted)")  # marked, not expunged, by another
        with logged_in(maild, "alice", mailserver) as c:
            uids = uids_of(c.ask_multi(f"list {box}").body)
            assert c.ask(f"delete {max(uids)}").startswith("ok deleted 1 message")
    finally:
        other.logout()
    assert mailserver.message_count("alice", box) == 1  # UID EXPUNGE took only ours


def test_mailboxes_and_bad_arguments(maild: Daemon, mailserver: MailServer) -> None:
    box = fresh_mailbox(mailserver, "alice", message("x", "y\n"))
    with logged_in(maild, "alice", mailserver) as c:
        boxes = c.ask_multi("mailboxes")
        assert boxes.head.startswith("ok ") and f"messages=1 unseen=1 {box}" in boxes.body
        assert any(line.endswith(" INBOX") for line in boxes.body)
        assert c.ask("read abc") == "error: not a UID: 'abc' (UIDs are the numbers 'list' shows)"
        assert c.ask("list 0").startswith("error: COUNT must be 1 to ")
        assert c.ask(f"read 999999 {box}") == f"error: no message with UID 999999 in {box}"
        assert c.ask("check No-Such-Box").startswith("error: ")
        assert c.ask("watch sideways") == "error: usage: watch on|off [MAILBOX]"
        assert c.ask("send not-an-address").startswith("error: ")
        assert c.ask("logout") == "ok logged out"
        assert c.ask("check") == "error: login first"


def test_mailbox_names_keep_their_spaces_and_help_names_the_arguments(
        maild: Daemon, mailserver: MailServer) -> None:
    box = "T-" + uuid.uuid4().hex[:8] + "  Two  Spaces"
    conn = imap(mailserver, "alice")
    try:
        assert conn.create(f'"{box}"')[0] == "OK"
        assert conn.append(f'"{box}"', "", imaplib.Time2Internaldate(time.time()),
                           message("spaced", "s\n"))[0] == "OK"
    finally:
        conn.logout()
    with logged_in(maild, "alice", mailserver) as c:
        assert c.ask(f"check {box}").startswith(f"ok {box} messages=1 unseen=1 recent=")
        listing = c.ask_multi(f"list 5 {box}")
        head = LIST_HEAD.match(listing.head)
        assert head and head.group(3) == box, listing.head
        assert "Subject: spaced" in c.ask_multi(f"read {uids_of(listing.body)[0]}").body
        assert c.ask(f"check {box.replace('  ', ' ')}").startswith("error: mailbox ")
        assert c.ask_multi("help read").lines == [
            "ok read UID [MAILBOX]",
            "a message as text; marks it seen (after login)",
            "UID: a message's UID (the numbers 'list' shows)",
            "MAILBOX: optional; the rest of the line, exactly as typed (spaces kept)"]
        assert c.ask("help frob") == "error: unknown command 'frob'; try 'help'"
        assert c.ask("read") == "error: usage: read UID [MAILBOX]"


def test_stopping_the_daemon_logs_users_out_of_imap(mailserver: MailServer, tmp_path) -> None:
    daemon = start_daemon(tmp_path, config_toml=mail_config(mailserver, close_grace=3))
    try:
        with logged_in(daemon, "alice", mailserver) as c:
            assert c.ask("check").startswith("ok INBOX ")
            started = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            assert c.raw_line(timeout=10) == "error: server shutting down"
            assert daemon.proc.wait(15) == -signal.SIGTERM
            assert time.monotonic() - started < 3 + 2  # within the grace period, and some
    finally:
        daemon.stop()
    log = daemon.log()
    assert "logging 1 mail users out" in log
    assert "user alice logged out of the mail server" in log
    assert "mail session lost" not in log and "Traceback" not in log


def test_stale_uidvalidity_is_refused(maild: Daemon, mailserver: MailServer) -> None:
    box = fresh_mailbox(mailserver, "alice", message("old", "o\n"))
    with logged_in(maild, "alice", mailserver) as c:
        old_uid = uids_of(c.ask_multi(f"list {box}").body)[0]
        conn = imap(mailserver, "alice")  # another client replaces the mailbox
        try:
            assert conn.delete(box)[0] == "OK"
            time.sleep(1.1)  # UIDVALIDITY is time-based in Dovecot: make it differ
            assert conn.create(box)[0] == "OK"
            conn.append(box, "", imaplib.Time2Internaldate(time.time()), message("new", "n\n"))
        finally:
            conn.logout()
        stale = f"error: {box} changed on the server (UIDVALIDITY); run list again"
        assert c.ask(f"read {old_uid} {box}") == stale
        assert c.ask(f"delete {old_uid}") == stale
        assert mailserver.message_count("alice", box) == 1  # nothing was deleted
        new_uid = uids_of(c.ask_multi(f"list {box}").body)[0]
        assert "Subject: new" in c.ask_multi(f"read {new_uid}").body


def test_send_arrives_through_watch_for_another_user(maild: Daemon,
                                                     mailserver: MailServer) -> None:
    mailserver.clear_mailbox("bob")
    subject = "Grüße " + uuid.uuid4().hex[:6]
    with logged_in(maild, "bob", mailserver) as bob, logged_in(maild, "alice", mailserver) as al:
        watching = bob.ask("watch on")
        assert watching == "ok watching INBOX messages=0 unseen=0 recent=0", watching
        assert al.ask("send bob@example.test").startswith("ok ready")
        for line in (f"Subject: {subject}", "", "Hallo Bob,", ".", "..stuffed", "Alice"):
            al.send("." + line if line.startswith(".") else line)
        al.send(".")
        sent = al.line()
        assert re.match(r"^ok sent <[^>]+@example\.test>$", sent), sent
        pushed, waited = bob.wait_push("* new mail: INBOX", timeout=10)
        assert pushed == "* new mail: INBOX messages=1 unseen=1"
        assert waited < 5.0
        assert bob.ask("time")  # commands still work while watching
        listing = bob.ask_multi("list")
        assert subject in listing.body[0] and "alice" in listing.body[0]
        read = bob.ask_multi(f"read {uids_of(listing.body)[0]}")
        assert "From: alice@example.test" in read.body
        body = read.body[read.body.index("") + 1:]
        assert body[:4] == ["Hallo Bob,", ".", "..stuffed", "Alice"]  # as typed
        assert bob.ask("watch off") == "ok not watching"
        mailserver.deliver("bob", "after watch off", wait=True)
        assert bob.ask("check").startswith("ok INBOX messages=2 ")
        assert not any(p.startswith("* new mail") for p in bob.pushed)


def test_smtp_refusals_are_named_and_nothing_is_reported_sent(maild: Daemon,
                                                              mailserver: MailServer) -> None:
    with logged_in(maild, "alice", mailserver) as c:
        assert c.ask("send nobody@example.test,bob@example.test").startswith("ok ready")
        c.send("Subject: partly")
        c.send("")
        c.send("text")
        c.send(".")
        partly = c.line()
        assert partly.startswith("error: ") and "nobody@example.test" in partly
        assert "bob@example.test" in partly and "ok sent" not in partly
        assert c.ask("send nobody@example.test").startswith("ok ready")
        c.send("text")
        c.send(".")
        refused = c.line()
        assert refused.startswith("error: ") and "nobody@example.test" in refused


def test_send_size_limit_smtp_down_and_no_imap(mailserver: MailServer, tmp_path) -> None:
    config = mail_config(mailserver, smtp_port=free_port(), smtp_extra="max_message_size = 1024\n")
    daemon = start_daemon(tmp_path, config_toml=config)
    try:
        with logged_in(daemon, "alice", mailserver) as c:
            assert c.ask("send bob@example.test").startswith("ok ready")
            for _ in range(40):
                c.send("x" * 60)
            c.send("time")  # inside the message: text, not a command
            c.send(".")
            assert c.line() == "error: message larger than 1.0 KB (the server's limit); not sent"
            assert re.match(r"^\d{4}/", c.ask("time"))
            assert c.ask("send bob@example.test").startswith("ok ready")
            c.send("short")
            c.send(".")
            down = c.line()
            assert down.startswith("error: not sent: ") and "refused" in down, down
    finally:
        daemon.stop()
    bare_dir = tmp_path / "bare"
    bare_dir.mkdir()
    bare = start_daemon(bare_dir)
    try:
        with LineClient.connect(bare.port) as c:
            assert c.ask("login alice pw") == ("error: mail is not configured on this server "
                                               "(no [imap] in its configuration)")
    finally:
        bare.stop()


def test_bad_logins_are_slowed_then_refused(mailserver: MailServer, tmp_path) -> None:
    config = mail_config(mailserver, login_failures=2, login_lockout=4.0)
    daemon = start_daemon(tmp_path, config_toml=config)
    wrong = "wrong-" + uuid.uuid4().hex
    try:
        with LineClient.connect(daemon.port) as c:
            started = time.monotonic()
            assert c.ask(f"login alice {wrong}") == "error: login failed: wrong user name or password"
            assert c.ask(f"login alice {wrong}") == "error: login failed: wrong user name or password"
            assert time.monotonic() - started >= 3.0  # held back 1 s, then 2 s
            locked = c.ask("login alice pw")  # even the right password, while locked out
            wait = re.match(r"^error: too many failed logins from your address; try again in "
                            r"(\d) s$", locked)
            assert wait, locked
            time.sleep(int(wait.group(1)) + 0.2)
            assert c.ask("login alice pw") == "ok logged in as alice"
    finally:
        daemon.stop()
    log = daemon.log()
    assert "login failed for alice" in log and "refusing logins from it" in log
    assert wrong not in log


def test_dovecot_killed_mid_session(maild: Daemon, mailserver: MailServer) -> None:
    with logged_in(maild, "alice", mailserver) as c:
        assert c.ask("check").startswith("ok INBOX ")
        try:
            mailserver.kill_dovecot()
            lost = c.raw_line(timeout=15)
            assert lost.startswith("error: mail session lost ("), lost
            assert lost.endswith("; login again")
            assert c.ask("check") == "error: login first"
            refused = c.ask("login alice pw")
            assert refused.startswith("error: ") and "refused" in refused, refused
        finally:
            mailserver.start_dovecot()
        assert c.ask("login alice pw") == "ok logged in as alice"
        assert c.ask("check").startswith("ok INBOX ")


def test_closing_the_line_connection_ends_the_mail_session(maild: Daemon,
                                                           mailserver: MailServer) -> None:
    client = logged_in(maild, "alice", mailserver)
    status = maild.exchange(b"status\r\nquit\r\n").decode()
    assert re.search(r"mail sessions: [1-9]\d* logged in", status), status
    client.close()
    deadline = time.monotonic() + 10
    while "mail sessions: 0 logged in" not in maild.exchange(b"status\r\nquit\r\n").decode():
        assert time.monotonic() < deadline, "the mail session outlived its line connection"
        time.sleep(0.1)


def test_tls_listener_for_remote_users(mailserver: MailServer, tmp_path) -> None:
    """A remote user's way in: the line service over TLS (here on loopback), verified by the
    client against the CA, with login and mail commands working through it."""
    tls = mailserver.dir / "tls"
    port = free_port()
    listen = (f"ssl:{port}:interface=127.0.0.1:privateKey={tls / 'server.key'}:"
              f"certKey={tls / 'server.pem'}")
    daemon = start_daemon(tmp_path, config_toml=mail_config(mailserver), listen=listen, port=port)
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        wrapped = mailserver.ssl_context().wrap_socket(raw, server_hostname="localhost")
        with LineClient(wrapped) as c:
            assert c.ask("login alice pw") == "ok logged in as alice"
            assert COUNTS.match(c.ask("check"))
            assert c.ask("quit") == "quit"
    finally:
        daemon.stop()
