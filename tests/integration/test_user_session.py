"""A line user's IMAP session (UserSession) against REAL servers, in this reactor.

Login (STARTTLS and IMAPS, verified; wrong password; cleartext refused; wrong CA; server
down), check, mailboxes, list (newest first, cost by count in a mailbox of thousands), read
(marks \\Seen, unknown UID, UIDVALIDITY change), delete (UID EXPUNGE leaves another client's
\\Deleted message alone; the Trash fallbacks), watch (pushed within 2 s of a delivery,
commands in between), two users at once, and the server killed mid-session.  What is server
behaviour runs against Dovecot, Cyrus and Courier (``imap_server``, conftest.py); the rest
against the Dovecot of ``mailserver``.  Each test works in its own mailbox ("T-..." in the
server's namespace), or clears the INBOX it watches.
"""

from __future__ import annotations

import imaplib
import re
import socket
import time
import uuid
from dataclasses import replace
from typing import cast

import pytest
import pytest_twisted
from mailrig import global_reactor
from twisted.internet import reactor, threads
from twisted.internet.base import DelayedCall
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater

from mailsocketd.mail.address import parse_server
from mailsocketd.mail.errors import AuthFailed, CleartextRefused, MailError
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.text.summary import arrival_date, summarize, summary_line
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import (
    LOST,
    MailboxError,
    NoSuchMessage,
    SessionLost,
    UidValidityChanged,
    open_user_session,
)

pytestmark = pytest.mark.timeout(90)


# -- helpers -------------------------------------------------------------------------------------

def imap_config(mailserver, server=None, **keys):
    """The [imap] of a MailServer or an ImapServer (``server``: another endpoint)."""
    server = server or f"tcp:localhost:{mailserver.imap_port}"
    ca = str(mailserver.ca_file) if mailserver.ca_file else None
    config = ImapConfig(server=server, address=parse_server(server, "server"), ca_file=ca,
                        timeout=10.0)
    return replace(config, **keys)


def box_name(server, tag):
    """A new mailbox name in the server's personal namespace (``INBOX.T-...`` on Cyrus)."""
    return server.mailbox(f"T-{tag}-{uuid.uuid4().hex[:6]}")


def admin(mailserver, user="alice"):
    """Another IMAP client (imaplib, blocking: call it in a thread)."""
    conn = imaplib.IMAP4(mailserver.host, mailserver.imap_port, timeout=20)
    if mailserver.ca_file:
        conn.starttls(ssl_context=mailserver.ssl_context())
    conn.login(user, mailserver.users[user])
    return conn


def in_thread(function, *args):
    return threads.deferToThread(function, *args)


def uids_and_flags(mailserver, mailbox, user="alice"):
    """{uid: flags text} of every message, as another client sees it (without \\Recent,
    which only one session gets)."""
    with admin(mailserver, user) as conn:
        conn.select(f'"{mailbox}"', readonly=True)
        _, data = conn.uid("FETCH", "1:*", "(FLAGS)")
    found = {}
    for item in data:
        m = re.search(rb"UID (\d+)", item or b"")
        if m:
            flags_match = re.search(rb"FLAGS \(([^)]*)\)", item)
            assert flags_match is not None, item
            flags = flags_match.group(1).decode().split()
            found[int(m.group(1))] = " ".join(f for f in flags if f != "\\Recent")
    return found


def uidvalidity(mailserver, mailbox, user="alice"):
    with admin(mailserver, user) as conn:
        _, data = conn.status(f'"{mailbox}"', "(UIDVALIDITY)")
    found = re.search(rb"UIDVALIDITY (\d+)", data[0])
    assert found is not None, data
    return int(found.group(1))


async def login(mailserver, user="alice", **keys):
    session = await open_user_session(global_reactor(), imap_config(mailserver, **keys), user,
                                      Secret(mailserver.users[user].encode()))
    assert session.alive
    return session


