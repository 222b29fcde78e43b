"""The mail part of docs/benchmarks.md: anchors beside mailsocketd's mail commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plots
from report_util import count, millis, table, times
from stats import ratio
from verdict import Target, judge

CHECK_TARGET = Target("<", 1.0)  # ms, median `check` on 100,000 messages
LIST_TARGET = Target("<=", 1.5)  # `list 20` on 100,000 over `list 20` on 10
PUSH_TARGET = Target("<", 1000.0)  # ms, each new message

BOXES = (("alice", "10 messages"), ("bob", "100,000 messages"))


def _daemon(mail: dict[str, Any], key: str) -> tuple[dict[str, Any] | None, str]:
    """A mailsocketd result and, where it is missing, the reason to print instead."""
    daemon = mail.get("mailsocketd", {})
    if "unavailable" in daemon:
        return None, f"not measured (mail commands not available: {daemon['unavailable']})"
    part = daemon.get(key)
    if part is None:
        return None, "not measured"
    if "failed" in part:
        return None, f"not measured (failed: {part['failed']})"
    return part, ""


def _row_value(mail: dict[str, Any], row: str) -> tuple[float | None, str]:
    """(median ms, text) of one mailsocketd row such as ``check/bob``."""
    rows, why = _daemon(mail, "rows")
    if rows is None or row not in rows:
        return None, why or "not measured"
    r = rows[row]
    return r["median_ms"], f"{millis(r['median_ms'])} (p99 {millis(r['p99_ms'])})"


Way = tuple[str, str, list[float | None], list[str]]  # colour, label, values, texts


def _anchor_ways(anchors: dict[str, Any], picks: list[tuple[str, str, str, str]]) -> list[Way]:
    """Rows of anchor figures: (colour, label, script, result key) -> values per mailbox."""
    ways: list[Way] = []
    for color, label, script, key in picks:
        values: list[float | None] = [anchors[user][script][key] for user, _ in BOXES]
        ways.append((color, label, values, [millis(v) for v in values]))
    return ways


def check_part(mail: dict[str, Any], images: Path) -> tuple[list[str], Path]:
    """`check` against PHP's imap_open per check and imaplib."""
    a = mail["anchors"]
    ways = _anchor_ways(a, [
        ("php", "PHP imap_open + imap_status + imap_close per check (the old webmail)",
         "php", "check_ms"),
        ("imaplib_fresh", "imaplib: new connection + LOGIN + STATUS + LOGOUT", "imaplib",
         "fresh_status_ms"),
        ("imaplib_open", "imaplib: STATUS on an open connection", "imaplib",
         "open_status_ms")])
    mine = [_row_value(mail, f"check/{u}") for u, _ in BOXES]
    ways.append(("mailsocketd_mail", "mailsocketd: `check` on the logged-in line session",
                 [v for v, _ in mine], [t for _, t in mine]))
    php_over = [times(ratio(a[u]["php"]["check_ms"], v)) for (u, _), (v, _) in
                zip(BOXES, mine, strict=True)]
    rows = [[label, *texts] for _, label, _, texts in ways]
    rows.append(["PHP's way over mailsocketd's", *php_over])
    png = plots.grouped_bars(
        images / "mail_check.png", "Checking a mailbox (lower is better)", "ms (log scale)",
        [box for _, box in BOXES], [(c, _short(lbl), v) for c, lbl, v, _ in ways], log=True,
        value_format="{:.2f}", missing="not measured", target=(1.0, "target: 1 ms"))
    return ["### check", "",
            f"![Checking a mailbox]({png.parent.name}/{png.name})", "",
            *table(["way", *[box for _, box in BOXES]], rows), ""], png


def _short(label: str) -> str:
    """A legend label: the way's name without its explanation."""
    separator = ":" if label.startswith("mailsocketd") else " ("
    return label.split(separator, maxsplit=1)[0]


def list_part(mail: dict[str, Any], images: Path) -> tuple[list[str], Path]:
    """`list 20` (envelopes of the 20 newest) against the anchors."""
    a = mail["anchors"]
    ways = _anchor_ways(a, [
        ("php", "PHP imap_open + 20 imap_headerinfo calls + imap_close", "php", "list20_ms"),
        ("imaplib_open", "imaplib: FETCH 20 ENVELOPE on an open connection", "imaplib",
         "fetch20_ms")])
    mine = [_row_value(mail, f"list20/{u}") for u, _ in BOXES]
    ways.append(("mailsocketd_mail", "mailsocketd: `list 20` on the logged-in line session",
                 [v for v, _ in mine], [t for _, t in mine]))
    rows = [[label, *texts, times(ratio(values[1], values[0]))]
            for _, label, values, texts in ways]
    png = plots.grouped_bars(
        images / "mail_list.png", "Listing the 20 newest messages (lower is better)",
        "ms (log scale)", [box for _, box in BOXES],
        [(c, _short(lbl), v) for c, lbl, v, _ in ways], log=True, value_format="{:.2f}",
        missing="not measured")
    return ["### list 20", "",
            f"![Listing the 20 newest messages]({png.parent.name}/{png.name})", "",
            *table(["way", *[box for _, box in BOXES], "100,000 over 10"], rows), ""], png


