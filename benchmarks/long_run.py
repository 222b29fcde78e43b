"""The long run (issue 16): an operator's bad day, bounded, on loopback, stopping by itself.

A real Dovecot + Postfix (tests/integration/mailserver.py, with TLS: STARTTLS is verified
against the instance's CA on every IMAP and SMTP connection, as in a real deployment) and the
installed daemon watching two accounts.  For ``minutes``: ``time`` clients, mail users doing
send/check/list/read/delete, watchers, misbehaving clients (long_clients.py), and a fault every
``fault_every_s`` seconds, in turn: Dovecot restarted, Dovecot crashed and started, Dovecot
stopped for a while, Postfix stopped for a while.  Then the load stops and the daemon is left
alone for ``after_s`` seconds.  Recorded: commands, ``time`` latency by second, the daemon's
RSS every second, the accounts' state every half second (their share of time watching, and
the time from each fault's end until both watch again), the mail users' recovery, and at the
end, from the mailboxes themselves: every accepted send delivered exactly once, every deleted
message gone and no other.
"""

from __future__ import annotations

import imaplib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import testpath  # noqa: F401  (tests/ on sys.path, for lineclient)
from line_bench import Paths
from lineclient import LineClient
from long_clients import TOKEN_RE, MailUser, Misbehaving, TimeLoad, Watcher, summary
from mail_bench import private_mailserver
from procs import HOST, Server, free_port, status_field_kb

USERS = ("alice", "bob")
FAULTS = ("dovecot-restart", "dovecot-crash", "dovecot-down", "postfix-down")
ACCOUNT_RE = re.compile(r"^account (\S+) (\S+): state=(\S+)")
# An account is watching while logged in: idling (IDLE), checking (a STATUS), or connected
# (between the two: IDLE is restarted at most once a second, so under a stream of mail an
# account spends much of its time here).  The other states are connecting, logging-in,
# backing-off, auth-failed and stopped.
WATCHING = frozenset({"idling", "checking", "connected"})
GLIBC_HEAP_ALIGN = 64 << 20  # glibc's thread arenas are heaps of 64 MB, aligned on 64 MB


@dataclass(frozen=True)
class LongSettings:
    """Sizes and times: the full run, or a quick one for development."""

    minutes: float = 10.0  # the load phase
    after_s: float = 90.0  # the daemon alone after the load, RSS still sampled
    warmup_s: float = 60.0  # the start of the load that the memory figures leave out
    time_connections: int = 100
    time_every_s: float = 0.1  # each time connection: one request per 100 ms
    short_every_s: float = 0.02  # one short connection (connect, time, close) per 20 ms
    mail_users_per_account: int = 5  # line clients per mail user name (alice, bob)
    mail_loop_s: float = 2.0  # each mail user: one send/check/list/read/delete round per 2 s
    fault_every_s: float = 60.0
    faults: bool = True  # False: the same load with no fault (the memory goal's mail load)
    dovecot_down_s: float = 30.0
    postfix_down_s: float = 20.0


FULL = LongSettings()
QUICK = LongSettings(minutes=2.5, after_s=30.0, warmup_s=20.0, time_connections=30,
                     mail_users_per_account=3, fault_every_s=25.0, dovecot_down_s=8.0,
                     postfix_down_s=6.0)


def daemon_config(server: Any, scratch: Path) -> str:
    """[line], [imap] and [smtp] on the test servers (STARTTLS, the instance's CA) and two
    accounts watching alice's and bob's INBOX."""
    ca = server.ca_file
    accounts = ""
    for user in USERS:
        pw = scratch / f"{user}.pw"
        pw.write_text(server.users[user] + "\n")
        pw.chmod(0o600)
        accounts += (f'\n[accounts.{user}]\nserver = "tcp:{HOST}:{server.imap_port}"\n'
                     f'user = "{user}"\npassword_file = "{pw}"\nca_file = "{ca}"\n'
                     "interval = 60\n")
    return ("[line]\nmax_connections = 2000\nmax_connections_per_peer = 2000\n"
            "login_failures = 1000\n"
            f'\n[imap]\nserver = "tcp:{HOST}:{server.imap_port}"\nca_file = "{ca}"\n'
            f'\n[smtp]\nserver = "tcp:{HOST}:{server.smtp_port}"\nca_file = "{ca}"\n'
            f'from_domain = "{server.domain}"\n' + accounts)


