"""A line user's session against the exact replies of Cyrus and Courier (issue 15).

Each test plays what the real server sent (see tests/integration/test_interop_*.py for the same
against the servers themselves): Courier's UIDVALIDITY that changes with the clock, a watched
mailbox deleted by another client (Cyrus: one EXPUNGE; Courier: nothing), the periodic STATUS
of a watch, the Trash found without SPECIAL-USE, INBOX listed last.
"""

from __future__ import annotations

from twisted.logger import capturedLogs
from userrig import error_of, logged_in, result_of, run

from mailsocketd.mail.errors import MailError
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.idle import IDLE_MIN_SPACING
from mailsocketd.mail.users.session import UidValidityChanged

COURIER = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE IDLE"


def watching(mailbox="INBOX", caps=COURIER, uidvalidity=7, **imap):
    rig, session = logged_in(caps=caps, inbox=None, **imap)
    news: list[tuple[str, MailboxCounts]] = []
    ends: list[str] = []
    d = run(session.watch(mailbox, lambda box, counts: news.append((box, counts)), ends.append))
    rig.status_of(mailbox, uidnext=4, uidvalidity=uidvalidity)
    result_of(d)
    return rig, session, news, ends


# -- 2. the watch's safety net: a STATUS every watch_interval, even while idling ----------------

def test_a_watch_checks_every_watch_interval_while_idling():
    """Courier's IDLE (IMAP_ENHANCEDIDLE=0) looks for new mail once a minute: a watch took
    58.6 s to push.  Now IDLE ends every ``watch_interval`` seconds for one STATUS."""
    rig, _session, news, _ = watching(keepalive=1500)  # watch_interval: 30 s by default
    rig.select(b"EXAMINE")
    rig.idle()
    rig.clock.advance(29.9)
    assert rig.sent() == []
    rig.clock.advance(0.1)
    rig.done()
    rig.fresh_status_of(messages=4, unseen=2, uidnext=5)  # the server said nothing of it
    assert news == [("INBOX", MailboxCounts(4, 2, 0, 5, 7))]
    rig.idle()  # again at once: the last IDLE started 30 s ago
    rig.clock.advance(30)
    rig.done()
    rig.fresh_status_of(messages=4, unseen=2, uidnext=5)
    rig.idle()
    assert len(news) == 1


def test_a_polling_watch_checks_every_watch_interval():
    rig, _session, news, _ = watching(caps="IMAP4rev1", watch_interval=12)
    rig.clock.advance(11.9)
    assert rig.sent() == []
    rig.clock.advance(0.1)
    rig.status_of(messages=4, uidnext=5)
    assert len(news) == 1


# -- 3. a watched mailbox deleted by another client ------------------------------------------

def test_cyrus_one_expunge_to_zero_ends_the_watch_of_a_deleted_mailbox():
    """Cyrus tells an IDLE session of its mailbox's deletion only with ``* 1 EXPUNGE``."""
    rig, session, news, ends = watching("INBOX.Work")
    rig.select(b"EXAMINE", mailbox="INBOX.Work", exists=1)
    rig.idle()
    rig.server("* 1 EXPUNGE")
    rig.done()
    rig.answer(b"NOOP")
    rig.expect(b"STATUS")
    rig.reply(status="NO", text="Mailbox does not exist")
    assert ends == ["mailbox INBOX.Work: Mailbox does not exist"] and news == []
    assert session.watcher.watched is None and session.alive
    rig.clock.advance(3600)
    assert rig.sent() == []


def test_an_expunge_that_leaves_messages_is_no_reason_to_check():
    rig, _session, _, _ = watching()
    rig.select(b"EXAMINE", exists=3)
    rig.idle()
    rig.server("* 2 EXPUNGE")
    assert rig.sent() == []


def test_courier_says_nothing_and_the_periodic_status_ends_the_watch():
    rig, session, _, ends = watching("INBOX.Work")
    rig.select(b"EXAMINE", mailbox="INBOX.Work")
    rig.idle()
    rig.clock.advance(30)
    rig.done()
    rig.answer(b"NOOP")
    rig.expect(b"STATUS")
    rig.reply(status="NO", text="Mailbox does not exist.")
    assert ends == ["mailbox INBOX.Work: Mailbox does not exist."]
    assert session.watcher.watched is None


# -- 1. Courier's UIDVALIDITY that changes with the clock --------------------------------------

