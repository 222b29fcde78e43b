"""A line user's IMAP session against scripted server lines, on a task.Clock.

Login, the commands (check, mailboxes, list, read, delete) as the exact IMAP they send, the
operation queue, watch (IDLE, DONE around commands, re-IDLE, polling, the busy-loop guard),
a connection lost mid-command, logout, and no password in any message.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.logger import capturedLogs
from userrig import (
    CAPS,
    PASSWORD,
    UserRig,
    error_of,
    imap_config,
    logged_in,
    result_of,
    run,
)

from mailsocketd.mail.errors import AuthFailed, MailError
from mailsocketd.mail.imap.client import MailboxCounts
from mailsocketd.mail.imap.commands import HEADER_LIMIT, ListedMessage
from mailsocketd.mail.imap.idle import IDLE_MIN_SPACING
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.users.session import (
    LOST,
    MailboxError,
    NoSuchMessage,
    SessionLost,
    UidValidityChanged,
    open_user_session,
    start_user_session,
)
from mailsocketd.mail.users.watch import POLL_INTERVAL

HEADER_ITEMS = (b"(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT CONTENT-TYPE)]<0."
                + str(HEADER_LIMIT).encode() + b">)")


def fetch_line(seq, uid, header, flags="", size=100):
    return (f"* {seq} FETCH (UID {uid} FLAGS ({flags}) RFC822.SIZE {size} "
            f"BODY[HEADER.FIELDS (DATE FROM SUBJECT CONTENT-TYPE)]<0> {{{len(header)}}}\r\n").encode() \
        + header + b")\r\n"


def body_reply(rig, uid, data, size=None):
    rig.client.dataReceived(
        f"* 1 FETCH (UID {uid} RFC822.SIZE {size or len(data)} BODY[]<0> {{{len(data)}}}\r\n"
        .encode() + data + b" FLAGS (\\Seen))\r\n" + rig.last_tag + b" OK Fetch completed\r\n")


def lost(rig):
    rig.transport.loseConnection()
    rig.clock.advance(0)


# -- login --------------------------------------------------------------------------------------

def test_login_returns_a_session_with_the_capabilities_after_login():
    rig, session = logged_in(caps="IMAP4rev1 IDLE UIDPLUS")
    assert session.alive and session.user == "alice"
    assert session.capabilities == {b"IMAP4rev1", b"IDLE", b"UIDPLUS"}
    assert PASSWORD not in repr(session)
    assert rig.client.deadline is None  # the login deadline does not outlive the login


def test_wrong_password_is_auth_failed_without_the_password():
    rig = UserRig().connect()
    d = ensureDeferred(start_user_session(rig.client, rig.imap, "alice",
                                          Secret(PASSWORD.encode()), clock=rig.clock))
    with capturedLogs() as events:
        rig.greet("IMAP4rev1 AUTH=PLAIN")
        rig.expect(b"AUTHENTICATE")
        rig.server("+ ")
        rig.sent()
        rig.reply(status="NO", text="[AUTHENTICATIONFAILED] Authentication failed.")
        rig.clock.advance(0)
    error = error_of(d)
    assert not [e for e in events if PASSWORD in repr(e)]
    assert isinstance(error, AuthFailed)
    assert str(error) == ("login refused for user alice: NO [AUTHENTICATIONFAILED] "
                          "Authentication failed.")
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)
    assert rig.transport.closed


def test_a_login_that_takes_too_long_times_out():
    rig = UserRig(imap_config(timeout=5)).connect()
    d = ensureDeferred(start_user_session(rig.client, rig.imap, "alice", Secret(b"pw"),
                                          clock=rig.clock))
    rig.clock.advance(5)
    rig.clock.advance(0)
    assert str(error_of(d)) == "timed out after 5 s waiting for the server greeting"


@pytest.mark.parametrize(("user", "password", "message"), [
    ("al ice", "pw", "bad user name"),
    ("", "pw", "bad user name"),
    ("alice\x1b", "pw", "bad user name"),
    ("alice", "pw\r\nA1 LOGOUT", "the password contains control characters"),
])
def test_bad_credentials_are_refused_before_connecting(user, password, message):
    class NoReactor:
        def __getattr__(self, name):
            raise AssertionError("no connection may be attempted")

    d = ensureDeferred(open_user_session(NoReactor(), imap_config(), user,
                                         Secret(password.encode())))
    error = error_of(d)
    assert isinstance(error, AuthFailed) and str(error) == message
    assert "A1 LOGOUT" not in str(error)


def test_limits_are_sized_by_the_configuration_and_still_bounded():
    rig = UserRig(imap_config(read_limit=8 << 20, list_max=3000)).connect()
    client = rig.client
    assert client.MAX_LITERAL == 8 << 20
    assert client.MAX_RESPONSE >= 8 << 20 and client.MAX_RESPONSE >= 3000 * HEADER_LIMIT
    assert client.MAX_RESPONSE < 64 << 20 and client.MAX_UNTAGGED >= 6000
    rig.greet()
    d = client.noop_check()
    rig.expect(b"NOOP")
    rig.server(f"* 1 FETCH (BODY[] {{{(8 << 20) + 1}}}")
    rig.clock.advance(0)
    assert "literal" in str(error_of(d)) and rig.transport.closed


# -- check, mailboxes ----------------------------------------------------------------------------

def test_check_is_one_status():
    rig, session = logged_in()
    d = run(session.check("Work"))
    rig.status_of("Work", messages=10000, unseen=7, uidnext=10001, uidvalidity=99)
    assert result_of(d) == MailboxCounts(10000, 7, 0, 10001, 99)
    assert rig.client.commands_sent["STATUS"] == 1


def test_a_refused_mailbox_is_a_clean_mailbox_error_and_the_session_goes_on():
    rig, session = logged_in(inbox=None)
    d = run(session.check("Nope"))
    rig.expect(b"STATUS")
    rig.reply(status="NO", text="[NONEXISTENT] Mailbox doesn't exist: Nope")
    error = error_of(d)
    assert isinstance(error, MailboxError)
    assert str(error) == "mailbox Nope: Mailbox doesn't exist: Nope"
    d = run(session.check())
    rig.status_of()
    assert result_of(d).messages == 3 and session.alive


@pytest.mark.parametrize("name", ["", "a\r\nA1 DELETE INBOX", "tab\there", "x" * 1001])
def test_bad_mailbox_names_are_refused_without_a_command(name):
    rig, session = logged_in()
    for call in (session.check(name), session.list_messages(name, 5),
                 session.fetch_message(name, 1, 100), session.delete(name, [1]),
                 session.watch(name, lambda *a: None)):
        assert isinstance(error_of(run(call)), MailboxError)
    assert rig.sent() == []


def test_non_ascii_names_go_out_as_modified_utf7():
    rig, session = logged_in()
    d = run(session.check("Entwürfe"))
    assert rig.expect(b"STATUS") == b"Entw&APw-rfe (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY)"
    rig.reply("STATUS Entw&APw-rfe (MESSAGES 1 UNSEEN 0 RECENT 0 UIDNEXT 2 UIDVALIDITY 3)")
    assert result_of(d).messages == 1


def test_mailboxes_lists_decodes_and_statuses_each_selectable_one():
    rig, session = logged_in()
    d = run(session.mailboxes())
    assert rig.expect(b"LIST") == b'"" "*"'
    rig.reply('LIST (\\HasNoChildren) "." INBOX', 'LIST (\\Noselect \\HasChildren) "." Archive',
              'LIST (\\HasNoChildren) "." "Archive.Entw&APw-rfe"',
              'LIST (\\HasNoChildren) "." Gone')
    rig.status_of("INBOX", messages=5)
    rig.expect(b"STATUS")
    rig.reply('STATUS "Archive.Entw&APw-rfe" (MESSAGES 2 UNSEEN 1 RECENT 0 UIDNEXT 3 '
              'UIDVALIDITY 9)')
    rig.expect(b"STATUS")
    rig.reply(status="NO", text="[NONEXISTENT] gone meanwhile")
    found = result_of(d)
    assert [name for name, _ in found] == ["INBOX", "Archive", "Archive.Entwürfe", "Gone"]
    assert [c.messages if c else None for _, c in found] == [5, None, 2, None]


def test_mailboxes_statuses_at_most_200():
    rig, session = logged_in()
    d = run(session.mailboxes())
    rig.expect(b"LIST")
    rig.reply(*[f'LIST () "." Box{i}' for i in range(250)])
    for i in range(200):
        rig.status_of(f"Box{i}")
    assert len(result_of(d)) == 200 and rig.sent() == []


# -- list ----------------------------------------------------------------------------------------

def test_list_is_examine_and_one_fetch_of_the_last_count_newest_first():
    rig, session = logged_in(inbox=None)
    d = run(session.list_messages("INBOX", 2))
    rig.select(b"EXAMINE", exists=5000, uidvalidity=42, uidnext=6001)
    assert rig.expect(b"FETCH") == b"4999:5000 " + HEADER_ITEMS
    rig.client.dataReceived(fetch_line(4999, 5999, b"Subject: older\r\n\r\n", "\\Seen")
                            + fetch_line(5000, 6000, b"Subject: newest\r\n\r\n", size=321)
                            + rig.last_tag + b" OK Fetch completed\r\n")
    listing = result_of(d)
    assert (listing.mailbox, listing.uidvalidity, listing.exists) == ("INBOX", 42, 5000)
    assert listing.messages == (
        ListedMessage(6000, frozenset(), 321, b"Subject: newest\r\n\r\n"),
        ListedMessage(5999, frozenset({"\\Seen"}), 100, b"Subject: older\r\n\r\n"))
    assert dict(rig.client.commands_sent) == {"AUTHENTICATE": 1, "CAPABILITY": 1,
                                              "EXAMINE": 2, "FETCH": 1}  # 1: login's, refused


def test_login_opens_inbox_so_check_and_list_of_it_need_no_select():
    rig, session = logged_in(inbox=5000)
    assert session.selected == "INBOX"
    d = run(session.check("INBOX"))
    rig.answer(b"NOOP", "5001 EXISTS")  # the session's view, brought up to date
    rig.status_of(messages=5001, unseen=2)
    counts = result_of(d)
    assert (counts.messages, counts.unseen) == (5001, 2)
    d = run(session.list_messages("INBOX", 2))
    rig.answer(b"NOOP")
    assert rig.expect(b"FETCH") == b"5000:5001 " + HEADER_ITEMS
    rig.reply()
    assert result_of(d).exists == 5001
    assert dict(rig.client.commands_sent) == {"AUTHENTICATE": 1, "CAPABILITY": 1,
                                              "EXAMINE": 1, "NOOP": 2, "STATUS": 1, "FETCH": 1}


def test_an_inbox_that_cannot_be_opened_leaves_nothing_selected_and_check_is_one_status():
    rig, session = logged_in(inbox=None)
    assert session.selected is None and session.alive
    d = run(session.check("INBOX"))
    rig.status_of()
    assert result_of(d).messages == 3 and rig.sent() == []


def test_a_command_sent_before_inbox_is_open_waits_for_it():
    rig = UserRig(imap_config(), timeout=30.0).connect()
    d = ensureDeferred(start_user_session(rig.client, rig.imap, "alice",
                                          Secret(PASSWORD.encode()), clock=rig.clock))
    rig.greet("IMAP4rev1 AUTH=PLAIN")
    rig.plain_login(password=PASSWORD.encode(), caps_after=CAPS)
    session = result_of(d)
    check = run(session.check("INBOX"))
    assert rig.expect(b"EXAMINE") == b"INBOX"  # only the EXAMINE is out; check waits
    rig.reply("7 EXISTS", "OK [UIDVALIDITY 7] ok", "OK [UIDNEXT 8] ok", text="[READ-ONLY] ok")
    rig.answer(b"NOOP")
    rig.status_of(messages=7)
    assert result_of(check).messages == 7


def test_list_of_more_than_there_are_starts_at_one_and_an_empty_mailbox_fetches_nothing():
    rig, session = logged_in(inbox=None)
    d = run(session.list_messages("INBOX", 50))
    rig.select(exists=3)
    assert rig.expect(b"FETCH").startswith(b"1:3 ")
    rig.reply()
    assert result_of(d).messages == ()
    d = run(session.list_messages("Empty", 50))
    rig.select(mailbox="Empty", exists=0)
    assert result_of(d).exists == 0 and rig.sent() == []


def test_list_count_is_bounded_by_list_max():
    rig, session = logged_in(list_max=20)
    assert str(error_of(run(session.list_messages("INBOX", 21)))) == "count must be 1 to 20"
    assert isinstance(error_of(run(session.list_messages("INBOX", 0))), MailError)
    assert rig.sent() == []


def test_a_malformed_fetch_reply_drops_the_connection():
    rig, session = logged_in(inbox=None)
    lost_reasons: list[str] = []
    session.on_lost = lost_reasons.append
    d = run(session.list_messages("INBOX", 1))
    rig.select()
    rig.expect(b"FETCH")
    rig.reply("3 FETCH (UID)")
    rig.clock.advance(0)
    error = error_of(d)
    assert isinstance(error, SessionLost) and "FETCH item UID without a value" in str(error)
    assert rig.transport.closed and len(lost_reasons) == 1


# -- read ----------------------------------------------------------------------------------------

def test_read_selects_read_write_and_fetches_without_peek():
    rig, session = logged_in(read_limit=4096)
    d = run(session.fetch_message("INBOX", 9, 10**9))
    rig.select(b"SELECT")
    assert rig.expect(b"UID") == b"FETCH 9 (UID RFC822.SIZE BODY[]<0.4096>)"
    body_reply(rig, 9, b"Subject: hi\r\n\r\nhello", size=99999)
    message = result_of(d)
    assert (message.uid, message.size, message.data) == (9, 99999, b"Subject: hi\r\n\r\nhello")


def test_read_of_an_unknown_uid_is_no_such_message():
    rig, session = logged_in()
    d = run(session.fetch_message("INBOX", 42, 100))
    rig.select(b"SELECT")
    rig.expect(b"UID")
    rig.reply("1 FETCH (FLAGS (\\Seen))")  # another message's news, no UID 42
    error = error_of(d)
    assert isinstance(error, NoSuchMessage) and str(error) == "no message with UID 42 in INBOX"
    assert session.alive


def test_a_changed_uidvalidity_refuses_read_and_delete_until_list_again():
    rig, session = logged_in(inbox=None)
    d = run(session.list_messages("INBOX", 1))
    rig.select(exists=0, uidvalidity=7)
    result_of(d)
    d = run(session.fetch_message("inbox", 1, 100))
    rig.select(b"SELECT", mailbox="inbox", uidvalidity=8)
    error = error_of(d)
    assert isinstance(error, UidValidityChanged)
    assert str(error) == "inbox changed on the server (UIDVALIDITY); run list again"
    d = run(session.delete("INBOX", [1]))
    rig.answer(b"NOOP")  # INBOX is selected already: a NOOP for news instead of a SELECT
    assert isinstance(error_of(d), UidValidityChanged) and rig.sent() == []
    d = run(session.list_messages("INBOX", 1))
    rig.answer(b"NOOP", "3 EXPUNGE", "2 EXPUNGE", "1 EXPUNGE")  # all 3 gone meanwhile
    assert result_of(d).exists == 0
    d = run(session.fetch_message("INBOX", 1, 100))
    rig.answer(b"NOOP")
    rig.expect(b"UID")
    body_reply(rig, 1, b"x")
    assert result_of(d).data == b"x"


def test_a_selected_mailbox_is_not_selected_again_and_its_size_is_tracked():
    rig, session = logged_in(inbox=None)
    d = run(session.list_messages("INBOX", 2))
    rig.select(exists=3)
    assert rig.expect(b"FETCH").startswith(b"2:3 ")
    rig.reply()
    result_of(d)
    d = run(session.list_messages("INBOX", 2))
    rig.answer(b"NOOP", "5 EXISTS")  # two arrived
    assert rig.expect(b"FETCH").startswith(b"4:5 ")
    rig.reply()
    assert result_of(d).exists == 5
    d = run(session.fetch_message("INBOX", 5, 100))  # needs read-write: SELECT once
    rig.select(b"SELECT", exists=5)
    rig.expect(b"UID")
    body_reply(rig, 5, b"x")
    result_of(d)
    d = run(session.list_messages("INBOX", 2))  # read-write serves a list too
    rig.answer(b"NOOP", "1 EXPUNGE")
    assert rig.expect(b"FETCH").startswith(b"3:4 ")
    rig.reply()
    assert result_of(d).exists == 4
    d = run(session.list_messages("Other", 2))  # another mailbox: selected afresh
    rig.select(mailbox="Other", exists=0)
    assert result_of(d).exists == 0


# -- delete --------------------------------------------------------------------------------------

def test_delete_with_uidplus_expunges_exactly_the_existing_uids():
    rig, session = logged_in(caps="IMAP4rev1 UIDPLUS")
    d = run(session.delete("INBOX", [7, 3, 99, 3]))
    rig.select(b"SELECT")
    assert rig.expect(b"UID") == b"SEARCH UID 3,7,99"
    rig.reply("SEARCH 3 7")
    assert rig.expect(b"UID") == b"STORE 3,7 +FLAGS.SILENT (\\Deleted)"
    rig.reply()
    assert rig.expect(b"UID") == b"EXPUNGE 3,7"
    rig.reply("2 EXPUNGE", "1 EXPUNGE")
    deletion = result_of(d)
    assert (deletion.deleted, deletion.missing, deletion.method) == ((3, 7), (99,), "expunged")
    assert "EXPUNGE" not in rig.client.commands_sent  # never a bare EXPUNGE


def test_delete_of_only_unknown_uids_is_no_such_message():
    rig, session = logged_in()
    d = run(session.delete("INBOX", [5, 6]))
    rig.select(b"SELECT")
    rig.expect(b"UID")
    rig.reply("SEARCH")
    error = error_of(d)
    assert isinstance(error, NoSuchMessage) and str(error) == "no message with UIDs 5, 6 in INBOX"
    assert rig.sent() == []


def trash_list(rig, *lines):
    assert rig.expect(b"LIST") == b'"" "*"'
    rig.reply('LIST () "." INBOX', *lines)


def test_delete_without_uidplus_moves_to_the_special_use_trash():
    rig, session = logged_in(caps="IMAP4rev1 MOVE")
    d = run(session.delete("INBOX", [3]))
    rig.select(b"SELECT")
    rig.expect(b"UID")
    rig.reply("SEARCH 3")
    trash_list(rig, 'LIST () "." Trash', 'LIST (\\Trash) "." "Deleted Items"')
    assert rig.expect(b"UID") == b'MOVE 3 "Deleted Items"'
    rig.reply("1 EXPUNGE")
    assert result_of(d).method == "moved to Deleted Items"
    assert not {"EXPUNGE", "UID EXPUNGE", "UID STORE"} & set(rig.client.commands_sent)


def test_delete_without_uidplus_or_move_copies_and_marks():
    rig, session = logged_in(caps="IMAP4rev1")
    d = run(session.delete("INBOX", [3]))
    rig.select(b"SELECT")
    rig.expect(b"UID")
    rig.reply("SEARCH 3")
    trash_list(rig, 'LIST () "." Trash')
    assert rig.expect(b"UID") == b"COPY 3 Trash"
    rig.reply()
    assert rig.expect(b"UID") == b"STORE 3 +FLAGS.SILENT (\\Deleted)"
    rig.reply()
    assert result_of(d).method == "moved to Trash"
    assert "EXPUNGE" not in rig.client.commands_sent


@pytest.mark.parametrize("mailbox", ["INBOX", "Trash"])
def test_delete_without_uidplus_and_no_other_trash_only_marks(mailbox):
    rig, session = logged_in(caps="IMAP4rev1 MOVE")
    d = run(session.delete(mailbox, [3]))
    rig.select(b"SELECT", mailbox=mailbox)
    rig.expect(b"UID")
    rig.reply("SEARCH 3")
    trash_list(rig, *(['LIST () "." Trash'] if mailbox == "Trash" else []))
    assert rig.expect(b"UID") == b"STORE 3 +FLAGS.SILENT (\\Deleted)"
    rig.reply()
    assert result_of(d).method == "marked deleted"


# -- the queue -----------------------------------------------------------------------------------

def test_operations_run_one_after_another_and_a_failure_does_not_block_the_next():
    rig, session = logged_in(inbox=None)
    first = run(session.check("Nope"))
    second = run(session.check("INBOX"))
    rig.expect(b"STATUS")  # only the first is on the wire
    rig.reply(status="NO", text="no such mailbox")
    assert isinstance(error_of(first), MailboxError)
    rig.status_of("INBOX")
    assert result_of(second).messages == 3


# -- watch ---------------------------------------------------------------------------------------

def watching(caps="IMAP4rev1 IDLE UIDPLUS", **imap):
    rig, session = logged_in(caps=caps, inbox=None, **imap)
    news = []
    d = run(session.watch("INBOX", lambda box, counts: news.append((box, counts))))
    rig.status_of(uidnext=4)
    assert result_of(d).uidnext == 4
    return rig, session, news


def test_watch_examines_and_idles_and_new_mail_is_pushed_at_once():
    rig, session, news = watching()
    rig.select(b"EXAMINE", uidnext=4)
    rig.idle()
    assert session.watcher.idling and news == []
    rig.server("* 4 EXISTS", "* 1 RECENT")
    rig.done()
    rig.fresh_status_of(messages=4, unseen=2, uidnext=5)
    assert news == [("INBOX", MailboxCounts(4, 2, 0, 5, 7))]
    assert rig.clock.seconds() == 0  # pushed without waiting for any timer
    rig.clock.advance(IDLE_MIN_SPACING)
    rig.idle()
    rig.server("* 2 FETCH (FLAGS (\\Seen))", "* 3 EXPUNGE")  # not new mail
    assert rig.sent() == [] and len(news) == 1


def test_mail_arriving_between_watch_and_idle_is_not_missed():
    rig, _session, news = watching()
    rig.select(b"EXAMINE", uidnext=5)  # grew since watch()'s STATUS
    rig.fresh_status_of(messages=4, uidnext=5)
    assert [c.uidnext for _, c in news] == [5]
    rig.idle()


def test_a_command_during_watch_ends_idle_first_and_idle_resumes_after():
    rig, session, news = watching()
    rig.select(b"EXAMINE")
    rig.idle()
    d = run(session.list_messages("Other", 5))
    rig.done()
    rig.select(b"EXAMINE", mailbox="Other", exists=0)
    assert result_of(d).exists == 0
    rig.select(b"EXAMINE", mailbox="INBOX", uidnext=4)  # the watched mailbox again
    rig.clock.advance(IDLE_MIN_SPACING)
    rig.idle()
    rig.server("* 4 EXISTS")
    rig.done()
    rig.fresh_status_of(uidnext=5)
    assert len(news) == 1


def test_idle_is_renewed_every_keepalive_seconds():
    rig, session, _ = watching(keepalive=600, watch_interval=3600)
    rig.select(b"EXAMINE")
    rig.idle()
    rig.clock.advance(599)
    assert rig.sent() == []
    rig.clock.advance(1)
    rig.done()
    rig.idle()
    assert session.watcher.idling


def test_no_reply_to_done_loses_the_session():
    rig, session, _ = watching(timeout=10)
    reasons: list[str] = []
    session.on_lost = reasons.append
    rig.select(b"EXAMINE")
    rig.idle()
    d = run(session.check())
    assert rig.sent() == [b"DONE"]
    rig.clock.advance(10)
    rig.clock.advance(0)
    assert reasons == ["lost the connection to the mail server "
                       "(timed out after 10 s waiting for the reply to DONE)"]
    assert isinstance(error_of(d), SessionLost)


def test_a_heartbeat_done_without_reply_loses_the_session():
    rig, session, _ = watching(keepalive=600, timeout=10, watch_interval=3600)
    reasons: list[str] = []
    session.on_lost = reasons.append
    rig.select(b"EXAMINE")
    rig.idle()
    rig.clock.advance(600)
    assert rig.sent() == [b"DONE"]
    rig.clock.advance(10)
    rig.clock.advance(0)
    assert reasons == ["lost the connection to the mail server "
                       "(timed out after 10 s waiting for the reply to DONE (heartbeat))"]
    assert rig.clock.getDelayedCalls() == []


def test_a_command_while_the_next_idle_waits_for_its_turn_goes_first_and_sends_no_idle():
    rig, session, _ = watching()
    rig.select(b"EXAMINE")
    rig.idle()
    rig.reply(text="IDLE ended")  # the server ends IDLE: the next waits for its turn
    rig.clock.advance(IDLE_MIN_SPACING / 2)
    d = run(session.check())
    rig.fresh_status_of(messages=3)  # at once: no IDLE (and no DONE) first
    assert result_of(d).messages == 3
    assert rig.sent() == []  # the next IDLE still keeps the spacing from the last start
    rig.clock.advance(IDLE_MIN_SPACING / 2)
    rig.idle()
    assert session.watcher.idling


def test_a_server_that_ends_idle_at_once_is_polled_instead():
    rig, session, news = watching()
    rig.select(b"EXAMINE")
    starts = []
    with capturedLogs() as events:
        for _ in range(3):
            rig.expect(b"IDLE")
            starts.append(rig.clock.seconds())
            rig.server("+ idling")
            rig.reply(text="IDLE ended")  # without DONE
            assert rig.sent() == []  # no IDLE again at once
            rig.clock.advance(IDLE_MIN_SPACING)
    assert starts == [0, IDLE_MIN_SPACING, 2 * IDLE_MIN_SPACING]
    assert [e["event"] for e in events if "event" in e] == ["idle_fallback"]
    assert session.watcher.use_idle is False and rig.sent() == []
    rig.clock.advance(POLL_INTERVAL)
    rig.fresh_status_of(uidnext=6)
    assert [c.uidnext for _, c in news] == [6]
    rig.clock.advance(POLL_INTERVAL)
    rig.fresh_status_of(uidnext=6)
    assert len(news) == 1


def test_quick_ends_count_only_in_a_row():
    rig, session, _ = watching(keepalive=600, watch_interval=3600)
    rig.select(b"EXAMINE")
    for _ in range(2):  # two quick ends by the server ...
        rig.idle()
        rig.reply(text="IDLE ended")
        rig.clock.advance(IDLE_MIN_SPACING)
    rig.idle()
    rig.clock.advance(600)  # ... then an IDLE that lasts until we renew it
    rig.done()
    rig.idle()
    rig.reply(text="IDLE ended")  # a third quick end, but not in a row
    rig.clock.advance(IDLE_MIN_SPACING)
    rig.idle()
    assert session.watcher.use_idle is True


def test_idle_refused_falls_back_to_polling():
    rig, session, _ = watching()
    rig.select(b"EXAMINE")
    rig.expect(b"IDLE")
    rig.reply(status="BAD", text="Unknown command")
    assert not session.watcher.use_idle
    rig.clock.advance(POLL_INTERVAL)
    rig.fresh_status_of()


def test_without_idle_watch_polls_with_status():
    rig, _session, news = watching(caps="IMAP4rev1 UIDPLUS")
    assert rig.sent() == []  # no EXAMINE, no IDLE
    rig.clock.advance(POLL_INTERVAL - 1)
    assert rig.sent() == []
    rig.clock.advance(1)
    rig.status_of(messages=5, uidnext=6)
    assert [c.messages for _, c in news] == [5]
    rig.clock.advance(POLL_INTERVAL)
    rig.status_of(messages=5, uidnext=6)
    assert len(news) == 1


def test_unwatch_ends_idle_and_nothing_resumes():
    rig, session, _ = watching()
    rig.select(b"EXAMINE")
    rig.idle()
    d = run(session.unwatch())
    rig.done()
    result_of(d)
    rig.clock.advance(3600)
    assert rig.sent() == [] and rig.clock.getDelayedCalls() == []


def test_watch_again_switches_mailbox():
    rig, session, news = watching()
    rig.select(b"EXAMINE")
    rig.idle()
    d = run(session.watch("Work", lambda box, counts: news.append((box, counts))))
    rig.done()
    rig.status_of("Work", uidnext=10)
    result_of(d)
    rig.select(b"EXAMINE", mailbox="Work", uidnext=10)
    rig.clock.advance(IDLE_MIN_SPACING)
    rig.idle()
    rig.server("* 10 EXISTS")
    rig.done()
    rig.fresh_status_of("Work", uidnext=11)
    assert [box for box, _ in news] == ["Work"]



def test_a_watch_that_ends_by_itself_says_why_and_watches_nothing():
    rig, session = logged_in(caps="IMAP4rev1 IDLE UIDPLUS", inbox=None)
    news: list[str] = []
    ends: list[str] = []
    d = run(session.watch("Work", lambda box, counts: news.append(box), ends.append))
    rig.status_of("Work", uidnext=4)
    assert result_of(d).uidnext == 4
    assert rig.expect(b"EXAMINE") == b"Work"  # resuming the watch: the mailbox is gone
    rig.reply(status="NO", text="[NONEXISTENT] Mailbox doesn't exist: Work")
    assert ends == ["mailbox Work: Mailbox doesn't exist: Work"] and news == []
    assert session.watcher.watched is None and session.alive
    rig.clock.advance(3600)
    assert rig.sent() == []


# -- losing the connection, logout ---------------------------------------------------------------

def test_connection_lost_mid_command_fails_it_once_and_later_calls_fail_fast():
    rig, session = logged_in(inbox=None)
    reasons: list[str] = []
    session.on_lost = reasons.append
    d = run(session.check())
    rig.expect(b"STATUS")
    lost(rig)
    error = error_of(d)
    assert isinstance(error, SessionLost)
    assert str(error) == "the mail server closed the connection; login again"
    assert reasons == ["the mail server closed the connection"]
    assert not session.alive
    later = error_of(run(session.check()))
    assert isinstance(later, SessionLost) and str(later) == LOST
    assert rig.sent() == [] and len(reasons) == 1


def test_connection_lost_while_idling_is_reported_once_with_the_bye_text():
    rig, session, _ = watching()
    reasons: list[str] = []
    session.on_lost = reasons.append
    rig.select(b"EXAMINE")
    rig.idle()
    rig.server("* BYE Server shutting down.")
    lost(rig)
    assert reasons == ["the mail server closed the connection (Server shutting down.)"]
    assert rig.clock.getDelayedCalls() == []


def test_logout_is_polite_idempotent_and_not_a_loss():
    rig, session, _ = watching()
    reasons: list[str] = []
    session.on_lost = reasons.append
    rig.select(b"EXAMINE")
    rig.idle()
    first, second = run(session.logout()), run(session.logout())
    rig.done()
    rig.expect(b"LOGOUT")
    rig.reply("BYE Logging out")
    rig.clock.advance(0)
    result_of(first), result_of(second)
    assert reasons == [] and not session.alive and rig.transport.closed
    assert "logged out" in str(error_of(run(session.check())))
    assert rig.clock.getDelayedCalls() == []


def test_logout_without_a_reply_closes_within_the_logout_timeout():
    rig, session = logged_in()
    d = run(session.logout())
    rig.expect(b"LOGOUT")
    rig.clock.advance(2)
    rig.clock.advance(0)
    result_of(d)
    assert rig.transport.closed and rig.clock.getDelayedCalls() == []
