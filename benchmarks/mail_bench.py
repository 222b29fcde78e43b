"""The mail half: a real Dovecot + Postfix on loopback, the anchors, and mailsocketd's mail
commands through the line protocol.

Mailboxes: alice holds 10 messages (9 small ones and one of 2 MB), bob holds 100,000.  The
anchors (PHP's imap_open per check, Python imaplib) run now; mailsocketd's rows are measured as
soon as its line service answers ``login``; until then each row records the daemon's own
error line instead of a figure.
"""

from __future__ import annotations

import imaplib
import importlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import testpath  # noqa: F401  (tests/ on sys.path, for lineclient)
from line_bench import BENCH_CONFIG, Paths
from lineclient import LineClient, ReplyError
from mail_load import many_users, push_latency
from procs import HOST, LOAD_CPU, Server, free_port, status_field_kb

BIG_MESSAGE_BYTES = 2 * 1024 * 1024
SMALL_USER, BIG_USER = "alice", "bob"  # 10 messages, 100,000 messages
POLL_INTERVALS_S = (60, 300)


@dataclass(frozen=True)
class MailSettings:
    """Sizes and rounds: a full run, or a quick one for development."""

    big_mailbox: int = 100_000
    anchor_rounds: int = 11
    check_rounds: int = 200
    list_rounds: int = 200
    read_rounds: int = 5
    push_rounds: int = 5
    users: int = 100
    users_seconds: float = 5.0


FULL = MailSettings()
QUICK = MailSettings(big_mailbox=100_000, anchor_rounds=5, check_rounds=50, list_rounds=20,
                     read_rounds=3, push_rounds=3, users=100, users_seconds=2.0)


def import_mailserver(repo: Path) -> Any:
    """tests/integration/mailserver.py, the same real-server helper the tests use."""
    sys.path.insert(0, str(repo / "tests" / "integration"))
    return importlib.import_module("mailserver")


@contextmanager
def private_mailserver(repo: Path, tls: bool) -> Iterator[Any]:
    """A private Dovecot + Postfix on loopback (tests/integration/mailserver.py), stopped at
    the end."""
    mailserver = import_mailserver(repo)
    problems = mailserver.missing_prerequisites()
    if problems:
        raise RuntimeError("cannot start the mail server: " + "; ".join(problems))
    server = mailserver.start_free_mailserver(tls=tls)
    try:
        yield server
    finally:
        server.stop()