def memory_by_kind(pid: int) -> dict[str, float]:
    """The daemon's resident memory in MB by kind of mapping (/proc/PID/smaps): ``malloc``
    (glibc: the main heap and the thread arenas), ``anonymous`` (the rest: pymalloc's arenas
    of Python objects, large malloc blocks, thread stacks) and ``files`` (code, mapped
    libraries)."""
    kb = {"malloc": 0, "anonymous": 0, "files": 0}
    kind = "files"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                fields = line.split()
                start = int(fields[0].split("-")[0], 16)
                path = fields[5] if len(fields) > 5 else ""
                if path == "[heap]" or (not path and start % GLIBC_HEAP_ALIGN == 0
                                        and fields[1].startswith("rw")):
                    kind = "malloc"
                elif path.startswith("/"):
                    kind = "files"
                else:
                    kind = "anonymous"
            elif line.startswith("Rss:"):
                kb[kind] += int(line.split()[1])
    return {k: round(v / 1024, 2) for k, v in kb.items()}


class Sampler(threading.Thread):
    """Every ``every_s``: the daemon's RSS and threads, and the accounts' states (``status``
    on a loopback connection, which is shown the accounts); every 10 s its memory by kind."""

    def __init__(self, daemon: Server, t0: float, stop: threading.Event,
                 every_s: float = 0.5) -> None:
        super().__init__(daemon=True, name="sampler")
        self.target, self.t0, self.stop, self.every_s = daemon, t0, stop, every_s
        self.rss: list[tuple[float, float]] = []  # (second of the run, MB)
        self.threads: list[tuple[float, int]] = []
        self.accounts: list[tuple[float, dict[str, str]]] = []
        self.kinds: list[tuple[float, dict[str, float]]] = []
        self.status_errors = 0

    def run(self) -> None:
        client: LineClient | None = None
        tick = 0
        while not self.stop.is_set():
            t = round(time.monotonic() - self.t0, 2)
            if tick % 2 == 0:
                self.rss.append((t, status_field_kb(self.target.pid, "VmRSS") / 1024))
                self.threads.append((t, status_field_kb(self.target.pid, "Threads")))
            if tick % 20 == 0:
                self.kinds.append((t, memory_by_kind(self.target.pid)))
            tick += 1
            try:
                if client is None:
                    client = LineClient.connect(self.target.port, timeout=5)
                lines = client.ask_multi("status").lines
                states = {m.group(1): m.group(3) for m in map(ACCOUNT_RE.match, lines) if m}
                self.accounts.append((t, states))
            except OSError:
                self.status_errors += 1
                if client is not None:
                    client.close()
                client = None
            self.stop.wait(self.every_s)
        if client is not None:
            client.close()


class Faults(threading.Thread):
    """One fault every ``fault_every_s`` (after the first interval), in FAULTS order, while it
    can end 20 s before the load does; each recorded with when it began and when the server
    was back."""

    def __init__(self, server: Any, settings: LongSettings, t0: float, load_end: float,
                 say: Callable[[str], None]) -> None:
        super().__init__(daemon=True, name="faults")
        self.server, self.settings, self.t0, self.load_end = server, settings, t0, load_end
        self.say = say
        self.done: list[dict[str, Any]] = []

    def _at(self, second: float) -> None:
        time.sleep(max(0.0, self.t0 + second - time.monotonic()))

    def run(self) -> None:
        s, server = self.settings, self.server
        if not s.faults:
            return
        actions: dict[str, tuple[Callable[[], None], float, Callable[[], None]]] = {
            "dovecot-restart": (server.stop_dovecot, 0.0, server.start_dovecot),
            "dovecot-crash": (server.kill_dovecot, 0.0, server.start_dovecot),
            "dovecot-down": (server.stop_dovecot, s.dovecot_down_s, server.start_dovecot),
            "postfix-down": (server.stop_postfix, s.postfix_down_s, server.start_postfix),
        }
        n = 0
        while True:
            at = s.fault_every_s * (n + 1)
            kind = FAULTS[n % len(FAULTS)]
            stop, down, start = actions[kind]
            if self.t0 + at + down + 25 > self.load_end:
                return
            self._at(at)
            began = time.monotonic() - self.t0
            try:
                stop()
                time.sleep(down)
            finally:
                start()
            back = time.monotonic() - self.t0
            self.done.append({"kind": kind, "began_s": round(began, 2),
                              "back_s": round(back, 2)})
            self.say(f"  fault {kind}: {began:.0f} s to {back:.0f} s")
            n += 1


