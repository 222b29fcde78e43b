"""``send`` without sockets: what a refused send does with the message that follows it (issue 11
item 4), how recipients are separated (item 5), and how a message being typed is held: one
buffer, its wire size counted while it is typed, caps per user and in all, composed away from
the reactor's thread (item 9)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from linerig import Rig, lose, take
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from mailsocketd.line.config import LineConfig
from mailsocketd.line.mail.commands import MailBridge
from mailsocketd.line.mail.sendinput import SendInput, UnsentMail, compose, encoded_size
from mailsocketd.line.mail.state import BridgeReactor, MailUser
from mailsocketd.mail.secrets import Secret
from mailsocketd.mail.smtp.config import SmtpConfig
from mailsocketd.mail.text.compose import DraftError, build_message, parse_typed, parse_typed_text
from mailsocketd.mail.users.session import UserSession

SMTP = SmtpConfig(server="tcp:127.0.0.1:1", from_domain="example.test")
DISCARDED = "; the message up to the lone '.' is discarded"


class FakeImap:
    """A user's IMAP session that must never be used: a command that runs fails loudly."""

    alive = True
    on_lost = None
    lost_reason = "connection lost"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the IMAP session was used: {name}")


class Offloads:
    """An Offload that keeps the work instead of running it (the reactor's thread does none of
    it), and runs it when told."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, work: Any, *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.pending.append((work, args, done))
        return done

    def run(self) -> None:
        for work, args, done in self.pending:
            maybeDeferred(work, *args).chainDeferred(done)
        self.pending.clear()


def bridge_rig(smtp: SmtpConfig | None = SMTP) -> tuple[Rig, MailBridge]:
    clock = Clock()
    bridge = MailBridge(cast(BridgeReactor, None), LineConfig(), None, smtp, clock=clock)
    rig = Rig(bridge.commands(), clock=clock)
    bridge.sessions = rig.server.sessions
    return rig, bridge


def connect(rig: Rig, logged_in: bool = True) -> tuple[Any, Any]:
    proto, tr = rig.connect()
    if logged_in:
        proto.session.user = MailUser("alice", Secret(b"pw"), cast(UserSession, FakeImap()))
    return proto, tr


def replies(tr: Any) -> list[str]:
    return take(tr).decode().splitlines()


# -- item 4: a refused send still takes its message, and drops it -------------------------------

BODY = b"Subject: todo\n\ndelete 61\nlogout\nquit\nsend carol@example.test\n..stuffed\n.\n"


@pytest.mark.parametrize(("smtp", "logged_in", "send", "reason"), [
    (SMTP, True, b"send bob@example..test", "bad recipient 'bob@example..test': not a plain "
     "local@domain address"),
    (SMTP, True, b"send bob@example.test, ,carol@example.test",
     "empty address in the recipient list 'bob@example.test, ,carol@example.test'"),
    (None, True, b"send bob@example.test",
     "sending is not configured on this server (no [smtp])"),
    (SMTP, False, b"send bob@example.test", "login first"),
])
def test_a_refused_send_reads_its_message_and_drops_it(smtp, logged_in, send, reason):
    rig, _ = bridge_rig(smtp)
    proto, tr = connect(rig, logged_in)
    proto.dataReceived(send + b"\n" + BODY + b"time\n")  # all in one write, as a script does
    assert replies(tr) == [f"error: {reason}{DISCARDED}", f"error: not sent: {reason}",
                           rig.server.time_text()]
    assert not proto.closing  # the 'quit' in the message was text


def test_a_refused_send_split_across_packets_still_reads_to_the_dot():
    rig, _ = bridge_rig(None)
    proto, tr = connect(rig)
    proto.dataReceived(b"send bob@example.test\n")
    assert replies(tr)[0].endswith(DISCARDED)
    for line in BODY.splitlines()[:-1]:
        proto.dataReceived(line + b"\n")
        assert replies(tr) == []  # nothing typed runs
    proto.dataReceived(b".\ntime\n")
    assert replies(tr)[1] == rig.server.time_text()


def test_a_lost_mail_session_refuses_send_and_drops_the_message():
    rig, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.session.user.imap.alive = False
    proto.dataReceived(b"send bob@example.test\n" + BODY)
    reason = "the mail session was lost (connection lost); login again"
    assert replies(tr) == [f"error: {reason}{DISCARDED}", f"error: not sent: {reason}"]


def test_eof_in_a_refused_message_says_nothing_was_sent():
    rig, _ = bridge_rig(None)
    proto, tr = connect(rig)
    proto.dataReceived(b"send bob@example.test\nlogout\n")
    proto.readConnectionLost()
    assert replies(tr)[-1] == ("error: input ended before the line holding only '.'; "
                               "nothing was sent")


# -- item 5: recipients are separated by commas, spaces and tabs ---------------------------------

@pytest.mark.parametrize(("words", "recipients"), [
    (b"a@x.example b@y.example", ("a@x.example", "b@y.example")),
    (b"a@x.example,b@y.example", ("a@x.example", "b@y.example")),
    (b"a@x.example ,\tb@y.example , c@z.example", ("a@x.example", "b@y.example", "c@z.example")),
])
def test_recipients_are_separated_by_commas_and_spaces(words, recipients):
    rig, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"send " + words + b"\n")
    assert replies(tr)[0].startswith("ok ready")
    assert proto._reader.to == recipients


def test_a_space_inside_an_address_does_not_join_its_halves():
    rig, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"send bob @example.test\n.\n")
    assert replies(tr)[0] == f"error: bad recipient 'bob': missing @domain{DISCARDED}"


def test_send_alone_takes_its_recipients_from_the_typed_lines():
    rig, _ = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"send\n")
    assert replies(tr)[0].startswith("ok ready")
    offloads = Offloads()
    reader = typing_reader(offloads=offloads)
    reader.to = ()
    for line in (b"To: bob@example.test", b"Bcc: carol@example.test", b"", b"hi"):
        reader.line(line)
    reader.finish()
    [(work, args, _)] = offloads.pending
    recipients, _, message = work(*args)
    assert recipients == ("bob@example.test", "carol@example.test")
    assert b"carol" not in message


# -- item 9: one buffer, counted as it will be sent, bounded, composed off the reactor ----------

def typing_reader(smtp: SmtpConfig = SMTP, unsent: UnsentMail | None = None,
                  offloads: Offloads | None = None, user: str = "alice") -> SendInput:
    return SendInput(cast(Any, None), Clock(), smtp, user=user, password=Secret(b"pw"),
                     to=("bob@example.test",), peer="test",
                     unsent=unsent or UnsentMail(1 << 30, 1 << 30),
                     offload=offloads if offloads is not None else Offloads())


def test_typed_lines_go_into_one_buffer():
    reader = typing_reader()
    for line in (b"Subject: x", b"", b"ab", b".", b""):
        reader.line(line)
    assert isinstance(reader.buffer, bytearray)
    assert bytes(reader.buffer) == b"Subject: x\r\n\r\nab\r\n.\r\n\r\n"  # as it is sent
    assert not hasattr(reader, "lines") or not isinstance(reader.lines, list)


def test_the_reactor_thread_only_hands_the_message_over():
    offloads = Offloads()
    reader = typing_reader(offloads=offloads)
    reader.line(b"hello")
    reader.finish()
    [(work, args, _)] = offloads.pending
    assert work is compose and isinstance(args[0], bytearray)  # decoding, parsing, composing
    assert reader.held == 7  # held until sent or refused


def test_the_wire_size_counts_against_the_limit_while_typing():
    """1024 bytes of 'é' are 2048 typed bytes and about 2.7 KB as base64: refused at the
    limit as it is reached, not only when the raw text passes it, and nothing is kept."""
    smtp = SmtpConfig(server="tcp:127.0.0.1:1", from_domain="example.test",
                      max_message_size=2500)
    unsent = UnsentMail(1 << 20, 1 << 20)
    reader = typing_reader(smtp, unsent)
    for _ in range(16):
        reader.line("é".encode() * 64)  # 128 bytes a line, 2048 in all: under 2500 raw
    assert reader.refused is not None and reader.refused.startswith("message larger than")
    assert len(reader.buffer) == 0 and unsent.held == 0
    with pytest.raises(Exception, match="message larger than 2.4 KB"):
        reader.finish()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab .=é\t\x01From"), max_size=120),
                max_size=40))
def test_the_counted_size_is_never_more_than_the_real_one(lines):
    """What is counted while typing is a lower bound of the composed body's size (so no
    message that fits is refused), and close to it."""
    data = [line.encode() for line in lines]
    raw = sum(map(len, data))
    escaped = sum(1 for line in data for b in line if b >= 0x80 or (b < 0x20 and b != 9))
    seven_bit = all(not any(b >= 0x80 or (b < 0x20 and b != 9) for b in line)
                    and len(line) <= 78 and not line.startswith(b"From ") for line in data)
    counted = encoded_size(raw, len(data), escaped, seven_bit)
    draft = parse_typed(("bob@example.test",), ["", *lines])  # all body
    _, message = build_message(draft, sender="a@example.test", now=0.0, domain="example.test")
    body = message.split(b"\r\n\r\n", 1)[1]
    assert counted <= len(body) + 2  # (a message of no line at all still gets one line end)
    assert len(body) <= counted * 1.1 + 80


def test_unsent_bytes_are_capped_per_user_and_in_all():
    unsent = UnsentMail(per_user=1000, total=1500)
    alice1, alice2 = typing_reader(unsent=unsent), typing_reader(unsent=unsent)
    bob = typing_reader(unsent=unsent, user="bob")
    alice1.line(b"x" * 598)  # 600 held, with the line end
    alice2.line(b"x" * 398)  # 1000: all alice may hold
    assert alice1.refused is None and alice2.refused is None
    alice2.line(b"")
    assert alice2.refused is not None and "per user" in alice2.refused
    assert unsent.by_user == {"alice": 600}  # alice2 gave back all it held
    bob.line(b"x" * 898)  # 1500 in all
    bob.line(b"y")
    assert bob.refused is not None and "try again later" in bob.refused
    alice1.abandon()  # the client went away
    assert unsent.held == 0 and unsent.by_user == {}


def test_the_held_bytes_are_given_back_once_the_message_is_sent_or_fails():
    offloads = Offloads()
    unsent = UnsentMail(1 << 20, 1 << 20)
    reader = typing_reader(unsent=unsent, offloads=offloads)
    reader.line(b"hello")
    result = reader.finish()
    assert unsent.held == 7
    offloads.run()  # composed; submit to port 1 of a None reactor fails
    failures: list[Any] = []
    result.addErrback(failures.append)
    assert failures and unsent.held == 0


def test_connection_lost_while_typing_frees_the_buffer():
    rig, bridge = bridge_rig()
    proto, tr = connect(rig)
    proto.dataReceived(b"send bob@example.test\n" + b"line\n" * 100)
    assert bridge.unsent.held == 600
    lose(proto, tr)
    assert bridge.unsent.held == 0


# -- parse_typed_text: the same draft as parse_typed, without a list of lines --------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Subject: s", "To: t@x.example", "Cc: c@x.example", "",
                                 " cont", "body", "Bcc: b@x.example", "x"]), max_size=40))
def test_parse_typed_text_is_parse_typed(lines):
    def outcome(parse: Any, typed: Any) -> object:
        try:
            return parse(("a@x.example",), typed)
        except DraftError as e:
            return str(e)
    text = "".join(line + "\n" for line in lines)
    assert outcome(parse_typed_text, text) == outcome(parse_typed, lines)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Subject: s", "Cc: c@x.example", "", " cont", "body", "é",
                                 "From me", ".", "x" * 80, "a\rb", "Bcc: b@x.example"]),
                max_size=30),
       st.sampled_from([8, 1 << 18]))
def test_compose_of_the_buffer_is_the_message_of_the_lines(lines, slice_size):
    """compose (headers parsed from a prefix, a 7bit body copied as typed) builds the very
    message build_message makes of parse_typed's draft (Message-IDs aside)."""
    import re

    from mailsocketd.mail.text import compose as compose_module
    buffer = bytearray(b"".join(line.encode() + b"\r\n" for line in lines))
    saved = compose_module.SLICE
    compose_module.SLICE = slice_size
    try:
        try:
            recipients, _, message = compose(buffer, ("a@x.example",), "me@x.example", 0.0,
                                             "x.example")
        except Exception as e:
            draft_error = str(e).removesuffix("; not sent")
            with pytest.raises(DraftError, match=re.escape(draft_error)):
                parse_typed(("a@x.example",), lines)
            return
    finally:
        compose_module.SLICE = saved
    draft = parse_typed(("a@x.example",), lines)
    _, expected = build_message(draft, sender="me@x.example", now=0.0, domain="x.example")
    without_id = re.compile(rb"Message-ID: <[^>]*>")
    assert recipients == draft.recipients
    assert without_id.sub(b"", message) == without_id.sub(b"", expected)