def test_a_watch_of_an_unsettled_courier_folder_settles_it_and_pushes_new_mail():
    """Every STATUS and EXAMINE of a Courier folder nobody opened read-write gives a new
    UIDVALIDITY: ``watch on INBOX.Work`` never pushed.  One SELECT settles the folder."""
    rig, session, news, _ = watching("INBOX.Work", uidvalidity=796660658)
    with capturedLogs() as events:
        rig.select(b"EXAMINE", mailbox="INBOX.Work", exists=3, uidvalidity=796660659)
        rig.fresh_status_of("INBOX.Work", messages=3, uidnext=4, uidvalidity=796660660)
        rig.select(b"SELECT", mailbox="INBOX.Work", exists=3, uidvalidity=796660661)
        rig.select(b"EXAMINE", mailbox="INBOX.Work", exists=3, uidvalidity=796660661)
        rig.fresh_status_of("INBOX.Work", messages=3, uidnext=4, uidvalidity=796660661)
        rig.idle()
        rig.server("* 4 EXISTS")
        rig.done()
        rig.fresh_status_of("INBOX.Work", messages=4, unseen=2, uidnext=5,
                            uidvalidity=796660661)
    assert news == [("INBOX.Work", MailboxCounts(4, 2, 0, 5, 796660661))]
    assert [e["event"] for e in events if "event" in e] == ["uidvalidity_unsettled"]
    assert session.client.commands_sent["SELECT"] == 1


def test_new_mail_in_a_folder_that_will_not_settle_is_still_pushed():
    rig, _session, news, _ = watching("INBOX.Work", uidvalidity=100)
    rig.select(b"EXAMINE", mailbox="INBOX.Work", exists=3, uidvalidity=100)
    rig.idle()
    rig.clock.advance(30)
    rig.done()
    rig.fresh_status_of("INBOX.Work", messages=3, uidnext=4, uidvalidity=130)
    rig.select(b"SELECT", mailbox="INBOX.Work", exists=3, uidvalidity=131)
    rig.select(b"EXAMINE", mailbox="INBOX.Work", exists=3, uidvalidity=132)
    rig.fresh_status_of("INBOX.Work", messages=3, uidnext=4, uidvalidity=133)
    rig.idle()
    rig.server("* 4 EXISTS")
    rig.done()
    rig.fresh_status_of("INBOX.Work", messages=4, uidnext=5, uidvalidity=140)  # no SELECT
    assert [c.uidnext for _, c in news] == [5]
    rig.clock.advance(IDLE_MIN_SPACING)
    rig.idle()


# -- 1. list, then read a few seconds later, in a Courier folder nobody opened read-write ------

def header_fetch(seq, uid, header, size=64, arrived="07-Dec-2026 16:24:18 +0000"):
    return (f'* {seq} FETCH (UID {uid} FLAGS (\\Recent) RFC822.SIZE {size} INTERNALDATE '
            f'"{arrived}" BODY[HEADER.FIELDS ("DATE" "FROM" "SUBJECT" "CONTENT-TYPE")]<0> '
            f'{{{len(header)}}}\r\n').encode() + header + b")\r\n"


def listed_work(rig, session):
    """``list 5 INBOX.Work``: Courier's EXAMINE, then the FETCH of three messages."""
    d = run(session.list_messages("INBOX.Work", 5))
    rig.select(b"EXAMINE", mailbox="INBOX.Work", exists=3, uidvalidity=796660660)
    rig.expect(b"FETCH")
    rig.client.dataReceived(b"".join(header_fetch(n, n, f"Subject: msg {n}\r\n\r\n".encode())
                                     for n in (1, 2, 3)) + rig.last_tag + b" OK done\r\n")
    return result_of(d)


def test_list_then_read_works_while_courier_changes_the_uidvalidity():
    """``list 5 INBOX.Work`` then ``read 2 INBOX.Work`` two seconds later was refused:
    ``changed on the server (UIDVALIDITY)``.  The messages under the UIDs are the ones listed:
    one UID FETCH of what list showed proves it."""
    rig, session = logged_in(caps=COURIER, inbox=None)
    assert listed_work(rig, session).uidvalidity == 796660660
    rig.clock.advance(2)
    d = run(session.fetch_message("INBOX.Work", 2, 4096))
    rig.select(b"SELECT", mailbox="INBOX.Work", exists=3, uidvalidity=796660662)
    assert rig.expect(b"UID").startswith(b"FETCH 2 (UID FLAGS RFC822.SIZE INTERNALDATE")
    rig.client.dataReceived(header_fetch(2, 2, b"Subject: msg 2\r\n\r\n")
                            + rig.last_tag + b" OK done\r\n")
    assert rig.expect(b"UID") == b"FETCH 2 (UID RFC822.SIZE BODY[]<0.4096>)"
    rig.client.dataReceived(b"* 2 FETCH (UID 2 RFC822.SIZE 5 BODY[]<0> {5}\r\nhello)\r\n"
                            + rig.last_tag + b" OK done\r\n")
    assert result_of(d).data == b"hello"
    d = run(session.delete("INBOX.Work", [3]))  # settled now: no more checking
    rig.answer(b"NOOP")
    assert rig.expect(b"UID") == b"SEARCH UID 3"


def test_other_messages_under_the_listed_uids_are_refused():
    rig, session = logged_in(caps=COURIER, inbox=None)
    listed_work(rig, session)
    d = run(session.delete("INBOX.Work", [2, 3]))
    rig.select(b"SELECT", mailbox="INBOX.Work", exists=3, uidvalidity=796660699)
    assert rig.expect(b"UID").startswith(b"FETCH 2,3 (UID FLAGS")
    rig.client.dataReceived(header_fetch(2, 2, b"Subject: msg 2\r\n\r\n")
                            + header_fetch(3, 3, b"Subject: another\r\n\r\n")
                            + rig.last_tag + b" OK done\r\n")
    error = error_of(d)
    assert isinstance(error, UidValidityChanged)
    assert str(error) == "INBOX.Work changed on the server (UIDVALIDITY); run list again"
    assert rig.sent() == []  # nothing stored, nothing expunged


