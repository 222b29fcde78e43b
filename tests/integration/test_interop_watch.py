"""A line user's ``watch`` against Dovecot, Cyrus and Courier (issue 15, points 1 to 3).

* Courier derives the UIDVALIDITY of a folder nobody opened read-write from the clock: a
  watch of such a folder never pushed.  Now it settles the folder (one read-write SELECT)
  and pushes.
* Courier's Debian default (IMAP_ENHANCEDIDLE=0) looks for new mail only every 60 s during
  IDLE: a watch took 58.6 s.  The watch's own STATUS every ``watch_interval`` seconds catches
  it sooner.
* A watched mailbox deleted by another client: Cyrus tells the IDLE session only ``* 1
  EXPUNGE``, Courier nothing at all; the watch ends, and says why, on every server.

Each test works in its own mailbox, in the server's namespace.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import pytest
import pytest_twisted
from imapservers import ImapServer, raw_message
from interoprig import unsettled_folder
from mailrig import global_reactor
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from mailsocketd.mail.address import parse_server
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.users.config import ImapConfig
from mailsocketd.mail.users.session import UserSession, open_user_session

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")


def imap_config(server: ImapServer, **keys: object) -> ImapConfig:
    endpoint = f"tcp:{server.host}:{server.imap_port}"
    config = ImapConfig(server=endpoint, address=parse_server(endpoint, "server"),
                        ca_file=str(server.ca_file), timeout=10.0)
    return replace(config, **keys)  # type: ignore[arg-type]


async def login(server: ImapServer, user: str = "alice", **keys: object) -> UserSession:
    return await open_user_session(global_reactor(), imap_config(server, **keys), user,
                                   Secret(server.users[user].encode()))


def in_thread(function: Callable[..., T], *args: object) -> Deferred[T]:
    return threads.deferToThread(function, *args)


async def eventually(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Wait (without blocking the reactor) until ``predicate()``; the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout} s")
        await deferLater(reactor, 0.05)
    return time.monotonic() - started


class News:
    def __init__(self) -> None:
        self.seen: list[tuple[str, MailboxCounts]] = []

    def __call__(self, mailbox: str, counts: MailboxCounts) -> None:
        self.seen.append((mailbox, counts))


@pytest.mark.parametrize("imap_server", ["courier"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_watch_of_an_unsettled_courier_folder_pushes_new_mail(imap_server):
    """``watch on INBOX.Work`` never pushed on Courier (point 1): each EXAMINE of the folder
    gives it a new UIDVALIDITY, so mail that came while a command had another mailbox
    selected was taken for a recreated mailbox.  Now the watch sees that the messages stayed,
    pushes, and settles the folder (one read-write SELECT)."""
    box = await in_thread(unsettled_folder, imap_server, "alice")
    session = await login(imap_server, watch_interval=3600)  # no periodic STATUS here
    news = News()
    start = await session.watch(box, news)
    await eventually(lambda: session.watcher.idling, 15, "IDLE")
    for n in (1, 2):
        await deferLater(reactor, 1.1)  # the clock-derived UIDVALIDITY moves on
        await session.list_messages("INBOX", 1)  # the user's command: INBOX selected
        await in_thread(functools.partial(imap_server.deliver, "alice", f"new {n}", mailbox=box))
        await eventually(lambda: len(news.seen) == n, 15, f"push {n}")  # noqa: B023
        assert news.seen[-1][0] == box
        assert news.seen[-1][1].messages == start.messages + n
    assert session.client.commands_sent["SELECT"] == 1  # settled, once
    first = await in_thread(imap_server.uidvalidity, "alice", box)
    await deferLater(reactor, 1.1)
    assert await in_thread(imap_server.uidvalidity, "alice", box) == first  # settled
    await session.logout()


@pytest_twisted.ensureDeferred
async def test_courier_idle_every_60_s_is_caught_by_the_watch_interval(imap_server_variant):
    """Debian's IMAP_ENHANCEDIDLE=0: Courier's IDLE looked for the new mail after 58.6 s.
    The watch's STATUS every ``watch_interval`` (5 s here) finds it first (point 2)."""
    server = await in_thread(lambda: imap_server_variant("courier", idle_at_once=False))
    session = await login(server, watch_interval=5)
    news = News()
    await session.watch("INBOX", news)
    await eventually(lambda: session.watcher.idling, 15, "IDLE")
    await deferLater(reactor, 1.0)
    await in_thread(lambda: server.deliver("alice", "while idling"))
    took = await eventually(lambda: news.seen, 30, "the push")
    assert took < 7, took
    assert session.watcher.use_idle  # still IDLE between the checks
    await session.logout()


@pytest_twisted.ensureDeferred
async def test_a_watched_mailbox_deleted_while_idling_ends_the_watch(imap_server):
    """Nothing of the user's in between: the server's own news (Cyrus: ``* 1 EXPUNGE``),
    or the watch's STATUS (Courier says nothing), or the lost session (Dovecot ends it)
    ends the watch (point 3)."""
    box = await in_thread(lambda: imap_server.fresh_mailbox("bob", raw_message("one")))
    session = await login(imap_server, "bob", watch_interval=5)
    ends: list[str] = []
    lost: list[str] = []
    session.on_lost = lost.append
    await session.watch(box, News(), ends.append)
    await eventually(lambda: session.watcher.idling, 15, "IDLE")
    await in_thread(imap_server.delete_mailbox, "bob", box)
    took = await eventually(lambda: ends or lost, 20, "the end of the watch")
    if imap_server.name == "dovecot":  # Dovecot ends the session: that is the user's news
        assert lost and not ends, (lost, ends)
    else:
        assert len(ends) == 1 and ends[0].startswith(f"mailbox {box}: "), ends
        assert session.alive and session.watcher.watched is None and not lost
        assert (await session.check()).messages >= 0  # the session goes on
        if imap_server.name == "cyrus":
            assert took < 2, took  # its EXPUNGE brought the STATUS at once
        await session.logout()
    print(f"{imap_server.label}: watch ended after {took:.2f} s: {ends or lost}")