# -- encode_body without a list of lines: the same result as the line-by-line original ----------

def _encode_body_by_lines(body: str) -> tuple[str, str]:
    """compose.encode_body as it was (a list of lines), the reference."""
    import base64
    import re
    from email import quoprimime
    lines = re.split(r"\r\n|\r|\n", body)
    if all(re.match(r"[\t\x20-\x7e]*\Z", line) and len(line) <= 78
           and not line.startswith("From ") for line in lines):
        return "7bit", "\n".join(lines) + "\n"
    data = "\n".join(lines).encode("utf-8")
    escaped = sum(1 for b in data if b >= 0x80 or (b < 0x20 and b not in (0x09, 0x0A)))
    if escaped * 6 < len(data):
        encoded = quoprimime.body_encode(data.decode("latin-1"), 74, eol="\n")
        return "quoted-printable", "\n".join(
            "=46" + line[1:] if line.startswith("From ") else line
            for line in encoded.split("\n")) + "\n"
    return "base64", base64.encodebytes(data + b"\n").decode("ascii")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "\n", "\r", "From ", "é", "=", "\t", "x" * 40,
                                "\x01", "."]), max_size=80).map("".join),
       st.sampled_from([8, 32, 1 << 18]))
def test_encode_body_in_slices_is_encode_body_by_lines(body, slice_size):
    from mailsocketd.mail.text import compose as compose_module
    saved = compose_module.SLICE
    compose_module.SLICE = slice_size
    try:
        assert compose_module.encode_body(body) == _encode_body_by_lines(body)
    finally:
        compose_module.SLICE = saved


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b" "]),
                max_size=30).map(b"".join))
