"""The long run's part of docs/benchmarks.md (issue 16): memory over time, accounts watching
through faults, mail delivered exactly once, the line service unaffected; and the same load
without faults (the ``calm`` section), the mail load of the memory goal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plots
from report_util import count, millis, table

RSS_FLAT_MB = 2.0  # the goal: after warm-up, RSS within 2 MB over the load
BACK_NEAR_START_MB = 2.0  # after the load: within this of the level after warm-up
WATCHING_SHARE = 0.90
WATCHING_AGAIN_S = 5.0


IMAP_FAULTS = ("dovecot-restart", "dovecot-crash", "dovecot-down")  # Postfix's leave IMAP be


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def share_while_up(r: dict[str, Any], share: float) -> float:
    """A share of the load's time turned into a share of the time Dovecot was up: no account
    can watch while its server is down (the long outages alone are 11% of a full run)."""
    load_s = float(r["settings"]["minutes"]) * 60
    down = sum(float(f["back_s"]) - float(f["began_s"]) for f in r["faults"]
               if f["kind"] in IMAP_FAULTS)
    return min(1.0, share * load_s / max(1.0, load_s - down))


def with_faults(r: dict[str, Any]) -> bool:
    """Whether the run had faults (runs before the calm mode all had)."""
    return bool(r["settings"].get("faults", True))


def run_name(r: dict[str, Any]) -> str:
    return "long run" if with_faults(r) else "long run without faults"


def memory_targets(r: dict[str, Any]) -> list[list[str]]:
    """The memory goal's two rows: flat after warm-up, and back near its level after it."""
    m = r["memory"]
    spread = (m["steady_max_mb"] or 0) - (m["steady_min_mb"] or 0)
    after = m["after_end_mb"]
    name = run_name(r)
    return [
        [f"{name}: RSS flat after warm-up, within 2 MB (issue 16)",
         f"{m['steady_min_mb']}-{m['steady_max_mb']} MB ({spread:.2f} MB) over "
         f"{r['settings']['minutes']:g} min", _yes(spread <= RSS_FLAT_MB)],
        [f"{name}: RSS back near its start after the load (within 2 MB of the level after "
         "warm-up)",
         f"{after} MB {r['settings']['after_s']:g} s after, {m['warm_mb']} MB after warm-up",
         _yes(after is not None and after - m["warm_mb"] <= BACK_NEAR_START_MB)],
    ]


def targets(long: dict[str, Any]) -> list[list[str]]:
    """Rows of the report's targets table."""
    r = long["results"]
    mail = r["mail"]
    exact = (not mail["duplicated"] and not mail["kept_missing"]
             and not mail["deleted_still_there"] and mail["queue_empty"])
    delivered = [f"{run_name(r)}: each accepted send delivered once, each delete exact",
                 f"{mail['sends_ok']:,} sends, {mail['deletes_ok']:,} deletes", _yes(exact)]
    if not with_faults(r):
        return [*memory_targets(r), delivered]
    restarts = [f for f in r["faults"] if f["kind"] in ("dovecot-restart", "dovecot-crash")]
    worst = max((f["accounts_watching_after_s"] for f in restarts
                 if f["accounts_watching_after_s"] is not None), default=None)
    unrecovered = sum(1 for f in restarts if f["accounts_watching_after_s"] is None)
    share = min(r["accounts_watching_share"].values())
    up_share = share_while_up(r, share)
    return [
        *memory_targets(r),
        ["long run: accounts watching >= 90% of the time (Dovecot up)",
         f"about {up_share:.0%} of the time Dovecot was up, {share:.1%} of all "
         "(the lesser of the two accounts)", _yes(up_share >= WATCHING_SHARE)],
        ["long run: accounts watching within 5 s of each restart",
         f"worst {worst} s over {len(restarts)} restarts"
         + (f", {unrecovered} never" if unrecovered else ""),
         _yes(worst is not None and worst <= WATCHING_AGAIN_S and not unrecovered)],
        delivered,
    ]


def _tail_range(r: dict[str, Any]) -> str:
    """Where RSS ended up: its range from 3 minutes before the load's end to the run's end
    (the growth is in steps at the first faults' reconnection bursts, then levels off)."""
    load_s = float(r["settings"]["minutes"]) * 60
    tail = [float(v) for t, v in r["rss_mb"] if t >= load_s - 180]
    return f"{min(tail):.2f}-{max(tail):.2f} MB" if tail else "-"