def read_part(mail: dict[str, Any]) -> list[str]:
    """`read` of the 2 MB message: latency and the daemon's peak memory."""
    rows, why = _daemon(mail, "rows")
    size = mail["mailboxes"]["big_bytes"]
    head = [f"`read UID` of a {size / 1024 / 1024:.1f} MB message (a short text part and a "
            "base64 attachment) in the 10-message mailbox; peak memory is the daemon's VmHWM "
            "(/proc/PID/status) before the first read and after the last.", ""]
    if rows is None or "read_big" not in rows:
        return ["### read a 2 MB message", "", *head, why or "not measured", ""]
    r = rows["read_big"]
    cells = [[f"{millis(r['median_ms'])} (p99 {millis(r['p99_ms'])}, {r['rounds']} reads)",
              f"{r['hwm_before_kb'] / 1024:,.1f} MB → {r['hwm_after_kb'] / 1024:,.1f} MB",
              f"{count(r['reply_lines'])} lines, {count(r['reply_chars'])} characters"]]
    return ["### read a 2 MB message", "", *head,
            *table(["latency", "daemon peak RSS", "reply"], cells), ""]


def push_part(mail: dict[str, Any], images: Path) -> tuple[list[str], Path]:
    """Push (`watch on`) against polling at the usual intervals (computed)."""
    push, why = _daemon(mail, "push")
    php_check = mail["anchors"]["alice"]["php"]["check_ms"]
    rows = [["mailsocketd `watch on`: the `* new mail` line (measured)",
             f"{millis(push['median_ms'])} (max {millis(push['max_ms'])}, "
             f"{len(push['samples_ms'])} messages)" if push else why, "-"]]
    bars: list[tuple[str, str, float | None, str]] = [
        ("mailsocketd_mail", "mailsocketd watch (measured)",
         push["median_ms"] / 1000 if push else None,
         f"{push['median_ms'] / 1000:.2f} s" if push else "not measured")]
    for interval in mail["poll_intervals_s"]:
        mean_s = interval / 2 + php_check / 1000
        rows.append([f"polling every {interval} s with the PHP check (computed)",
                     f"{mean_s:,.1f} s on average", f"{interval + php_check / 1000:,.1f} s"])
        bars.append(("php", f"polling every {interval} s (computed)", mean_s,
                     f"{mean_s:,.0f} s on average"))
    png = plots.horizontal_bars(images / "mail_push.png",
                                "New mail: from SMTP submission to the client knowing",
                                "seconds (log scale, lower is better)", bars,
                                target=(1.0, "target: 1 s"))
    return ["### Push: new mail", "",
            "A message is handed to Postfix over SMTP (smtplib) and delivered to Dovecot over "
            "LMTP; the time runs until a line client that sent `watch on` reads `* new mail`. "
            "Polling is computed, not measured: a poll every I seconds learns of a message I/2 "
            "later on average and I later at worst, plus one check (PHP's measured check on "
            "the 10-message mailbox). 60 s is a typical webmail page refresh, 300 s the "
            "daemon's own default `interval` for configured accounts.", "",
            f"![New mail]({png.parent.name}/{png.name})", "",
            *table(["way", "delay", "worst case"], rows), ""], png


