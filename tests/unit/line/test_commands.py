"""The command table: typed arguments split only as far as each command says, usage errors from
the table before any handler runs, ``help COMMAND``, and the line service's import boundaries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from linerig import Rig, User, take

from mailsocketd.line.commands import Arg, Command
from mailsocketd.line.replies import CommandError, Reply
from mailsocketd.line.session import Session

LINE = Path(__file__).resolve().parents[3] / "mailsocketd" / "line"


class Calls:
    """Handlers that record their keyword arguments."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []

    def login(self, session: Session, user: str, password: str) -> Reply:
        self.seen.append({"user": user, "password": password})
        return Reply("ok login")

    def list(self, session: Session, count: int | None = None,
             mailbox: str | None = None) -> Reply:
        self.seen.append({"count": count, "mailbox": mailbox})
        return Reply("ok list")

    def read(self, session: Session, uid: int, mailbox: str | None = None) -> Reply:
        self.seen.append({"uid": uid, "mailbox": mailbox})
        return Reply("ok read")

    def delete(self, session: Session, uids: tuple[int, ...]) -> Reply:
        self.seen.append({"uids": uids})
        return Reply("ok delete")

    def watch(self, session: Session, switch: str, mailbox: str = "INBOX") -> Reply:
        self.seen.append({"switch": switch, "mailbox": mailbox})
        return Reply("ok watch")


def table(calls: Calls) -> list[Command]:
    mailbox = Arg("mailbox", kind="rest", optional=True)
    return [
        Command(name="login", handler=calls.login, summary="log in",
                args=(Arg("user"), Arg("password", kind="rest"))),
        Command(name="list", handler=calls.list, summary="the newest messages",
                args=(Arg("count", kind="number", optional=True), mailbox), needs_login=True),
        Command(name="read", handler=calls.read, summary="a message",
                args=(Arg("uid", kind="uid"), mailbox), needs_login=True),
        Command(name="delete", handler=calls.delete, summary="delete",
                args=(Arg("uids", kind="uid", repeat=True, shown="UID"),), needs_login=True),
        Command(name="watch", handler=calls.watch, summary="push new mail",
                args=(Arg("switch", choices=("on", "off")), mailbox), needs_login=True),
    ]


def ask(data: bytes) -> tuple[list[str], list[dict[str, object]]]:
    """The reply lines to ``data`` from a logged-in client, and what the handlers got."""
    calls = Calls()
    proto, tr = Rig(table(calls)).connect()
    proto.session.user = User("alice")
    proto.dataReceived(data)
    return take(tr).decode().split("\r\n")[:-1], calls.seen


def test_the_password_is_the_rest_of_the_line_byte_for_byte():
    lines, seen = ask(b"login alice  pass  word\twith\t\ttabs \r\nLOGIN bob x\n")
    assert lines == ["ok login", "ok login"]
    assert seen == [{"user": "alice", "password": "pass  word\twith\t\ttabs "},
                    {"user": "bob", "password": "x"}]


def test_mailbox_names_keep_their_spacing():
    lines, seen = ask(b"list Sent  Items\nlist 5  Old   Mail\nread 7 My  Box\n"
                      b"watch ON  Two  Spaces\nlist\n")
    assert lines == ["ok list", "ok list", "ok read", "ok watch", "ok list"]
    assert seen == [{"count": None, "mailbox": "Sent  Items"},
                    {"count": 5, "mailbox": "Old   Mail"},
                    {"uid": 7, "mailbox": "My  Box"},
                    {"switch": "on", "mailbox": "Two  Spaces"},
                    {"count": None, "mailbox": None}]


def test_usage_and_number_errors_come_from_the_table_before_any_handler():
    lines, seen = ask(b"login alice\nread\nread x1\nread 0\ndelete\ndelete 5 4294967296\n"
                      b"watch maybe\nwatch\n")
    assert lines == [
        "error: usage: login USER PASSWORD",
        "error: usage: read UID [MAILBOX]",
        "error: not a UID: 'x1' (UIDs are the numbers 'list' shows)",
        "error: not a UID: '0' (UIDs are the numbers 'list' shows)",
        "error: usage: delete UID [UID ...]",
        "error: not a UID: '4294967296' (UIDs are the numbers 'list' shows)",
        "error: usage: watch on|off [MAILBOX]",
        "error: usage: watch on|off [MAILBOX]",
    ]
    assert seen == []


def test_repeated_uids_and_the_largest_uid():
    lines, seen = ask(b"delete 5  4\t4294967295\n")
    assert lines == ["ok delete"]
    assert seen == [{"uids": (5, 4, 4294967295)}]


def test_login_is_checked_before_the_arguments():
    calls = Calls()
    proto, tr = Rig(table(calls)).connect()
    proto.dataReceived(b"read\nread x1\nlist 5 INBOX\n")
    assert take(tr) == b"error: login first\r\n" * 3
    assert calls.seen == []


def test_the_uid_limit_is_the_mail_sides():
    from mailsocketd.line.commands import UID_MAX
    from mailsocketd.mail.imap.client import MAX_UID

    assert UID_MAX == MAX_UID