def _kinds_text(r: dict[str, Any]) -> str:
    """Where RSS is: glibc malloc (main heap and thread arenas), other anonymous memory
    (mostly pymalloc's arenas of Python objects) and files, after warm-up, their range over
    the load, and after it."""
    k = r.get("memory_by_kind") or {}
    if not k:
        return "not sampled in this run"
    names = {"malloc": "glibc malloc (heap, arenas)",
             "anonymous": "other anonymous (pymalloc's Python objects, stacks)",
             "files": "files (code, libraries)"}
    parts = []
    for key, name in names.items():
        low, high = k["steady_range"].get(key, [None, None])
        parts.append(f"{name}: {k['warm'][key]} MB after warm-up, {low}-{high} MB over the "
                     f"load, {k['end'][key]} MB at the end")
    return "; ".join(parts)


def _where_text(r: dict[str, Any]) -> str:
    """One paragraph: which kind of memory moved after warm-up, and whether it levelled off
    (its range over the load's last 4 minutes)."""
    k = r.get("memory_by_kind") or {}
    samples = r.get("memory_by_kind_mb") or []
    if not k or not samples:
        return "Memory by kind was not sampled in this run."
    load_s = float(r["settings"]["minutes"]) * 60
    tail = [v["anonymous"] for t, v in samples if load_s - 240 <= t <= load_s]
    low, high = k["steady_range"]["malloc"]
    return (f"After warm-up, glibc's malloc stayed within {high - low:.2f} MB (trimmed every "
            f"10 s: each trim gives back what was freed since, then the load takes part of it "
            f"again). Python's own allocator (pymalloc, in *other anonymous*) grew "
            f"{k['load_end']['anonymous'] - k['warm']['anonymous']:.2f} MB over the load"
            + (", in steps at the reconnection bursts" if with_faults(r) else "")
            + ": it keeps its free pools, and returns a 1 MB arena only when nothing in it is "
            f"alive; over the load's last 4 minutes it held {min(tail, default=0):.2f}-"
            f"{max(tail, default=0):.2f} MB.")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _faults_table(r: dict[str, Any]) -> list[str]:
    untouched = "not affected (IMAP)"
    rows = [[f["kind"], f"{f['began_s']:.0f} s", f"{f['back_s'] - f['began_s']:.1f} s",
             *((_seconds(f["accounts_watching_after_s"]),
                _seconds(f["watchers_again_after_s"])) if f["kind"] in IMAP_FAULTS
               else (untouched, untouched)),
             _seconds(f["mail_users_ok_after_s"])] for f in r["faults"]]
    return table(["fault", "at", "server down", "accounts watching again after",
                  "watchers watching again after", "every mail user served again after"],
                 rows)