def mailbox_tokens(server: Any, user: str) -> Counter[str]:
    """How many messages of each long-run token the user's INBOX holds (straight from
    Dovecot, over verified STARTTLS)."""
    found: Counter[str] = Counter()
    with imaplib.IMAP4(HOST, server.imap_port, timeout=60) as conn:
        conn.starttls(server.ssl_context())
        conn.login(user, server.users[user])
        conn.select("INBOX", readonly=True)
        _, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in data:
            if isinstance(item, tuple):
                match = TOKEN_RE.search(item[1].decode("utf-8", "replace"))
                if match:
                    found[match.group(0)] += 1
    return found


def wait_for_queue(server: Any, seconds: float = 60.0) -> bool:
    """Wait (bounded) until Postfix's queue is empty: every accepted message delivered."""
    deadline = time.monotonic() + seconds
    spool = server.dir / "postfix" / "spool"
    while time.monotonic() < deadline:
        queue = [p for d in ("maildrop", "incoming", "active", "deferred")
                 for p in (spool / d).rglob("*") if p.is_file()]
        if not queue:
            return True
        time.sleep(1.0)
    return False


def verify_mail(server: Any, users: list[MailUser]) -> dict[str, Any]:
    """Every accepted send delivered exactly once, every delete removed its message only."""
    settled = wait_for_queue(server)
    held: Counter[str] = Counter()
    for user in USERS:
        held += mailbox_tokens(server, user)
    sent = [t for u in users for t in u.record.sent_ok]
    deleted = {t for u in users for t in u.record.deleted}
    failed = {t: e for u in users for t, e in u.record.send_errors.items()}
    kept = [t for t in sent if t not in deleted]
    return {
        "queue_empty": settled,
        "sends_ok": len(sent), "sends_failed": len(failed),
        "deletes_ok": len(deleted),
        "kept_once": sum(1 for t in kept if held[t] == 1),
        "kept_missing": [t for t in kept if held[t] == 0][:20],
        "duplicated": [t for t, n in held.items() if n > 1][:20],
        "deleted_still_there": [t for t in deleted if held[t]][:20],
        "failed_but_delivered": sorted(t for t in failed if held[t])[:20],
        "failed_errors": dict(Counter(re.sub(r"\d+", "N", e)[:80]
                                      for e in failed.values()).most_common(8)),
        "unknown_tokens": [t for t in held if t not in failed and t not in set(sent)][:20],
    }


def watching_share(samples: list[tuple[float, dict[str, str]]], start: float, end: float,
                   states: frozenset[str] = WATCHING) -> dict[str, float]:
    """Per account, the share of samples in [start, end) in which it was in ``states``."""
    shares: dict[str, float] = {}
    window = [(t, s) for t, s in samples if start <= t < end]
    for name in USERS:
        seen = [s.get(name) for _, s in window]
        shares[name] = round(sum(1 for x in seen if x in states) / max(1, len(seen)), 4)
    return shares


def recovery(samples: list[tuple[float, dict[str, str]]], faults: list[dict[str, Any]],
             users: list[MailUser], watchers: list[Watcher]) -> list[dict[str, Any]]:
    """For each fault: seconds from the server being back until both accounts idle again, and
    until every mail user's commands and every watcher worked again."""
    rows = []
    for fault in faults:
        back = fault["back_s"]
        watching = next((t for t, s in samples if t >= back
                         and all(s.get(n) in WATCHING for n in USERS)), None)
        # only the clients the fault interrupted (a failure or a lost session while it lasted)
        hit = (fault["began_s"], back + 10)
        mail_ok = [min((t for t in u.record.ok_at if t >= fault["began_s"]), default=None)
                   for u in users if any(hit[0] <= t <= hit[1] for t in u.record.failures_at)]
        rewatch = [min((t for t in w.watching_at if t >= fault["began_s"]), default=None)
                   for w in watchers if any(hit[0] <= t <= hit[1] for t in w.lost_at)]
        row = dict(fault)
        row["accounts_watching_after_s"] = (round(watching - back, 2)
                                            if watching is not None else None)
        late = [t for t in mail_ok if t is not None]
        row["mail_users_ok_after_s"] = round(max(late) - back, 2) if late else None
        rw = [t for t in rewatch if t is not None]
        row["watchers_again_after_s"] = round(max(rw) - back, 2) if rw else None
        rows.append(row)
    return rows


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of RSS over time, MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return round(60 * sum((t - mx) * (v - my) for t, v in points) / var, 4) if var else None