def test_a_uid_that_list_did_not_show_is_refused_when_the_uidvalidity_changed():
    rig, session = logged_in(caps=COURIER, inbox=None)
    listed_work(rig, session)
    d = run(session.fetch_message("INBOX.Work", 9, 100))
    rig.select(b"SELECT", mailbox="INBOX.Work", exists=3, uidvalidity=796660699)
    assert isinstance(error_of(d), UidValidityChanged) and rig.sent() == []


# -- 4. delete without UIDPLUS finds the Trash -----------------------------------------------

def deleting(caps, mailbox="INBOX", **imap):
    rig, session = logged_in(caps=caps, **imap)
    d = run(session.delete(mailbox, [3]))
    if mailbox == "INBOX":
        rig.select(b"SELECT")
    else:
        rig.select(b"SELECT", mailbox=mailbox)
    rig.expect(b"UID")
    rig.reply("SEARCH 3")
    return rig, session, d


CYRUS_LIST = ('LIST (\\HasChildren) "." INBOX', 'LIST (\\HasNoChildren) "." INBOX.Trash',
              'LIST (\\HasNoChildren) "." INBOX.Work')


def test_cyrus_without_uidplus_moves_to_inbox_trash_found_in_its_namespace():
    rig, _session, d = deleting("IMAP4rev1 NAMESPACE MOVE IDLE")
    rig.answer(b"NAMESPACE", 'NAMESPACE (("INBOX." ".")) NIL (("" "."))')
    assert rig.expect(b"LIST") == b'"" "*"'
    rig.reply(*CYRUS_LIST)
    assert rig.expect(b"UID") == b"MOVE 3 INBOX.Trash"
    rig.reply("1 EXPUNGE")
    assert result_of(d).method == "moved to INBOX.Trash"


def test_courier_without_uidplus_copies_to_inbox_trash_and_marks():
    """Courier has no MOVE and no SPECIAL-USE, and lists INBOX last."""
    rig, session, d = deleting("IMAP4rev1 CHILDREN NAMESPACE IDLE")
    rig.answer(b"NAMESPACE", 'NAMESPACE (("INBOX." ".")) NIL (("#shared." ".")("shared." "."))')
    rig.expect(b"LIST")
    rig.reply('LIST (\\HasNoChildren) "." "INBOX.Work"', 'LIST (\\HasNoChildren) "." '
              '"INBOX.Trash"', 'LIST (\\Unmarked \\HasChildren) "." "INBOX"')
    assert rig.expect(b"UID") == b"COPY 3 INBOX.Trash"
    rig.reply()
    assert rig.expect(b"UID") == b"STORE 3 +FLAGS.SILENT (\\Deleted)"
    rig.reply()
    assert result_of(d).method == "moved to INBOX.Trash"
    d = run(session.delete("INBOX", [3]))  # the namespace is asked once per session
    rig.answer(b"NOOP")
    rig.expect(b"UID")
    rig.reply("SEARCH 3")
    rig.expect(b"LIST")


def test_without_namespace_the_inbox_delimiter_finds_inbox_trash():
    rig, _session, _ = deleting("IMAP4rev1")
    rig.expect(b"LIST")
    rig.reply(*CYRUS_LIST)
    assert rig.expect(b"UID") == b"COPY 3 INBOX.Trash"


def test_the_trash_setting_names_it_and_a_refusal_deletes_nothing():
    rig, _session, d = deleting("IMAP4rev1 NAMESPACE MOVE", trash="Papierkorb")
    assert rig.expect(b"UID") == b"MOVE 3 Papierkorb"  # no NAMESPACE, no LIST
    rig.reply(status="NO", text="[TRYCREATE] Mailbox doesn't exist: Papierkorb")
    error = error_of(d)
    assert type(error) is MailError
    assert str(error) == ("cannot move the messages to the Trash (Papierkorb): [TRYCREATE] "
                          "Mailbox doesn't exist: Papierkorb; nothing deleted")
    assert rig.sent() == []


# -- 6. INBOX first -----------------------------------------------------------------------------

def test_mailboxes_lists_inbox_first_though_courier_sends_it_last():
    rig, session = logged_in(caps=COURIER)
    d = run(session.mailboxes())
    rig.expect(b"LIST")
    rig.reply('LIST (\\HasNoChildren) "." "INBOX.Work"', 'LIST (\\HasNoChildren) "." '
              '"INBOX.Trash"', 'LIST (\\Unmarked \\HasChildren) "." "INBOX"')
    for name in ("INBOX", "INBOX.Work", "INBOX.Trash"):
        rig.status_of(name)
    assert [name for name, _ in result_of(d)] == ["INBOX", "INBOX.Work", "INBOX.Trash"]