def test_smtp_data_and_sendmail_input_are_as_line_by_line(message):
    """submit's line-end work without a list of lines: the same bytes as the original."""
    import re

    from mailsocketd.mail.smtp.submit import _line_ends, smtp_data
    lines = re.split(rb"\r\n|\r|\n", message)
    lines = lines[:-1] if lines and not lines[-1] else lines
    assert smtp_data(message) == b"".join(
        b"." + line + b"\r\n" if line.startswith(b".") else line + b"\r\n" for line in lines)
    assert _line_ends(message, b"\n") == b"".join(line + b"\n" for line in lines)


# -- the [smtp] caps ----------------------------------------------------------------------------

def test_the_unsent_caps_default_to_twice_and_ten_times_the_message_size():
    from mailsocketd.mail.smtp.config import parse_smtp
    from mailsocketd.table import ConfigError, Table

    def parse(**keys: Any) -> SmtpConfig:
        config = parse_smtp(Table({"server": "tcp:127.0.0.1", "from_domain": "x.example",
                                   **keys}, "smtp"), True)
        assert config is not None
        return config

    config = parse(max_message_size=4096)
    assert (config.max_unsent_per_user, config.max_unsent_total) == (8192, 40960)
    config = parse(max_unsent_per_user=16 << 20, max_unsent_total=32 << 20)
    assert (config.max_unsent_per_user, config.max_unsent_total) == (16 << 20, 32 << 20)
    with pytest.raises(ConfigError, match="smtp.max_unsent_per_user"):
        parse(max_message_size=4096, max_unsent_per_user=4095)  # one message must fit
    with pytest.raises(ConfigError, match="smtp.max_unsent_total"):
        parse(max_unsent_per_user=1 << 30, max_unsent_total=1 << 29)


