"""The mail commands end to end: telnet-like sessions through the installed daemon, against
REAL servers: IMAP (STARTTLS verified with the test CA) and Postfix (SMTP, STARTTLS + AUTH).

A user logs in with their own credentials, lists, reads, deletes and sends, and a second user
sees the sent message arrive through ``watch``; then the failure paths: bad login and the rate
limit, unknown UID, stale UIDVALIDITY, a refused recipient, the SMTP server down, the IMAP
server killed in the middle of a session.  What is IMAP server behaviour (list, read, delete,
mailbox names, UIDVALIDITY, watch, the server killed) runs against Dovecot, Cyrus and Courier
(``imap_server`` and the daemon ``imap_maild`` on it); sending, logins and the daemon's own
limits against the Dovecot and Postfix of ``mailserver``.
"""

from __future__ import annotations

import imaplib
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate

import pytest
from daemon import Daemon, free_port, start_daemon
from imapservers import ImapServer
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


def imap_mail_config(server: ImapServer, mailserver: MailServer) -> str:
    """mail_config() with [imap] on ``server`` (Dovecot, Cyrus or Courier); [smtp] stays the
    Postfix of ``mailserver``."""
    smtp = mail_config(mailserver).split("[smtp]\n", 1)[1]
    return ("[line]\nlogin_failures = 50\n"
            f'[imap]\nserver = "tcp:127.0.0.1:{server.imap_port}"\n'
            f'ca_file = "{server.ca_file}"\n[smtp]\n{smtp}')