def kinds_figures(kinds: list[tuple[float, dict[str, float]]], s: LongSettings,
                  load_s: float) -> dict[str, Any]:
    """Memory by kind (memory_by_kind) at the start, after warm-up, at the load's end and at
    the run's end, and each kind's range over the load after warm-up."""
    if not kinds:
        return {}

    def at(second: float) -> dict[str, float]:
        return min(kinds, key=lambda p: abs(p[0] - second))[1]

    steady = [k for t, k in kinds if s.warmup_s <= t <= load_s]
    return {
        "start": kinds[0][1], "warm": at(s.warmup_s), "load_end": at(load_s),
        "end": kinds[-1][1],
        "steady_range": {name: [min(k[name] for k in steady), max(k[name] for k in steady)]
                         for name in kinds[0][1]} if steady else {},
    }


def memory_figures(rss: list[tuple[float, float]], s: LongSettings,
                   load_s: float) -> dict[str, Any]:
    """The memory questions: start, growth after warm-up, the end of the load, after it."""
    def at(second: float) -> float:
        return min(rss, key=lambda p: abs(p[0] - second))[1]

    steady = [(t, v) for t, v in rss if s.warmup_s <= t <= load_s]
    after = [v for t, v in rss if t > load_s]
    return {
        "start_mb": round(rss[0][1], 2), "warm_mb": round(at(s.warmup_s), 2),
        "load_end_mb": round(at(load_s), 2), "max_mb": round(max(v for _, v in rss), 2),
        "steady_min_mb": round(min(v for _, v in steady), 2) if steady else None,
        "steady_max_mb": round(max(v for _, v in steady), 2) if steady else None,
        "steady_growth_mb": round(at(load_s) - at(s.warmup_s), 2),
        "steady_slope_mb_per_min": slope_mb_per_min(steady),
        "after_end_mb": round(after[-1], 2) if after else None,
    }


def start_daemon(server: Any, paths: Paths, env: dict[str, str] | None) -> Server:
    config = paths.scratch / "long-run.toml"
    config.write_text(daemon_config(server, paths.scratch))
    port = free_port()
    argv = [str(paths.venv / "bin" / "twistd"), "-n", "--pidfile=", "mailsocketd",
            "--config", str(config), "--listen", f"tcp:{port}:interface={HOST}"]
    daemon = Server("mailsocketd", argv, port, paths.scratch / "long-daemon.log", b"time\n",
                    cwd=paths.scratch, env=env)
    daemon.start()
    return daemon


def log_counts(log: Path) -> dict[str, int]:
    """Tracebacks and a few events in the daemon's log."""
    text = log.read_text(errors="replace")
    return {"tracebacks": text.count("Traceback"),
            "line_timeout": text.count("line not ended within"),
            "line_too_long": text.count("exceeds the limit of")}