def test_the_bridge_caps_what_its_users_type_with_the_configured_numbers():
    smtp = SmtpConfig(server="tcp:127.0.0.1:1", from_domain="example.test",
                      max_message_size=1024, max_unsent_per_user=2048, max_unsent_total=3000)
    rig, bridge = bridge_rig(smtp)
    clients = [connect(rig) for _ in range(3)]
    for proto, _ in clients:
        proto.dataReceived(b"send bob@example.test\n" + b"x" * 799 + b"\n")
    assert bridge.unsent.by_user == {"alice": 1602}  # the third did not fit with the two
    proto, tr = clients[2]
    proto.dataReceived(b".\n")
    assert replies(tr)[-1] == ("error: your messages being sent hold more than 2.0 KB (the "
                               "server's limit per user); not sent")


@pytest.mark.parametrize("typed", [b"", b"\r\n", b"Subject: only\r\n",
                                   b"x" * 10000 + b"\r\n" + b"Subject: s\r\n" * 600])
def test_compose_of_an_empty_message_or_long_lines_is_the_message_of_the_lines(typed):
    lines = [line.decode() for line in typed.split(b"\r\n")[:-1]]
    _, _, message = compose(bytearray(typed), ("a@x.example",), "me@x.example", 0.0,
                            "x.example")
    _, expected = build_message(parse_typed(("a@x.example",), lines), sender="me@x.example",
                                now=0.0, domain="x.example")
    assert message.split(b"Message-ID")[0] == expected.split(b"Message-ID")[0]
    assert message.split(b"\r\n\r\n", 1)[1] == expected.split(b"\r\n\r\n", 1)[1]