async def eventually(predicate, timeout=10.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await deferLater(reactor, 0.02)


async def failure_of(coroutine):
    try:
        await coroutine
    except Exception as e:
        return e
    raise AssertionError("no exception")


async def logged_out(*sessions):
    """Log out; then no timer of ours may be left in the reactor."""
    for session in sessions:
        await session.logout()
        assert not session.alive
    await deferLater(reactor, 0.05)
    # the reactor's timers are DelayedCalls: IDelayedCall does not name their func
    left = [c for c in reactor.getDelayedCalls()
            if c.active() and (getattr(cast(DelayedCall, c).func, "__module__", None) or ""
                               ).startswith("mailsocketd.mail.")]
    assert left == [], left


# -- login ---------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_login_over_starttls_and_imaps_then_check(imap_server):
    box = box_name(imap_server, "check")
    await in_thread(imap_server.populate, "alice", 5, box)
    for server in (f"tcp:localhost:{imap_server.imap_port}",
                   f"tls:127.0.0.1:{imap_server.imaps_port}"):
        session = await login(imap_server, server=server)
        assert session.client.encrypted
        assert {b"IDLE", b"UIDPLUS"} <= session.capabilities
        counts = await session.check(box)
        assert (counts.messages, counts.unseen, counts.uidnext) == (5, 5, 6)
        assert session.client.commands_sent["STATUS"] == 1
        await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_auth_failed_without_the_password(imap_server):
    password = "Wr0ng-" + uuid.uuid4().hex
    error = await failure_of(open_user_session(global_reactor(), imap_config(imap_server), "alice",
                                               Secret(password.encode())))
    assert isinstance(error, AuthFailed)
    assert str(error).startswith("login refused for user alice: NO "), str(error)
    if imap_server.name == "dovecot":
        assert str(error) == ("login refused for user alice: NO [AUTHENTICATIONFAILED] "
                              "Authentication failed.")
    assert password not in str(error) and password not in repr(error)


@pytest_twisted.ensureDeferred
async def test_no_starttls_means_no_login_unless_allowed(mailserver_notls):
    server = f"tcp:127.0.0.1:{mailserver_notls.imap_port}"
    error = await failure_of(login(mailserver_notls, server=server))
    assert isinstance(error, CleartextRefused)
    assert "refusing to send the password in clear" in str(error)
    session = await login(mailserver_notls, server=server, allow_cleartext=True)
    assert not session.client.encrypted
    assert (await session.check()).uidvalidity > 0
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_a_server_certificate_from_another_ca_is_refused(mailserver):
    server = f"tls:127.0.0.1:{mailserver.imaps_port}"
    config = replace(imap_config(mailserver, server=server), ca_file=None)  # system CAs
    error = await failure_of(open_user_session(global_reactor(), config, "alice", Secret(b"pw")))
    assert isinstance(error, MailError)
    assert str(error) == "cannot reach the mail server: TLS failure: certificate verify failed"


@pytest_twisted.ensureDeferred
async def test_a_server_that_is_down_is_a_clean_error(mailserver):
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        error = await failure_of(login(mailserver, server=f"tcp:127.0.0.1:{port}"))
    assert str(error) == "cannot reach the mail server: connection refused"


# -- reading -------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_mailboxes_decodes_names_and_counts_each(imap_server):
    box = box_name(imap_server, "boxes")
    child = box + imap_server.delimiter + "Entwürfe"

    def create():
        with admin(imap_server) as conn:
            conn.create(f'"{box}"')
            conn.create('"' + child.encode("imap4-utf-7").decode("ascii") + '"')

    await in_thread(create)
    await in_thread(imap_server.populate, "alice", 2, box)
    session = await login(imap_server)
    found = dict(await session.mailboxes())
    assert found["INBOX"] is not None
    assert found[box].messages == 2 and found[child].messages == 0
    assert (await session.check(child)).messages == 0  # the decoded name works in commands
    error = await failure_of(session.check(box + "-missing"))
    assert isinstance(error, MailboxError) and str(error).startswith(f"mailbox {box}-missing: ")
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_list_is_newest_first_and_costs_by_count_not_size(imap_server):
    box = box_name(imap_server, "list")
    n = 3000 if imap_server.name == "dovecot" else 100  # APPENDed one by one there (~50 ms)
    await in_thread(imap_server.populate, "alice", n, box)
    session = await login(imap_server)
    client = session.client
    lines_before, sent_before = client.lines_received, dict(client.commands_sent)
    listing = await session.list_messages(box, 5)
    assert (listing.mailbox, listing.exists) == (box, n)
    assert [m.uid for m in listing.messages] == [n, n - 1, n - 2, n - 3, n - 4]
    newest = listing.messages[0]
    assert f"Subject: Test message {n} of {n}".encode() in newest.header
    assert b"From: " in newest.header and b"Date: " in newest.header
    assert b"To:" not in newest.header and "\\Seen" not in newest.flags and newest.size > 1000
    sent = {k: v - sent_before.get(k, 0) for k, v in client.commands_sent.items()}
    assert {k: v for k, v in sent.items() if v} == {"EXAMINE": 1, "FETCH": 1}
    assert client.lines_received - lines_before < 40  # 5 messages' lines, not thousands
    assert listing.uidvalidity == await in_thread(uidvalidity, imap_server, box)
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_read_marks_seen_is_bounded_and_unknown_uids_are_refused(imap_server):
    box = box_name(imap_server, "read")
    await in_thread(imap_server.populate, "alice", 3, box)
    session = await login(imap_server)
    await session.list_messages(box, 3)
    message = await session.fetch_message(box, 2, 1 << 20)
    assert message.uid == 2 and message.size == len(message.data)
    assert b"Subject: Test message 2 of 3" in message.data
    assert (await in_thread(uids_and_flags, imap_server, box)) == {1: "", 2: "\\Seen", 3: ""}
    short = await session.fetch_message(box, 3, 100)
    full = await session.fetch_message(box, 3, 1 << 20)
    assert short.data == full.data[:100] and short.size == full.size == len(full.data) > 100
    error = await failure_of(session.fetch_message(box, 42, 100))
    assert isinstance(error, NoSuchMessage) and str(error) == f"no message with UID 42 in {box}"
    assert session.alive
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_a_recreated_mailbox_changes_uidvalidity(imap_server):
    box = box_name(imap_server, "uidv")
    await in_thread(imap_server.populate, "alice", 2, box)
    session = await login(imap_server)
    before = (await session.list_messages(box, 2)).uidvalidity

    def recreate():
        for _ in range(20):
            with admin(imap_server) as conn:
                conn.delete(f'"{box}"')
                conn.create(f'"{box}"')
                conn.append(f'"{box}"', None, None, b"Subject: new\r\n\r\nnew\r\n")
            if uidvalidity(imap_server, box) != before:
                return
            time.sleep(0.1)
        raise AssertionError(f"{imap_server.name} kept the UIDVALIDITY")

    await in_thread(recreate)
    for call in (session.fetch_message(box, 1, 100), session.delete(box, [1])):
        error = await failure_of(call)
        assert isinstance(error, UidValidityChanged)
        assert str(error) == f"{box} changed on the server (UIDVALIDITY); run list again"
    listing = await session.list_messages(box, 5)
    assert listing.uidvalidity != before and [m.uid for m in listing.messages] == [1]
    assert (await session.fetch_message(box, 1, 100)).data.endswith(b"new\r\n")
    await logged_out(session)


# -- delete --------------------------------------------------------------------------------------

def flag_deleted(mailserver, box, uid):
    with admin(mailserver) as conn:
        conn.select(f'"{box}"')
        conn.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")


@pytest_twisted.ensureDeferred
async def test_delete_expunges_exactly_those_uids(imap_server):
    box = box_name(imap_server, "delete")
    await in_thread(imap_server.populate, "alice", 5, box)
    await in_thread(flag_deleted, imap_server, box, 5)  # another client's business
    session = await login(imap_server)
    await session.list_messages(box, 5)
    deletion = await session.delete(box, [2, 1, 99])
    assert (deletion.deleted, deletion.missing, deletion.method) == ((1, 2), (99,), "expunged")
    assert "EXPUNGE" not in session.client.commands_sent
    assert (await in_thread(uids_and_flags, imap_server, box)) == {3: "", 4: "", 5: "\\Deleted"}
    error = await failure_of(session.delete(box, [1, 2]))
    assert isinstance(error, NoSuchMessage)
    await logged_out(session)


@pytest.mark.parametrize("missing", [{b"UIDPLUS"}, {b"UIDPLUS", b"MOVE"}])
@pytest_twisted.ensureDeferred
async def test_delete_without_uidplus_moves_to_trash(imap_server, missing):
    box = box_name(imap_server, "trash")
    await in_thread(imap_server.populate, "alice", 3, box)
    await in_thread(flag_deleted, imap_server, box, 3)

    trash = imap_server.trash  # "Trash", or "INBOX.Trash" on Cyrus and Courier

    def trash_count():
        with admin(imap_server) as conn:
            conn.create(trash)  # fails harmlessly when it exists
            _, data = conn.status(trash, "(MESSAGES)")
        found = re.search(rb"MESSAGES (\d+)", data[0])
        assert found is not None, data
        return int(found.group(1))

    in_trash = await in_thread(trash_count)
    session = await login(imap_server)
    session.capabilities -= missing  # a server without them, against the real one
    await session.list_messages(box, 3)
    deletion = await session.delete(box, [1])
    assert (deletion.deleted, deletion.method) == ((1,), f"moved to {trash}")
    assert not {"EXPUNGE", "UID EXPUNGE"} & set(session.client.commands_sent)
    assert await in_thread(trash_count) == in_trash + 1
    left = await in_thread(uids_and_flags, imap_server, box)
    if b"MOVE" not in session.capabilities:  # copied, and marked here; nothing expunged
        assert left == {1: "\\Deleted", 2: "", 3: "\\Deleted"}  # (Courier has no MOVE)
    else:
        assert left == {2: "", 3: "\\Deleted"}
    await logged_out(session)


# -- watch ---------------------------------------------------------------------------------------

class News:
    def __init__(self):
        self.seen = []

    def __call__(self, mailbox, counts):
        self.seen.append((time.monotonic(), mailbox, counts))


async def deliver_and_time(server, news, user, subject):
    """Deliver as the server's mail arrives (Dovecot: SMTP); the seconds until ``news`` hears
    of it (at most 2)."""
    before = len(news.seen)
    started = time.monotonic()
    await in_thread(lambda: server.deliver(user, subject, wait=False))
    await eventually(lambda: len(news.seen) > before, timeout=2.0 + (time.monotonic() - started),
                     what=f"news of {subject!r}")
    noticed = news.seen[-1][0] - started
    assert noticed < 2.0, noticed
    return news.seen[-1][2]


@pytest_twisted.ensureDeferred
async def test_watch_pushes_new_mail_within_2_seconds_and_survives_commands(imap_server):
    await in_thread(imap_server.clear_mailbox, "bob")
    box = box_name(imap_server, "other")
    await in_thread(imap_server.populate, "bob", 2, box)
    session = await login(imap_server, user="bob")
    news = News()
    start = await session.watch("INBOX", news)
    await eventually(lambda: session.watcher.idling, what="IDLE")
    counts = await deliver_and_time(imap_server, news, "bob", "first")
    assert counts.messages == start.messages + 1 and counts.uidnext == start.uidnext + 1
    # commands in between: IDLE ends, they run, IDLE resumes on INBOX
    assert (await session.list_messages(box, 5)).exists == 2
    assert (await session.check(box)).messages == 2
    await eventually(lambda: session.watcher.idling, what="IDLE again")
    counts = await deliver_and_time(imap_server, news, "bob", "second")
    assert counts.messages == start.messages + 2
    assert [n[1] for n in news.seen] == ["INBOX", "INBOX"]
    await session.unwatch()
    assert not session.watcher.idling
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_a_watched_mailbox_deleted_by_another_client_ends_the_watch_and_says_why(
        imap_server):
    box = box_name(imap_server, "doomed")
    await in_thread(imap_server.populate, "bob", 1, box)
    session = await login(imap_server, user="bob")
    ends: list[str] = []
    await session.watch(box, News(), ends.append)
    await eventually(lambda: session.watcher.idling, what="IDLE")

    async def elsewhere() -> None:  # the user's command selects INBOX; meanwhile box goes
        await session.select("INBOX", readonly=True)
        await in_thread(imap_server.delete_mailbox, "bob", box)
    await session.exclusive(elsewhere)
    await eventually(lambda: ends, what="the end of the watch")
    assert len(ends) == 1 and ends[0].startswith(f"mailbox {box}: "), ends
    assert session.watcher.watched is None and session.alive
    assert (await session.check()).uidvalidity > 0  # the session goes on
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_two_users_at_once(imap_server):
    await gatherResults([in_thread(imap_server.clear_mailbox, u) for u in ("alice", "bob")])
    alice, bob = await login(imap_server, "alice"), await login(imap_server, "bob")
    news_alice, news_bob = News(), News()
    await alice.watch("INBOX", news_alice)
    await bob.watch("INBOX", news_bob)
    await eventually(lambda: alice.watcher.idling and bob.watcher.idling, what="both idling")
    await deliver_and_time(imap_server, news_bob, "bob", "for bob")
    await deferLater(reactor, 0.3)
    assert news_alice.seen == []
    await deliver_and_time(imap_server, news_alice, "alice", "for alice")
    checks = await gatherResults([ensureDeferred(s.check()) for s in (alice, bob)])
    assert [counts.messages for counts in checks] == [1, 1]
    assert len(news_bob.seen) == 1
    await logged_out(alice, bob)


@pytest_twisted.ensureDeferred
async def test_dovecot_killed_mid_session(imap_server):
    idle_session = await login(imap_server)
    quiet_session = await login(imap_server, user="bob")
    reasons: dict[str, list[str]] = {"idle": [], "quiet": []}
    idle_session.on_lost = reasons["idle"].append
    quiet_session.on_lost = reasons["quiet"].append
    await idle_session.watch("INBOX", News())
    await eventually(lambda: idle_session.watcher.idling, what="IDLE")
    try:
        await in_thread(imap_server.kill)
        await eventually(lambda: reasons["idle"] and reasons["quiet"], timeout=5,
                         what="on_lost of both sessions")
        for session in (idle_session, quiet_session):
            assert not session.alive
            error = await failure_of(session.check())
            assert isinstance(error, SessionLost) and str(error) == LOST
        assert reasons == {"idle": ["the mail server closed the connection"],
                           "quiet": ["the mail server closed the connection"]}
    finally:
        await in_thread(imap_server.start)
    await logged_out(idle_session, quiet_session)  # quietly nothing: they are gone
    assert len(reasons["idle"]) == 1 and len(reasons["quiet"]) == 1


# -- mailbox names and dates as servers send them (issue 11, items 14 and 21) ---------------------

def odd_names(server, tag):
    """Names whose brackets, backslash and quotes broke the parser, in the server's namespace
    ('.' is the separator of all three here, so "[Gmail].Sent Mail" is Gmail's
    "[Gmail]/Sent Mail")."""
    names = [f"a[b{tag}", f"x]y{tag}", f"[Gmail{tag}]", f"[Gmail{tag}].Sent Mail"]
    if server.name != "cyrus":  # Cyrus refuses both: NO Invalid mailbox name
        names += [f"back\\slash{tag}", f'say "hi"{tag}']
    return [server.mailbox(name) for name in names]


def create_with_one_message(server, names, user="alice"):
    """Create each mailbox with one message, as another client (imaplib quotes the names)."""
    for name in names:
        server.create_mailbox(user, name)
        server.append(user, name, b"Subject: in " + name.encode() + b"\r\n\r\nx\r\n")


@pytest_twisted.ensureDeferred
async def test_mailbox_names_with_brackets_backslashes_and_quotes(imap_server):
    names = odd_names(imap_server, uuid.uuid4().hex[:6])
    await in_thread(create_with_one_message, imap_server, names)
    session = await login(imap_server)
    found = dict(await session.mailboxes())
    assert session.alive
    for name in names:
        assert found[name] is not None and found[name].messages == 1, (name, found.get(name))
        assert (await session.check(name)).messages == 1
        listing = await session.list_messages(name, 5)
        assert len(listing.messages) == 1
        assert f"in {name}".encode() in listing.messages[0].header
    await logged_out(session)


@pytest_twisted.ensureDeferred
async def test_list_shows_the_arrival_date_of_a_message_without_a_date_header(imap_server):
    box = box_name(imap_server, "nodate")
    arrived = "25-Nov-2026 14:03:07 +0100"

    def append():
        with admin(imap_server) as conn:
            conn.create(f'"{box}"')
            conn.append(f'"{box}"', None, f'"{arrived}"',
                        b"From: a@example.test\r\nSubject: no date\r\n\r\nbody\r\n")

    await in_thread(append)
    session = await login(imap_server)
    listing = await session.list_messages(box, 5)
    (message,) = listing.messages
    # the same moment (Dovecot keeps it in UTC: "25-Nov-2026 13:03:07 +0000")
    assert arrival_date(message.arrived) == arrival_date(arrived) != ""
    assert b"Date:" not in message.header
    summary = summarize(message.uid, message.header, message.flags, message.size,
                        message.arrived)
    assert summary.date == arrival_date(arrived)
    assert "(no date)" not in summary_line(summary)
    await logged_out(session)