def big_message(to: str) -> bytes:
    """A message of about 2 MB: a short text part and a base64 attachment."""
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = to
    msg["Subject"] = "A 2 MB message"
    msg.set_content("The report is attached.\n" * 20)
    payload = bytes(range(256)) * (BIG_MESSAGE_BYTES * 3 // 4 // 256)
    msg.add_attachment(payload, maintype="application", subtype="octet-stream",
                       filename="report.bin")
    return msg.as_bytes()


def first_uid(server: Any, user: str) -> int:
    """The UID of message 1 in the user's INBOX (a small message to ``read``)."""
    with imaplib.IMAP4(HOST, server.imap_port, timeout=60) as conn:
        conn.login(user, server.users[user])
        conn.select("INBOX", readonly=True)
        _, found = conn.uid("SEARCH", "1")
        return int(found[0].split()[0])


def prepare_mailboxes(server: Any, settings: MailSettings,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """Fill the two mailboxes; find the UIDs to read.  Returns timings and UIDs."""
    t0 = time.perf_counter()
    server.populate(SMALL_USER, 9)
    data = big_message(server.address(SMALL_USER))
    with imaplib.IMAP4(HOST, server.imap_port, timeout=60) as conn:
        conn.login(SMALL_USER, server.users[SMALL_USER])
        conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), data)
        conn.select("INBOX", readonly=True)
        _, found = conn.uid("SEARCH", "LARGER", str(BIG_MESSAGE_BYTES // 2))
        big_uid = int(found[0].split()[-1])
    t1 = time.perf_counter()
    server.populate(BIG_USER, settings.big_mailbox)
    populate_s = time.perf_counter() - t1
    say(f"  mailboxes: {SMALL_USER} 10 messages ({t1 - t0:.1f} s), {BIG_USER} "
        f"{settings.big_mailbox:,} messages in {populate_s:.1f} s (Maildir files written "
        "directly, then indexed by doveadm)")
    return {"populate_big_s": round(populate_s, 2), "big_uid": big_uid, "big_bytes": len(data),
            "small_uid": {u: first_uid(server, u) for u in (SMALL_USER, BIG_USER)}}


def run_anchor(argv: list[str], timeout: float) -> dict[str, float]:
    """Run an anchor script on the load CPU; its ``key=value`` result line as numbers."""
    out = subprocess.run(["taskset", "-c", str(LOAD_CPU), *argv], capture_output=True,
                         text=True, timeout=timeout, check=False)
    lines = [ln for ln in out.stdout.splitlines() if "=" in ln]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{Path(argv[1]).name} failed: {out.stdout} {out.stderr}".strip())
    return {k: float(v) for k, v in (p.split("=", 1) for p in lines[-1].split() if "=" in p)}


def anchors(server: Any, paths: Paths, settings: MailSettings,
            say: Callable[[str], None]) -> dict[str, Any]:
    """PHP's imap_open way and the imaplib script, on both mailboxes."""
    result: dict[str, Any] = {}
    for user in (SMALL_USER, BIG_USER):
        common = [str(server.imap_port), user, server.users[user], str(settings.anchor_rounds)]
        php = run_anchor(["php", str(paths.anchors / "imap_anchor.php"), *common], 600)
        py = run_anchor([sys.executable, str(Path(__file__).with_name("imaplib_anchor.py")),
                         *common], 600)
        result[user] = {"php": php, "imaplib": py}
        say(f"  anchors, {int(php['messages']):,} messages: PHP check {php['check_ms']:.2f} ms, "
            f"list 20 {php['list20_ms']:.2f} ms; imaplib fresh {py['fresh_status_ms']:.2f} ms, "
            f"open STATUS {py['open_status_ms']:.3f} ms, FETCH 20 {py['fetch20_ms']:.3f} ms")
    return result


def daemon_config(server: Any) -> str:
    """The benchmark daemon's configuration: the line limits plus [imap] and [smtp]."""
    return (BENCH_CONFIG
            + f'\n[imap]\nserver = "tcp:{HOST}:{server.imap_port}"\nallow_cleartext = true\n'
            + f'\n[smtp]\nserver = "tcp:{HOST}:{server.smtp_port}"\n'
            + f'from_domain = "{server.domain}"\n')


def start_daemon(server: Any, paths: Paths) -> Server:
    """The installed daemon with [imap]/[smtp] pointing at the benchmark's mail server."""
    config = paths.scratch / "mail-bench.toml"
    config.write_text(daemon_config(server))
    port = free_port()
    argv = [str(paths.venv / "bin" / "twistd"), "-n", "--pidfile=", "mailsocketd",
            "--config", str(config), "--listen", f"tcp:{port}:interface={HOST}"]
    daemon = Server("mailsocketd", argv, port, paths.scratch / "mail-daemon.log", b"time\n",
                    cwd=paths.scratch)
    daemon.start()
    return daemon


def latencies_ms(action: Callable[[], object], rounds: int) -> dict[str, float]:
    """Median and 99th percentile (nearest rank) of ``rounds`` timed calls, in ms."""
    return interleaved_ms({"action": action}, rounds)["action"]


def logged_in(port: int, user: str, password: str) -> LineClient:
    """A line client after a successful ``login`` (ReplyError if the daemon refuses)."""
    client = LineClient.connect(port)
    try:
        client.ask(f"login {user} {password}", check=True)
    except BaseException:
        client.close()
        raise
    return client


def interleaved_ms(actions: dict[str, Callable[[], object]], rounds: int
                   ) -> dict[str, dict[str, float]]:
    """``latencies_ms`` of several actions, taken in turn round by round, so that the machine's
    changing load falls on all of them alike (their ratio is a target)."""
    samples: dict[str, list[float]] = {key: [] for key in actions}
    for _ in range(rounds):
        for key, action in actions.items():
            t0 = time.perf_counter()
            action()
            samples[key].append((time.perf_counter() - t0) * 1000)
    rows = {}
    for key, values in samples.items():
        values.sort()
        rows[key] = {"median_ms": statistics.median(values),
                     "p99_ms": values[min(len(values) - 1, int(0.99 * len(values)))],
                     "rounds": rounds}
    return rows


def daemon_rows(daemon: Server, server: Any, boxes: dict[str, Any], settings: MailSettings,
                say: Callable[[str], None]) -> dict[str, Any]:
    """check, list 20 and read through the line service; the daemon's peak memory.  alice's and
    bob's commands take turns."""
    rows: dict[str, Any] = {}
    with logged_in(daemon.port, SMALL_USER, server.users[SMALL_USER]) as small, \
            logged_in(daemon.port, BIG_USER, server.users[BIG_USER]) as big:
        clients = {SMALL_USER: small, BIG_USER: big}
        heads = {user: client.ask("check", check=True) for user, client in clients.items()}
        for user, row in interleaved_ms({user: partial(client.ask, "check", check=True)
                                         for user, client in clients.items()},
                                        settings.check_rounds).items():
            rows[f"check/{user}"] = row | {"reply": heads[user]}
        listed = {user: client.ask_multi("list 20", check=True).lines
                  for user, client in clients.items()}
        for user, row in interleaved_ms({user: partial(client.ask_multi, "list 20", check=True)
                                         for user, client in clients.items()},
                                        settings.list_rounds).items():
            rows[f"list20/{user}"] = row | {"reply_lines": len(listed[user])}
    with logged_in(daemon.port, SMALL_USER, server.users[SMALL_USER]) as client:
        hwm_before = status_field_kb(daemon.pid, "VmHWM")
        lines = client.ask_multi(f"read {boxes['big_uid']}", check=True).lines
        rows["read_big"] = latencies_ms(
            partial(client.ask_multi, f"read {boxes['big_uid']}", check=True),
            settings.read_rounds) | {
            "reply_lines": len(lines), "reply_chars": sum(len(x) for x in lines),
            "hwm_before_kb": hwm_before, "hwm_after_kb": status_field_kb(daemon.pid, "VmHWM")}
    for key, row in rows.items():
        say(f"  mailsocketd {key}: median {row['median_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms")
    return rows


def measure_daemon(daemon: Server, server: Any, boxes: dict[str, Any], settings: MailSettings,
                   say: Callable[[str], None]) -> dict[str, Any]:
    """Every mailsocketd mail row, or the error line that says why none could be measured."""
    try:
        logged_in(daemon.port, SMALL_USER, server.users[SMALL_USER]).close()
    except ReplyError as e:
        say(f"  mailsocketd mail commands not available: {e}")
        return {"unavailable": str(e)}
    result: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("rows", lambda: daemon_rows(daemon, server, boxes, settings, say)),
        ("push", lambda: push_latency(daemon.port, server, SMALL_USER, settings.push_rounds,
                                      say)),
        ("many_users", lambda: many_users(daemon, server, (SMALL_USER, BIG_USER),
                                          boxes["small_uid"], settings.users,
                                          settings.users_seconds, say)),
    ]
    for key, step in steps:
        try:
            result[key] = step()
        except (ReplyError, OSError) as e:  # one failing command must not hide the others
            say(f"  mailsocketd {key}: failed: {e}")
            result[key] = {"failed": str(e)}
    return result


def run_mail(repo: Path, paths: Paths, settings: MailSettings,
             say: Callable[[str], None]) -> dict[str, Any]:
    """The whole mail section, on a private Dovecot + Postfix that is stopped at the end."""
    with private_mailserver(repo, tls=False) as server:
        boxes = prepare_mailboxes(server, settings, say)
        result: dict[str, Any] = {"settings": settings.__dict__, "mailboxes": boxes,
                                  "anchors": anchors(server, paths, settings, say),
                                  "poll_intervals_s": list(POLL_INTERVALS_S)}
        daemon = start_daemon(server, paths)
        try:
            result["daemon_startup_s"] = daemon.startup_s
            result["mailsocketd"] = measure_daemon(daemon, server, boxes, settings, say)
        finally:
            daemon.stop()
        return result