@pytest.fixture(scope="module")
def imap_maild(imap_server: ImapServer, mailserver: MailServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon on ``imap_server`` (one per server and module)."""
    daemon = start_daemon(tmp_path_factory.mktemp("imap_maild"),
                          config_toml=imap_mail_config(imap_server, mailserver))
    yield daemon
    daemon.stop()


def imap(server: MailServer | ImapServer, user: str) -> imaplib.IMAP4:
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


def fresh_mailbox(server: MailServer | ImapServer, user: str, *messages: bytes) -> str:
    """A new mailbox of ``user`` holding ``messages`` (oldest first); returns its full name."""
    if isinstance(server, ImapServer):
        return server.fresh_mailbox(user, *messages)
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


def logged_in(daemon: Daemon, user: str, server: MailServer | ImapServer) -> LineClient:
    client = LineClient.connect(daemon.port)
    assert client.ask(f"login {user} {server.users[user]}") == f"ok logged in as {user}"
    return client


def test_mail_commands_need_login(maild: Daemon) -> None:
    with LineClient.connect(maild.port) as c:
        for command in ("check", "list", "read 1", "delete 1", "watch on", "mailboxes"):
            assert c.ask(command) == "error: login first", command
        assert c.ask("send bob@example.test") == (  # and its message is read, and dropped
            "error: login first; the message up to the lone '.' is discarded")
        assert c.ask(".") == "error: not sent: login first"
        assert re.match(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d$", c.ask("time"))


def test_login_list_read_delete(imap_maild: Daemon, imap_server: ImapServer) -> None:
    box = fresh_mailbox(imap_server, "alice",
                        message("first", "one\n"),
                        with_attachment("=?utf-8?b?0J/RgNC40LLQtdGC?="),
                        message("dots", "before\n.\n..two\nafter\n"))
    with logged_in(imap_maild, "alice", imap_server) as c:
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
        assert imap_server.message_count("alice", box) == 2
        assert c.ask(f"read {uids[1]}") == f"error: no message with UID {uids[1]} in {box}"
        assert uids_of(c.ask_multi(f"list {box}").body) == [uids[0], uids[2]]


def test_delete_leaves_messages_other_clients_marked(imap_maild: Daemon,
                                                      imap_server: ImapServer) -> None:
    box = fresh_mailbox(imap_server, "alice", message("keep me", "k\n"),
                        message("delete me", "d\n"))
    other = imap(imap_server, "alice")
    try:
        other.select(box)
        other.uid("STORE", "1", "+FLAGS", r"(\Deleted)")  # marked, not expunged, by another
        with logged_in(imap_maild, "alice", imap_server) as c:
            uids = uids_of(c.ask_multi(f"list {box}").body)
            assert c.ask(f"delete {max(uids)}").startswith("ok deleted 1 message")
    finally:
        other.logout()
    assert imap_server.message_count("alice", box) == 1  # UID EXPUNGE took only ours


def test_mailboxes_and_bad_arguments(imap_maild: Daemon, imap_server: ImapServer) -> None:
    box = fresh_mailbox(imap_server, "alice", message("x", "y\n"))
    with logged_in(imap_maild, "alice", imap_server) as c:
        boxes = c.ask_multi("mailboxes")
        assert boxes.head.startswith("ok ") and f"messages=1 unseen=1 {box}" in boxes.body
        assert any(line.endswith(" INBOX") for line in boxes.body)
        assert c.ask("read abc") == "error: not a UID: 'abc' (UIDs are the numbers 'list' shows)"
        assert c.ask("list 0").startswith("error: COUNT must be 1 to ")
        assert c.ask(f"read 999999 {box}") == f"error: no message with UID 999999 in {box}"
        assert c.ask("check No-Such-Box").startswith("error: ")
        assert c.ask("watch sideways") == "error: usage: watch on|off [MAILBOX]"
        assert c.ask("send not-an-address").startswith("error: ")
        assert c.ask(".").startswith("error: not sent: ")  # the refused send's message ends
        assert c.ask("logout") == "ok logged out"
        assert c.ask("check") == "error: login first"


def test_mailbox_names_keep_their_spaces_and_help_names_the_arguments(
        imap_maild: Daemon, imap_server: ImapServer) -> None:
    box = imap_server.mailbox("T-" + uuid.uuid4().hex[:8] + "  Two  Spaces")
    imap_server.fresh_mailbox("alice", message("spaced", "s\n"), name=box)
    with logged_in(imap_maild, "alice", imap_server) as c:
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


def test_stale_uidvalidity_is_refused(imap_maild: Daemon, imap_server: ImapServer) -> None:
    box = fresh_mailbox(imap_server, "alice", message("old", "o\n"))
    with logged_in(imap_maild, "alice", imap_server) as c:
        old_uid = uids_of(c.ask_multi(f"list {box}").body)[0]
        imap_server.delete_mailbox("alice", box)  # another client replaces the mailbox
        time.sleep(1.1)  # UIDVALIDITY is time-based in Dovecot: make it differ
        imap_server.fresh_mailbox("alice", message("new", "n\n"), name=box)
        stale = f"error: {box} changed on the server (UIDVALIDITY); run list again"
        assert c.ask(f"read {old_uid} {box}") == stale
        assert c.ask(f"delete {old_uid}") == stale
        assert imap_server.message_count("alice", box) == 1  # nothing was deleted
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


def test_watch_pushes_mail_as_it_arrives_at_the_server(imap_maild: Daemon,
                                                      imap_server: ImapServer) -> None:
    """``watch`` on each server: mail delivered the server's own way (Dovecot: SMTP and LMTP;
    Cyrus: LMTP; Courier: a file in Maildir/new) is pushed within seconds."""
    imap_server.clear_mailbox("bob")
    with logged_in(imap_maild, "bob", imap_server) as bob:
        assert bob.ask("watch on") == "ok watching INBOX messages=0 unseen=0 recent=0"
        imap_server.deliver("bob", "watched " + uuid.uuid4().hex[:6])
        pushed, waited = bob.wait_push("* new mail: INBOX", timeout=10)
        assert pushed == "* new mail: INBOX messages=1 unseen=1", pushed
        assert waited < 5.0
        assert bob.ask("watch off") == "ok not watching"


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


def test_dovecot_killed_mid_session(imap_maild: Daemon, imap_server: ImapServer) -> None:
    with logged_in(imap_maild, "alice", imap_server) as c:
        assert c.ask("check").startswith("ok INBOX ")
        try:
            imap_server.kill()
            lost = c.raw_line(timeout=15)  # pushed (issue 11 item 19): a `* ` line
            assert lost.startswith("* mail session lost ("), lost
            assert lost.endswith("; login again")
            again = c.ask("check")
            assert again.startswith("error: the mail session was lost ("), again
            assert c.ask("check") == "error: login first"
            refused = c.ask("login alice pw")
            assert refused.startswith("error: ") and "refused" in refused, refused
        finally:
            imap_server.start()
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


# -- issue 11 items 6 and 8: the lock-out holds under concurrency; Dovecot sees the client ---

def client_from(daemon: Daemon, source: str) -> LineClient:
    """A line client connecting from ``source``, another loopback address than the daemon's
    own (127.0.0.1), so that Dovecot's log tells which address it was given."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=15,
                                    source_address=(source, 0))
    return LineClient(sock, timeout=30)