def test_help_command_shows_one_commands_syntax_and_arguments():
    calls = Calls()
    proto, tr = Rig(table(calls)).connect()
    proto.dataReceived(b"help read\r\nHELP Time\r\nhelp nosuch\r\nhelp read list\r\n")
    assert take(tr).decode().split("\r\n") == [
        "ok read UID [MAILBOX]",
        "a message (after login)",
        "UID: a message's UID (the numbers 'list' shows)",
        "MAILBOX: optional; the rest of the line, exactly as typed (spaces kept)",
        ".",
        "ok time",
        "the local date and time, as YYYY/MM/DD HH:MM:SS",
        ".",
        "error: unknown command 'nosuch'; try 'help'",
        "error: usage: help [COMMAND]",
        "",
    ]


def test_help_alone_lists_every_command_with_its_syntax():
    proto, tr = Rig(table(Calls())).connect()
    proto.dataReceived(b"help\n")
    lines = take(tr).decode().split("\r\n")
    assert lines[0] == "ok 9 commands"
    assert "help [COMMAND]          the commands, or one command's syntax and arguments" in lines
    assert "watch on|off [MAILBOX]  push new mail (after login)" in lines
    assert "delete UID [UID ...]    delete (after login)" in lines


def test_the_table_refuses_entries_that_cannot_work():
    def two(session: Session, a: str, b: str = "") -> Reply:
        return Reply("ok")

    with pytest.raises(ValueError, match="the handler takes"):
        Command(name="x", handler=two, summary="x", args=(Arg("a"),))
    with pytest.raises(ValueError, match="must be the last"):
        Command(name="x", handler=two, summary="x", args=(Arg("a", kind="rest"), Arg("b")))
    with pytest.raises(ValueError, match="follows an optional"):
        Command(name="x", handler=two, summary="x", args=(Arg("a", optional=True), Arg("b")))
    with pytest.raises(ValueError, match="needs a default"):
        Command(name="x", handler=lambda session, a, b: Reply("x"), summary="x",
                args=(Arg("a"), Arg("b", optional=True)))


def line_imports(path: Path) -> set[str]:
    """The modules a file imports, TYPE_CHECKING imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_line_service_outside_its_bridge_imports_nothing_of_the_mail_side():
    modules = sorted(LINE.glob("*.py"))
    assert LINE / "server.py" in modules
    for path in modules:
        mail = {m for m in line_imports(path)
                if m.startswith(("mailsocketd.mail", "mailsocketd.line.mail"))}
        assert not mail, f"{path.name} imports {mail}"
    # ...nor through another module: importing all of them loads none of mailsocketd.mail.
    names = ", ".join(f"mailsocketd.line.{p.stem}" for p in modules if p.stem != "__init__")
    check = (f"import sys, {names}; "
             "print([m for m in sys.modules if m.startswith('mailsocketd.mail')])")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_no_import_cycles_between_line_modules():
    graph = {p.stem: {m.rsplit(".", 1)[1] for m in line_imports(p)
                      if m.startswith("mailsocketd.line.") and m.count(".") == 2}
             for p in LINE.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [name for name in graph if reaches(name, name, {name})]
    assert cycles == []


class Writer:
    """A command that reads input up to a lone '.', refusing some of it."""

    def __init__(self) -> None:
        self.called = 0

    def write(self, session: Session, to: str = "") -> Reply:
        self.called += 1
        if to == "nobody":
            raise CommandError("bad recipient 'nobody'")
        return Reply("ok go on")


def writer_rig(writer: Writer) -> Rig:
    return Rig([Command(name="write", handler=writer.write, needs_login=True, reads_input=True,
                        args=(Arg("to", kind="rest", optional=True),), summary="write")])


@pytest.mark.parametrize(("user", "to", "why"), [
    (None, "bob", "login first"),
    ("alice", "nobody", "bad recipient 'nobody'"),
])
def test_a_refused_command_that_reads_input_consumes_it(user, to, why):
    """Its input is never run as commands (quit would close), whoever refused it: the table's
    login gate or the handler."""
    writer = Writer()
    proto, tr = writer_rig(writer).connect()
    proto.session.user = None if user is None else User(user)
    proto.dataReceived(f"write {to}\r\nquit\r\ntime\r\n.\r\ntime\r\n".encode())
    lines = take(tr).decode().split("\r\n")[:-1]
    assert lines[0] == f"error: {why}; the message up to the lone '.' is discarded"
    assert lines[1] == f"error: not sent: {why}"
    assert len(lines) == 3 and lines[2].count("/") == 2  # the time after the '.', served
    assert writer.called == (0 if user is None else 1)
    assert not tr.disconnecting


def test_without_reads_input_a_refusal_is_one_line():
    proto, tr = Rig([Command(name="write", handler=Writer().write, needs_login=True,
                             args=(Arg("to", kind="rest", optional=True),),
                             summary="write")]).connect()
    proto.dataReceived(b"write bob\r\nquit\r\n")
    assert take(tr).decode().split("\r\n")[:-1] == ["error: login first", "quit"]