def users_part(mail: dict[str, Any]) -> list[str]:
    """Many users at once: throughput and the daemon's memory."""
    users, why = _daemon(mail, "many_users")
    n = mail["settings"]["users"]
    head = [f"{n} line clients logged in at once (alternately alice and bob), each in a loop: "
            "`check`, `list 20`, `read` of a small message. The clients are Python threads in "
            "one process on CPU 1, with Dovecot. CPU use: the daemon's own (near 100%: the "
            "daemon was the limit), CPU 1 busy (Dovecot, Postfix and the clients; near 100%: "
            "they were), the clients' own.", ""]
    if users is None:
        return ["### Many users", "", *head, why, ""]
    med = users["median_ms"]
    rss = (f"{users['rss_idle_kb'] / 1024:,.1f} → {users['rss_logged_in_kb'] / 1024:,.1f} → "
           f"{users['rss_end_kb'] / 1024:,.1f} MB (peak {users['hwm_kb'] / 1024:,.1f} MB)")
    cpu = (f"{users['daemon_cpu_pct']:.0f}% · {users['cpu1_busy_pct']:.0f}% · "
           if "daemon_cpu_pct" in users else "")
    cells = [[f"{count(users['commands_per_s'])}",
              " / ".join(millis(med[k]) for k in ("check", "list 20", "read")),
              rss, f"{cpu}{users['client_cpu_pct']:.0f}%",
              f"{users['failed_clients']}" + (f" ({users['errors'][0]})" if users["errors"]
                                              else "")]]
    return ["### Many users", "", *head,
            *table(["commands/s", "median check / list 20 / read",
                    "daemon RSS: before login → logged in → end",
                    "CPU: daemon · CPU 1 busy · clients",
                    "failed clients"], cells), ""]


def targets(mail: dict[str, Any]) -> list[list[str]]:
    """The issue's mail targets with the figures that meet them or not.  ``check`` and
    ``list 20`` are single runs of many rounds (a median, a ratio of medians): no spread to
    judge them with.  Push is judged on its median with every message's delay as the spread."""
    check, why = _row_value(mail, "check/bob")
    small, _ = _row_value(mail, "list20/alice")
    big, why_list = _row_value(mail, "list20/bob")
    push, why_push = _daemon(mail, "push")
    r = ratio(big, small)
    return [
        ["`check` through the line service under 1 ms on 100,000 messages",
         millis(check) if check is not None else why, judge(check, CHECK_TARGET).text],
        ["`list 20` on 100,000 messages within 1.5x of `list 20` on 10",
         f"{times(r)} ({millis(big)} vs {millis(small)})" if r is not None else why_list,
         judge(r, LIST_TARGET).text],
        ["push under 1 s", millis(push["median_ms"]) + f" (max {millis(push['max_ms'])})"
         if push else why_push,
         judge(push["median_ms"] if push else None, PUSH_TARGET,
               [*push["samples_ms"], push["max_ms"]] if push else ()).text],
    ]


def section(run: dict[str, Any], images: Path) -> tuple[list[str], list[list[str]], list[Path]]:
    """The mail section: text, target rows, and the plots written."""
    mail = run["results"]
    boxes = mail["mailboxes"]
    s = mail["settings"]
    parts = [
        "## Mail", "",
        f"{run['mode'].capitalize()} run of {run['started']}. A private Dovecot and Postfix on "
        "127.0.0.1 without TLS (the test suite's `tests/integration/mailserver.py`, "
        "`start_free_mailserver(tls=False)`). Mailboxes: alice has 10 messages (9 of about "
        "1.2 KB and the 2 MB one), bob has "
        f"{s['big_mailbox']:,} of about 1.2 KB. Filling bob's took {boxes['populate_big_s']:.1f} s:"
        " `populate` writes the Maildir files directly (tmp/ then rename into cur/) and "
        "lets `doveadm` index them, so no faster way was needed.", "",
        "Anchors: `php benchmarks/anchors/imap_anchor.php PORT USER PW ROUNDS` (Debian's "
        "php-imap) and `python benchmarks/imaplib_anchor.py PORT USER PW ROUNDS`, pinned to "
        f"CPU 1, medians of {s['anchor_rounds']} rounds (10x as many for the cheap imaplib "
        "ones). mailsocketd: the installed daemon pinned to CPU 0, started with the line "
        "section's limits plus `[imap] server = \"tcp:127.0.0.1:IMAP_PORT\"`, "
        "`allow_cleartext = true` and `[smtp] server = \"tcp:127.0.0.1:SMTP_PORT\"`, "
        "`from_domain = \"example.test\"`; one line client per mailbox sends `login`, then "
        f"the commands (`check` {s['check_rounds']} times, `list 20` {s['list_rounds']} times"
        ", the two clients taking turns, so a change in the machine's load falls on both "
        "alike). Dovecot "
        "and Postfix inherit CPU 1 from the benchmark, so the daemon has CPU 0 to itself.", ""]
    pngs: list[Path] = []
    for build in (check_part, list_part):
        text, png = build(mail, images)
        parts += text
        pngs.append(png)
    parts += read_part(mail)
    text, png = push_part(mail, images)
    parts += text + users_part(mail)
    pngs.append(png)
    return parts, targets(mail), pngs