def fresh_loopback() -> str:
    return f"127.{uuid.uuid4().int % 200 + 20}.{uuid.uuid4().int % 250 + 1}.7"


def dovecot_lines(server: MailServer, rip: str) -> list[str]:
    return [line for line in server.dovecot_log.read_text(errors="replace").splitlines()
            if f"rip={rip}," in line]


def test_dovecot_sees_the_line_clients_address_through_id(maild: Daemon,
                                                          mailserver: MailServer) -> None:
    source = fresh_loopback()
    with client_from(maild, source) as c:
        assert c.ask("login alice pw") == "ok logged in as alice"
        assert c.ask("check").startswith("ok INBOX ")
        who = mailserver._doveadm("who", "-1", "alice")
        assert source in who, who
    logins = [line for line in dovecot_lines(mailserver, source) if "Login: user=<alice>" in line]
    assert len(logins) == 1, mailserver.log_tail()


def test_wrong_logins_sent_at_once_reach_dovecot_at_most_login_failures_times(
        mailserver: MailServer, tmp_path) -> None:
    daemon = start_daemon(tmp_path, config_toml=mail_config(mailserver, login_failures=5))
    source = fresh_loopback()
    try:
        clients = [client_from(daemon, source) for _ in range(30)]
        for c in clients:
            c.send("login alice wrong-password")
        replies = sorted(c.line(timeout=60) for c in clients)
        for c in clients:
            c.close()
        failed = [r for r in replies if r == "error: login failed: wrong user name or password"]
        assert len(failed) == 5, replies
        assert all(r.startswith("error: too many ") for r in replies if r not in failed), replies
        with client_from(daemon, source) as c:  # the 31st, with the right password
            refused = c.ask("login alice pw")
            assert refused.startswith("error: too many failed logins from your address"), refused
    finally:
        daemon.stop()
    tried = [line for line in dovecot_lines(mailserver, source) if "auth failed" in line]
    assert len(tried) == 5, tried  # and Dovecot saw them come from the client's address


def test_sessions_per_user_are_capped_below_dovecots_limit(maild: Daemon,
                                                           mailserver: MailServer) -> None:
    clients = [LineClient.connect(maild.port) for _ in range(9)]
    try:
        for c in clients[:8]:  # the default cap, mail_sessions_per_user = 8
            assert c.ask("login bob pw") == "ok logged in as bob"
        assert clients[8].ask("login bob pw") == (
            "error: too many mail sessions for this user (8 at most); log out of another first")
        assert clients[0].ask("logout") == "ok logged out"
        assert clients[8].ask("login bob pw") == "ok logged in as bob"
    finally:
        for c in clients:
            c.close()


# -- issue 11: a refused send, recipient words, a big send -------------------------------------

DISCARDED = "; the message up to the lone '.' is discarded"