def run_long(repo: Path, paths: Paths, s: LongSettings, say: Callable[[str], None],
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole long run (see the module docstring); its results."""
    with private_mailserver(repo, tls=True) as server:
        daemon = start_daemon(server, paths, env)
        try:
            return _drive(server, daemon, s, say)
        finally:
            daemon.stop()


def _drive(server: Any, daemon: Server, s: LongSettings,
           say: Callable[[str], None]) -> dict[str, Any]:
    load_s = s.minutes * 60
    t0 = time.monotonic()
    load_end = t0 + load_s
    stop = threading.Event()
    sampler = Sampler(daemon, t0, stop)
    sampler.start()
    time_load = TimeLoad(daemon.port, t0, load_end, s.time_connections, s.time_every_s,
                         s.short_every_s)
    users = [MailUser(f"{u[0]}{i}", daemon.port, u, server.users[u], server.address(u), t0,
                      load_end, s.mail_loop_s)
             for u in USERS for i in range(s.mail_users_per_account)]
    watchers = [Watcher(u, daemon.port, u, server.users[u], t0, load_end) for u in USERS]
    bad = [Misbehaving(kind, daemon.port, t0, load_end) for kind in Misbehaving.KINDS]
    faults = Faults(server, s, t0, load_end, say)
    workers: list[threading.Thread] = [time_load, *users, *watchers, *bad, faults]
    say(f"  long run: {s.minutes:g} min of load, then {s.after_s:g} s alone; daemon pid "
        f"{daemon.pid}, port {daemon.port}")
    for worker in workers:
        worker.start()
    while time.monotonic() < load_end:
        time.sleep(min(30.0, max(0.0, load_end - time.monotonic())))
        rss = sampler.rss[-1][1] if sampler.rss else 0.0
        say(f"  {time.monotonic() - t0:5.0f} s: RSS {rss:.1f} MB, time commands "
            f"{time_load.commands:,}, sends {sum(len(u.record.sent_ok) for u in users)}")
    for worker in workers:
        worker.join(120)
    stuck = [w.name for w in workers if w.is_alive()]
    time.sleep(max(0.0, load_end + s.after_s - time.monotonic()))
    stop.set()
    sampler.join(30)
    elapsed = time.monotonic() - t0

    mail_commands: Counter[str] = Counter()
    mail_errors: Counter[str] = Counter()
    for u in users:
        mail_commands += u.record.commands
        mail_errors += u.record.errors
    latencies = [v for values in time_load.latency_ms.values() for v in values]
    fault_seconds = {sec for f in faults.done
                     for sec in range(int(f["began_s"]), int(f["back_s"]) + 10)}
    during = [v for sec, values in time_load.latency_ms.items() if sec in fault_seconds
              for v in values]
    outside = [v for sec, values in time_load.latency_ms.items() if sec not in fault_seconds
               for v in values]
    result: dict[str, Any] = {
        "settings": asdict(s), "elapsed_s": round(elapsed, 1), "stuck_threads": stuck,
        "commands": {"time": time_load.commands, **dict(mail_commands),
                     "short_connections": time_load.short_connections},
        "time_latency": summary(latencies),
        "time_latency_during_faults": summary(during),
        "time_latency_outside_faults": summary(outside),
        "time_p99_by_10s": [[sec, summary([v for x in range(sec, sec + 10)
                                           for v in time_load.latency_ms.get(x, [])])
                             .get("p99_ms")] for sec in range(0, int(load_s), 10)],
        "time_errors": dict(time_load.errors.most_common(8)),
        "mail_errors": dict(mail_errors.most_common(12)),
        "mail_logins": sum(u.record.logins for u in users),
        "watchers": {"new_mail": sum(w.new_mail for w in watchers),
                     "sessions_lost": sum(len(w.lost_at) for w in watchers),
                     "errors": dict(sum((w.errors for w in watchers), Counter()))},
        "misbehaving": {b.kind: {"rounds": b.rounds, "outcomes": dict(b.outcomes),
                                 **({"held_s": b.held_s} if b.held_s else {})} for b in bad},
        "faults": recovery(sampler.accounts, faults.done, users, watchers),
        "accounts_watching_share": watching_share(sampler.accounts, 0.0, load_s),
        "accounts_idling_share": watching_share(sampler.accounts, 0.0, load_s,
                                                frozenset({"idling"})),
        "accounts_states": dict(Counter(st for _, states in sampler.accounts
                                        for st in states.values())),
        "rss_mb": [[t, round(v, 2)] for t, v in sampler.rss],
        "threads_max": max((n for _, n in sampler.threads), default=0),
        "memory": memory_figures(sampler.rss, s, load_s),
        "memory_by_kind": kinds_figures(sampler.kinds, s, load_s),
        "memory_by_kind_mb": [[t, k] for t, k in sampler.kinds],
        "status_errors": sampler.status_errors,
        "mail": verify_mail(server, users),
        "daemon_log": log_counts(daemon.log_path),
        "daemon_alive": daemon.alive(),
    }
    m = result["memory"]
    say(f"  RSS start {m['start_mb']} MB, after warm-up {m['warm_mb']} MB, end of load "
        f"{m['load_end_mb']} MB (growth {m['steady_growth_mb']} MB, slope "
        f"{m['steady_slope_mb_per_min']} MB/min), after {m['after_end_mb']} MB")
    say(f"  memory by kind (MB): {result['memory_by_kind']}")
    say(f"  accounts watching: {result['accounts_watching_share']}; faults: "
        + "; ".join(f"{f['kind']} {f['accounts_watching_after_s']} s"
                    for f in result["faults"]))
    mail = result["mail"]
    say(f"  sends ok {mail['sends_ok']}, kept once {mail['kept_once']}, duplicated "
        f"{len(mail['duplicated'])}, missing {len(mail['kept_missing'])}, deletes "
        f"{mail['deletes_ok']} (still there {len(mail['deleted_still_there'])})")
    return result