def section(long: dict[str, Any], images: Path
            ) -> tuple[list[str], list[list[str]], list[Path]]:
    """The section's Markdown, its rows of the targets table, and its plot."""
    r = long["results"]
    s, m, mail = r["settings"], r["memory"], r["mail"]
    spans = [(f["began_s"], f["back_s"], f["kind"]) for f in r["faults"]]
    load_s = s["minutes"] * 60
    faults = with_faults(r)
    png = plots.time_series(
        images / ("long_rss.png" if faults else "calm_rss.png"),
        f"Daemon memory over the {run_name(r)} (flat is good)", "RSS, MB",
        [("mailsocketd", "mailsocketd RSS", [(t, v) for t, v in r["rss_mb"]])],
        spans=[*spans, (load_s, load_s + 1, "load stops")],
        bands=[(m["warm_mb"] - RSS_FLAT_MB / 2, m["warm_mb"] + RSS_FLAT_MB / 2,
                "2 MB around the level after warm-up")])
    c = r["commands"]
    lat, during = r["time_latency"], r["time_latency_during_faults"]
    bad = r["misbehaving"]
    slow = bad.get("slowloris", {})
    if faults:
        title = "## Long run: a bad day, bounded (issue 16)"
        command = "`bash benchmarks/run.sh --only long` (`--quick` for a short one): "
        fault_text = (
            f" Every {s['fault_every_s']:g} s a fault, in turn: Dovecot restarted, Dovecot "
            f"killed and started, Dovecot stopped for {s['dovecot_down_s']:g} s, Postfix "
            f"stopped for {s['postfix_down_s']:g} s.")
    else:
        title = "## Long run without faults: the memory goal's mail load (issue 16)"
        command = ("`bash benchmarks/run.sh --only calm`: the long run's load with no fault "
                   "(the mail servers stay up): ")
        fault_text = ""
    lines = [
        title, "",
        command +
        f"{s['minutes']:g} minutes of load, then {s['after_s']:g} s with the daemon alone. "
        "A real Dovecot and Postfix on loopback with TLS (every IMAP and SMTP connection of the "
        "daemon does verified STARTTLS), the daemon watching two accounts; meanwhile "
        f"{s['time_connections']} connections asking `time` every "
        f"{s['time_every_s'] * 1000:.0f} ms plus a short connection every "
        f"{s['short_every_s'] * 1000:.0f} ms, {s['mail_users_per_account'] * 2} mail users "
        f"each sending a message, then `check`, `list 20`, `read` and `delete` every "
        f"{s['mail_loop_s']:g} s, two watchers, and misbehaving clients (a 1 MB line, binary "
        "garbage, a client that sends 2 MB of requests and never reads, a slowloris)."
        + fault_text + " The daemon runs as installed, with its malloc upkeep (malloc arenas "
        "capped at 2, `malloc_trim` every 10 s: see [operations.md](operations.md#memory)).",
        "",
        f"![Daemon memory over the {run_name(r)}]({png.parent.name}/{png.name})", "",
        *table(["", "figure"], [
            ["commands", f"{count(c.get('time'))} `time` ({count(c.get('short_connections'))} "
                         f"on short connections), {count(c.get('send'))} `send`, "
                         f"{count(c.get('check'))} `check`, {count(c.get('list'))} `list`, "
                         f"{count(c.get('read'))} `read`, {count(c.get('delete'))} `delete`"],
            ["`time` latency", f"median {millis(lat.get('median_ms'))}, p99 "
                               f"{millis(lat.get('p99_ms'))}, max {millis(lat.get('max_ms'))}"],
            *([["`time` latency during faults (to 10 s after)",
                f"median {millis(during.get('median_ms'))}, p99 "
                f"{millis(during.get('p99_ms'))}"]] if faults else []),
            ["`time` errors", str(sum(r["time_errors"].values()))],
            ["RSS", f"{m['start_mb']} MB at start, {m['warm_mb']} MB after "
                    f"{s['warmup_s']:g} s of warm-up, {m['steady_min_mb']}-"
                    f"{m['steady_max_mb']} MB from then to the end of the load "
                    f"(slope {m['steady_slope_mb_per_min']} MB/min), {m['after_end_mb']} MB "
                    f"{s['after_s']:g} s after it; {r['threads_max']} threads at most"],
            ["RSS over the load's last 3 minutes and after it", _tail_range(r)],
            ["RSS by kind of mapping (/proc/PID/smaps, every 10 s)", _kinds_text(r)],
            ["accounts watching (logged in: idling, checking, or between the two)",
             ", ".join(f"{k} {v:.1%}" for k, v in r["accounts_watching_share"].items())
             + " of the load's time ("
             + ", ".join(f"{k} about {share_while_up(r, v):.0%}"
                         for k, v in r["accounts_watching_share"].items())
             + " of the time Dovecot was up); in IDLE itself "
             + ", ".join(f"{k} {v:.1%}" for k, v in r["accounts_idling_share"].items())
             + " (new mail ends IDLE, and it restarts at most once a second)"],
            ["mail", f"{mail['sends_ok']:,} sends accepted, {mail['kept_once']:,} of those "
                     f"not deleted found exactly once, {len(mail['kept_missing'])} missing, "
                     f"{len(mail['duplicated'])} twice; {mail['deletes_ok']:,} deletes, "
                     f"{len(mail['deleted_still_there'])} still there; "
                     f"{mail['sends_failed']} sends refused during faults "
                     f"({len(mail['failed_but_delivered'])} of them delivered anyway)"],
            ["watchers", f"{r['watchers']['new_mail']:,} `* new mail` lines, "
                         f"{r['watchers']['sessions_lost']} sessions lost to faults"],
            ["misbehaving clients",
             "; ".join(f"{k}: " + ", ".join(f"{n}x {o}" for o, n in v["outcomes"].items())
                       for k, v in bad.items())],
            ["slowloris held", (", ".join(f"{x:g} s" for x in slow.get("held_s", []))
                                or "-")],
            ["daemon", f"{r['daemon_log']['tracebacks']} tracebacks in its log; "
                       f"{'alive' if r['daemon_alive'] else '**dead**'} at the end"],
        ]), "",
    ]
    lines += [_where_text(r), ""]
    if faults:
        lines += ["Recovery after each fault (seconds after the server was back; the accounts "
                  "from their `status`, sampled every 0.5 s):", "", *_faults_table(r), ""]
    if mail["failed_errors"]:
        lines += ["Sends refused during faults, by reply: "
                  + "; ".join(f"{n}x `{e}`" for e, n in mail["failed_errors"].items()), ""]
    return lines, targets(long), [png]