def test_a_refused_send_never_runs_its_message_as_commands(maild: Daemon, mailserver: MailServer,
                                                           tmp_path) -> None:
    """Item 4: in one write, a refused send and a message holding 'delete UID' and 'logout'
    (bad recipient; no [smtp]; not logged in): nothing typed after the send runs."""
    box = fresh_mailbox(mailserver, "alice", message("keep me", "k\n"))
    config = mail_config(mailserver).split("[smtp]")[0]  # a second daemon, without [smtp]
    nosmtp = start_daemon(tmp_path, config_toml=config)
    try:
        for daemon, send, reason in [
                (maild, "send bob@example..test",
                 "bad recipient 'bob@example..test': not a plain local@domain address"),
                (nosmtp, "send bob@example.test",
                 "sending is not configured on this server (no [smtp])")]:
            with logged_in(daemon, "alice", mailserver) as c:
                uid = uids_of(c.ask_multi(f"list {box}").body)[0]
                c.sock.sendall(f"{send}\r\nSubject: todo\r\n\r\ndelete {uid}\r\nlogout\r\n"
                               "quit\r\n.\r\n".encode())
                assert c.line() == f"error: {reason}{DISCARDED}"
                assert c.line() == f"error: not sent: {reason}"
                assert c.ask(f"check {box}").startswith(f"ok {box} messages=1 ")  # logged in
            assert mailserver.message_count("alice", box) == 1  # nothing deleted
        with LineClient.connect(nosmtp.port) as c:  # not logged in: the same
            c.sock.sendall(b"send bob@example.test\r\nlogin alice pw\r\n.\r\ncheck\r\n")
            assert c.line() == f"error: login first{DISCARDED}"
            assert c.line() == "error: not sent: login first"
            assert c.line() == "error: login first"  # the login line was message text
    finally:
        nosmtp.stop()


def test_recipients_separated_by_spaces_each_get_the_message(maild: Daemon,
                                                             mailserver: MailServer) -> None:
    """Item 5: 'send a@x b@y' reached nobody ('a@xb@y'), 'send bob @example.test' reached
    bob@example.test."""
    subject = "both " + uuid.uuid4().hex[:8]
    with logged_in(maild, "alice", mailserver) as c:
        assert c.ask("send bob @example.test") == (
            f"error: bad recipient 'bob': missing @domain{DISCARDED}")
        assert c.ask(".") == "error: not sent: bad recipient 'bob': missing @domain"
        assert c.ask("send alice@example.test bob@example.test").startswith("ok ready")
        for line in (f"Subject: {subject}", "", "to both", "."):
            c.send(line)
        assert c.line().startswith("ok sent <")
    for user in ("alice", "bob"):
        conn = imap(mailserver, user)
        try:
            deadline = time.monotonic() + 15
            while True:
                conn.select("INBOX")
                found = conn.search(None, "SUBJECT", f'"{subject}"')[1][0].split()
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert len(found) == 1, user
        finally:
            conn.logout()


def _rss(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def test_a_big_send_holds_little_memory_and_never_stalls_other_clients(
        mailserver: MailServer, tmp_path) -> None:
    """Item 9, measured on the real daemon: 8 MB typed in 2-byte lines (the worst case for an
    object per line).  Today: a peak of about 30 times the typed size, and the other clients
    frozen for seconds at the '.' (measured here: 58 times, 2.5 s).  Bounds, generous for a
    shared machine: the daemon's peak memory grows by at most 3 times the typed size
    (measured: 2.1; the buffer and the message, once), and another client's ``time`` is
    answered within 50 ms at the median and 300 ms at the worst, throughout (measured: about
    6 ms and 60 ms)."""
    import threading

    config = mail_config(mailserver, smtp_port=free_port())  # submission fails at once: the
    daemon = start_daemon(tmp_path, config_toml=config)     # typing and composing are measured
    lines = 2_000_000
    typed = lines * len(b"ab\r\n")  # 8 MB
    waits: list[float] = []
    done = threading.Event()

    def ask_time() -> None:
        with LineClient.connect(daemon.port) as other:
            while not done.is_set():
                started = time.monotonic()
                assert re.match(r"^\d{4}/", other.ask("time"))
                waits.append(time.monotonic() - started)
                time.sleep(0.01)

    try:
        with logged_in(daemon, "alice", mailserver) as c:
            assert c.ask("time")
            before = _rss(daemon.proc.pid, "VmRSS")
            with open(f"/proc/{daemon.proc.pid}/clear_refs", "w") as f:
                f.write("5")  # the peak (VmHWM) starts again from now
            asker = threading.Thread(target=ask_time)
            asker.start()
            try:
                assert c.ask("send bob@example.test").startswith("ok ready")
                c.sock.sendall(b"ab\r\n" * lines + b".\r\n")
                outcome = c.line(timeout=60)
                time.sleep(0.3)  # and a few more asks after it
            finally:
                done.set()
                asker.join(30)
            assert outcome.startswith("error: not sent: "), outcome  # no SMTP server there
            grown = _rss(daemon.proc.pid, "VmHWM") - before
    finally:
        daemon.stop()
    waits.sort()
    assert len(waits) > 20
    median, worst = waits[len(waits) // 2], waits[-1]
    print(f"peak memory grew {grown / typed:.2f} x the typed size; time: median "
          f"{median * 1000:.1f} ms, worst {worst * 1000:.1f} ms over {len(waits)} asks")
    assert grown <= 3 * typed, f"peak memory grew by {grown / typed:.1f} x the typed size"
    assert median < 0.05 and worst < 0.3, f"median {median:.3f} s, worst {worst:.3f} s"


# -- issue 11 items 10, 11 and 12: list off the reactor, watch is not idle, clean names ---

def heavy_header_message(n: int) -> bytes:
    """A message whose From lists 140 addresses: about 2 KB (the HEADER.FIELDS ``list``
    fetches) that the general address parser takes about 1 ms to summarize."""
    senders = ", ".join(f"u{j}@x{n}.example.org" for j in range(90))
    return (f"Subject: heavy {n}\r\nDate: {formatdate(localtime=True)}\r\n"
            f"To: alice@example.test\r\nFrom: {senders}\r\n\r\nbody {n}\r\n").encode()


def time_latencies(port: int, stop: threading.Event, out: list[float]) -> None:
    """Ask ``time`` on a connection of its own until ``stop``; every round trip in ``out``."""
    with LineClient.connect(port) as c:
        while not stop.is_set():
            started = time.perf_counter()
            assert re.match(r"^\d{4}/", c.ask("time"))
            out.append(time.perf_counter() - started)
            time.sleep(0.005)


def test_list_of_heavy_headers_does_not_hold_up_other_clients(maild: Daemon,
                                                             mailserver: MailServer) -> None:
    """Issue 11 item 10: ``list 500`` of heavy headers held other clients' ``time`` up to
    0.28 s (summarized on the reactor thread; here about 0.5 s).  Summarized in the thread
    pool, as ``read`` renders, the reactor answers ``time`` meanwhile."""
    box = fresh_mailbox(mailserver, "alice", *(heavy_header_message(n) for n in range(500)))
    with logged_in(maild, "alice", mailserver) as c:
        assert len(c.ask_multi(f"list 500 {box}").body) == 500  # warm: the mailbox selected
        stop, latencies = threading.Event(), list[float]()
        prober = threading.Thread(target=time_latencies, args=(maild.port, stop, latencies))
        prober.start()
        try:
            time.sleep(0.2)
            for _ in range(3):
                started = time.perf_counter()
                listing = c.ask_multi(f"list 500 {box}")
                took = time.perf_counter() - started
                assert len(listing.body) == 500 and "heavy 499" in listing.body[0]
        finally:
            stop.set()
            prober.join(10)
    assert len(latencies) > 20, latencies
    worst = max(latencies)
    # Generous: before the fix the worst was the whole summarizing, 0.3 to 0.6 s here.
    assert worst < 0.15, f"time took {worst:.3f} s during list 500 (list took {took:.3f} s)"


def test_watch_is_not_ended_by_the_idle_timeout(mailserver: MailServer, tmp_path) -> None:
    """Issue 11 item 11: with ``idle_timeout = 5`` a watcher got mail pushed at 3.6 s and was
    closed at 6.0 s.  A watching client is kept however long it is quiet (TCP keepalive
    watches it); after ``watch off`` the idle timeout applies again."""
    mailserver.clear_mailbox("bob")
    daemon = start_daemon(tmp_path, config_toml=mail_config(mailserver, idle_timeout=5))
    try:
        with logged_in(daemon, "bob", mailserver) as bob:
            assert bob.ask("watch on").startswith("ok watching INBOX ")
            time.sleep(3.6)
            mailserver.deliver("bob", "while watching", wait=True)
            pushed, _ = bob.wait_push("* new mail: INBOX", timeout=10)
            assert pushed.startswith("* new mail: INBOX messages=1 ")
            time.sleep(9)  # quiet for almost twice the limit past the push: still there
            with pytest.raises(TimeoutError):
                bob.raw_line(timeout=0.1)  # nothing came: no idle-timeout line, no close
            assert re.match(r"^\d{4}/", bob.ask("time"))
            assert bob.ask("watch off") == "ok not watching"
            started = time.monotonic()
            assert bob.raw_line(timeout=15) == "error: idle timeout (5 s), closing"
            assert 4 < time.monotonic() - started < 10
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


def test_mailbox_names_with_bidi_and_c1_characters_are_shown_cleaned(
        imap_maild: Daemon, imap_server: ImapServer) -> None:
    """Issue 11 item 12: a mailbox named ``&AJs-2J`` (U+009B, CSI) was printed raw by
    ``mailboxes``; ``check \\u202egpj.exe`` echoed U+202E, and so did the ``list`` head line,
    ``watch`` and ``* new mail:``.  Every one goes through the one cleaner: ``?``."""
    tag = uuid.uuid4().hex[:6]
    prefix = imap_server.prefix  # INBOX. on Cyrus and Courier
    csi_box, rlo_box = f"{prefix}T-{tag}&AJs-2J", f"{prefix}T-{tag}&IC4-gpj.exe"  # as IMAP has it
    imap_server.fresh_mailbox("alice", name=csi_box)
    imap_server.fresh_mailbox("alice", message("mirrored", "m\n"), name=rlo_box)
    typed = f"{prefix}T-{tag}\u202egpj.exe"
    shown = f"{prefix}T-{tag}?gpj.exe"
    with logged_in(imap_maild, "alice", imap_server) as c:
        boxes = c.ask_multi("mailboxes")
        assert f"messages=0 unseen=0 {prefix}T-{tag}?2J" in boxes.body, boxes.body
        assert f"messages=1 unseen=1 {shown}" in boxes.body, boxes.body
        assert c.ask(f"check {typed}").startswith(f"ok {shown} messages=1 unseen=1 recent=")
        listing = c.ask_multi(f"list 5 {typed}")
        head = LIST_HEAD.match(listing.head)
        assert head and head.group(3) == shown, listing.head
        uid = uids_of(listing.body)[0]
        assert c.ask_multi(f"read {uid}").head.startswith(f"ok message {uid} in {shown} (")
        assert c.ask(f"watch on {typed}").startswith(
            f"ok watching {shown} messages=1 unseen=0 recent=")
        imap_server.append("alice", rlo_box, message("second", "s\n"))
        pushed, _ = c.wait_push("* new mail: ", timeout=10)
        assert pushed == f"* new mail: {shown} messages=2 unseen=1", pushed
        assert c.ask("watch off") == "ok not watching"
        everything = " ".join([*boxes.lines, *listing.lines, pushed])
        assert "\u202e" not in everything and "\x9b" not in everything


def test_read_counts_every_attachment(maild: Daemon, mailserver: MailServer) -> None:
    """Issue 11 item 17: ``read`` of a message with 20,000 attachments said ``... and 900
    more`` (counted among the first 1,000 parts only).  All are counted."""
    parts = "".join(f"--b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; "
                    f'filename="p{n}.png"\r\n\r\nx\r\n' for n in range(20_000))
    raw = ("From: many@example.org\r\nTo: alice@example.test\r\nSubject: many parts\r\n"
           f"Date: {formatdate(localtime=True)}\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           "--b\r\nContent-Type: text/plain\r\n\r\nSee the attachments.\r\n"
           f"{parts}--b--\r\n").encode()
    assert len(raw) < 4 << 20  # read fetches it whole (imap.read_limit)
    box = fresh_mailbox(mailserver, "alice", raw)
    with logged_in(maild, "alice", mailserver) as c:
        uid = uids_of(c.ask_multi(f"list 1 {box}").body)[0]
        read = c.ask_multi(f"read {uid} {box}")
        assert "See the attachments." in read.body
        assert "  100. p99.png (image/png, 1 B)" in read.body
        assert read.body[-1] == "  ... and 19900 more", read.body[-3:]
