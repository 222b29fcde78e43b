"""The line-service part of docs/benchmarks.md: tables, targets and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plots
from report_util import count, micros, table, times
from stats import (
    MEMORY_TARGET_KB,
    Figure,
    idle_failure,
    line_figures,
    per_conn_kb,
    ratio,
    repetition_ratios,
    rps,
    startup_median,
)
from verdict import Target, Verdict, judge

THROUGHPUT_TARGET = Target(">=", 0.9)  # mailsocketd / twisted_min req/s
CONNRATE_TARGET = Target(">=", 50)  # mailsocketd / seed_fork connections/s
MEMORY_TARGET = Target("<=", MEMORY_TARGET_KB)  # KB per idle connection, 10,000 held
METRICS_TARGET = Target(">=", 0.95)  # with [metrics] / without: counting costs a few % at most
METRICS = "mailsocketd_metrics"
# counting requests ([metrics]): at most this % of mailsocketd's CPU per request ("a few
# percent"; the same line as METRICS_TARGET's 0.95x, which runs before metrics_cost.py judged)
METRICS_COST_TARGET = Target("<=", 5.0)
# count_cost.py's shapes, the workload whose req/s gives the CPU per request, and a label
SHAPE_WORKS = [("pipelined", "pipe16", "100 connections, pipelining 16"),
               ("single", "rr100", "100 connections, one request per read")]

RR_WORKS = ["rr1", "rr100", "rr1000", "pipe16"]
MAILSOCKETD_ROWS = ["mailsocketd", "mailsocketd_log"]
BASE = "twisted_min"
FORK = "seed_fork"


def _labels(line: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    kinds = {k["key"]: k["label"] for k in line["kinds"]}
    works = {w["key"]: w["label"] for w in line["workloads"]}
    return kinds, works


def _cell(figures: dict[tuple[str, str], Figure], na: dict[str, str], kind: str,
          work: str, base: float | None) -> str:
    figure = figures.get((kind, work))
    if figure is None:
        return na.get(f"{kind}/{work}", "not run")
    if figure.failure:
        return figure.failure
    value = figure.median["rps"]
    suffix = f" ({times(ratio(value, base))})" if kind.startswith("mailsocketd") and base else ""
    return f"{count(value)}{suffix}"


def throughput(line: dict[str, Any], figures: dict[tuple[str, str], Figure],
               images: Path) -> tuple[list[str], Path]:
    """Requests per second with 1, 100, 1,000 busy connections and pipelining."""
    kinds, works = _labels(line)
    na = line["not_applicable"]
    rows = []
    for kind in kinds:
        rows.append([kinds[kind], *[_cell(figures, na, kind, w, rps(figures, BASE, w))
                                    for w in RR_WORKS]])
    png = plots.grouped_bars(
        images / "line_throughput.png", "Requests per second (higher is better)", "requests/s",
        [works[w].replace(", ", ",\n") for w in RR_WORKS],
        [(k, kinds[k], [rps(figures, k, w) for w in RR_WORKS]) for k in kinds])
    text = ["### Requests per second", "",
            "Closed loop: each connection sends `time` and waits for the reply (with pipelining, "
            "16 requests in one write, then waits for the 16 replies). In brackets: mailsocketd "
            f"over {kinds[BASE]} in the same repetitions. The seeds cannot pipeline: they read "
            "a raw 4096-byte chunk and answer only the first command in it.", "",
            f"![Requests per second]({png.parent.name}/{png.name})", "",
            *table(["server", *[works[w] for w in RR_WORKS]], rows), ""]
    return text, png


def latency(line: dict[str, Any], figures: dict[tuple[str, str], Figure],
            images: Path) -> tuple[list[str], Path]:
    """p50 / p99 latency per workload."""
    kinds, works = _labels(line)
    rows = []
    for kind in kinds:
        cells = []
        for w in RR_WORKS:
            f = figures.get((kind, w))
            cells.append("-" if f is None or f.failure else
                         f"{micros(f.median['p50_us'])} / {micros(f.median['p99_us'])}")
        rows.append([kinds[kind], *cells])

    def p99(kind: str, work: str) -> float | None:
        f = figures.get((kind, work))
        return None if f is None or f.failure else f.median["p99_us"] / 1000

    png = plots.grouped_bars(
        images / "line_latency_p99.png", "99th percentile latency (lower is better)",
        "ms (log scale)", [works[w].replace(", ", ",\n") for w in RR_WORKS],
        [(k, kinds[k], [p99(k, w) for w in RR_WORKS]) for k in kinds], log=True,
        value_format="{:.2f}")
    text = ["### Latency", "",
            "From sending a request (or a batch of 16) to its reply; p50 / p99.", "",
            f"![99th percentile latency]({png.parent.name}/{png.name})", "",
            *table(["server", *[works[w] for w in RR_WORKS]], rows), ""]
    return text, png


def connect_rate(line: dict[str, Any], figures: dict[tuple[str, str], Figure],
                 images: Path) -> tuple[list[str], Path]:
    """New connections per second: connect, `time`, read, close."""
    kinds, _ = _labels(line)
    fork = rps(figures, FORK, "connrate")
    rows = []
    bars = []
    for kind in kinds:
        f = figures.get((kind, "connrate"))
        value = rps(figures, kind, "connrate")
        rows.append([kinds[kind], f.failure if f and f.failure else count(value),
                     "-" if f is None or f.failure else micros(f.median["p50_us"]),
                     "-" if f is None or f.failure else micros(f.median["p99_us"]),
                     times(ratio(value, fork))])
        over = ratio(value, fork)
        label = f"{count(value)}/s" + (f"  ({times(over)} the fork server)"
                                       if over and kind != FORK else "")
        bars.append((kind, kinds[kind], value, label if value else "fails"))
    png = plots.horizontal_bars(images / "line_connect_rate.png",
                                "New connections per second (higher is better)",
                                "connections/s (log scale)", bars)
    text = ["### New connections per second", "",
            "8 workers, each in a loop: connect, send `time`, read the reply, close. Latency is "
            "from `connect()` to the reply.", "",
            f"![New connections per second]({png.parent.name}/{png.name})", "",
            *table(["server", "connections/s", "p50", "p99", "over seed_fork"], rows), ""]
    return text, png


def memory(line: dict[str, Any], images: Path) -> tuple[list[str], Path]:
    """Memory per idle connection with N connections held open."""
    kinds, _ = _labels(line)
    idle = line["idle"]
    n = line["settings"]["idle_conns"]
    rows = []
    bars = []
    for kind, r in idle.items():
        failure = idle_failure(r)
        per = per_conn_kb(r)
        rows.append([kinds[kind], f"{r['ok']:,} of {r['conns']:,}",
                     _kb(r["rss_per_conn_b"]), _kb(r["pss_per_conn_b"]),
                     f"{r['base_pss_kb'] / 1024:,.1f} MB → {r['held_pss_kb'] / 1024:,.1f} MB",
                     f"{r['processes']:,}", failure or ""])
        bars.append((kind, kinds[kind], per, _memory_label(r, per)))
    png = plots.horizontal_bars(images / "line_memory.png",
                                f"Memory per idle connection, {n:,} held (lower is better)",
                                "KB of PSS per connection (log scale)",
                                bars, target=(4.0, "target: 4 KB"))
    text = ["### Memory per idle connection", "",
            f"{n:,} connections opened (each served one `time`) and held idle. Per connection ="
            " (memory holding them - memory before) / connections held, from "
            "/proc/PID/smaps_rollup of the server and all its child processes. PSS "
            "(proportional set size) splits each shared page among the processes sharing it; "
            "RSS counts it once per process, which is why the fork server's RSS per connection "
            "is so large. The plot and the target use PSS. The seeds' connections are opened "
            "one at a time (their listen backlog is 0); the new client asked for `time` while "
            "the connections were held shows whether the server still served.", "",
            f"![Memory per idle connection]({png.parent.name}/{png.name})", "",
            *table(["server", "held", "RSS per connection", "PSS per connection",
                    "PSS before → holding", "processes", "note"], rows), ""]
    return text, png


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}%"


def _memory_label(idle: dict[str, Any], per: float | None) -> str:
    """The short text at the end of a memory bar."""
    if idle["ok"] < idle["conns"]:
        return f"fails: held {idle['ok']:,} of {idle['conns']:,}"
    if per is None:
        return "-"
    if per > MEMORY_TARGET_KB:
        return f"{per:,.0f} KB: fails, {per / MEMORY_TARGET_KB:,.0f}x the target"
    return f"{per:,.1f} KB"


def _kb(value: float | None) -> str:
    return "-" if value is None or value <= 0 else f"{value / 1024:,.1f} KB"


def startup(line: dict[str, Any]) -> list[str]:
    """Start-up: from the command to the first answered `time`."""
    kinds, _ = _labels(line)
    rows = []
    for kind in kinds:
        value = startup_median(line, kind)
        rows.append([kinds[kind], "-" if value is None else f"{value * 1000:,.0f} ms"])
    return ["### Start-up time", "",
            "From starting the command (`taskset -c 0 twistd -n ...`, `php ...`) to the first "
            "answered `time`, polled every 2 ms; median of the repetitions.", "",
            *table(["server", "start-up"], rows), ""]


def generator_load(line: dict[str, Any], figures: dict[tuple[str, str], Figure]) -> list[str]:
    """The load generator's own CPU use and both CPUs' busy shares, per workload."""
    kinds, works = _labels(line)
    keys = [*RR_WORKS, "connrate"]
    rows = []
    for kind in kinds:
        cells = []
        for w in keys:
            f = figures.get((kind, w))
            if f is None:
                cells.append("-")
                continue
            server = others = "n/a"
            if kind != FORK:
                server = f"{f.median['server_cpu_pct']:.0f}%"
                others = _pct(f.median.get("cpu0_others_pct"))
            cells.append(f"{f.median['loadgen_cpu_pct']:.0f}% · {server} · {others}")
        rows.append([kinds[kind], *cells])
    steal = max((f.high["steal"] for f in figures.values()), default=0.0)
    shares = [f.median["cpu0_interrupts_pct"] for f in figures.values()
              if "cpu0_interrupts_pct" in f.median]
    interrupts = f"{min(shares):.0f}-{max(shares):.0f}%" if shares else "not recorded"
    return ["### CPU use: is the generator or the server the limit?", "",
            "Per cell, medians: **loadgen's own CPU** (near 100%: the generator was the limit) "
            "· **the server's own CPU** (its user + system time over the run, from "
            "/proc/PID/stat; well below 100% under load while loadgen is far from 100% means "
            "the server did not get its CPU) · **other programs on CPU 0** (process time on the "
            "server's CPU that was not the server's, from /proc/stat; a lower bound, as the "
            "kernel may charge some interrupt time to the server too: well above 0 means "
            "something else competed for the server's CPU). Both are n/a for the fork "
            "server, whose children come and go with the connections. The rest of CPU 0 is "
            f"interrupt work (loopback networking: {interrupts}) and idle time. "
            f"Highest steal seen: {steal:.1f}%.", "",
            *table(["server", *[works[w] for w in keys]], rows), ""]


def repetitions(line: dict[str, Any]) -> list[str]:
    """Every repetition's req/s, for the spread behind the medians."""
    kinds, works = _labels(line)
    keys = [*RR_WORKS, "connrate"]
    rows = []
    for kind in kinds:
        cells = []
        for w in keys:
            values = [rep[kind][w]["rps"] for rep in line["repetitions"] if w in rep.get(kind, {})]
            cells.append(" / ".join(count(v) for v in values) or "-")
        rows.append([kinds[kind], *cells])
    return ["<details><summary>Every repetition (requests or connections per second)</summary>",
            "", *table(["server", *[works[w] for w in keys]], rows), "", "</details>", ""]


def targets(line: dict[str, Any], figures: dict[tuple[str, str], Figure]) -> list[list[str]]:
    """The issue's line-service targets with the figures that meet them or not.  The ratios
    are judged with their spread by repetition (see verdict.judge)."""
    kinds, _ = _labels(line)
    rows = []
    for kind in MAILSOCKETD_ROWS:
        for w, n in (("rr100", "100"), ("rr1000", "1,000")):
            r = ratio(rps(figures, kind, w), rps(figures, BASE, w))
            # The target is for the daemon as installed; --log-commands (an event per
            # command, for tracing) is shown beside it for its cost, not judged.
            verdict = (judge(r, THROUGHPUT_TARGET, repetition_ratios(line, kind, BASE, w)).text
                       if kind == "mailsocketd"
                       else "for information (tracing, not the target)")
            rows.append([f">= 0.9x twisted_min throughput at {n} connections ({kinds[kind]})",
                         f"{times(r)} ({count(rps(figures, kind, w))} vs "
                         f"{count(rps(figures, BASE, w))} req/s{_spread(line, kind, BASE, w)})",
                         verdict])
    idle = line["idle"].get("mailsocketd")
    if idle is not None:
        per = per_conn_kb(idle)
        full = idle["conns"] >= 10_000
        if per is None or not full:
            idle_verdict = Verdict.NOT_MEASURED
        elif idle_failure(idle) is not None:  # not all held, or no new client served
            idle_verdict = Verdict.NOT_MET
        else:
            idle_verdict = judge(per, MEMORY_TARGET)  # one measurement: no spread
        rows.append(["10,000 connections held with <= 4 KB each",
                     f"{idle['ok']:,} held, {per or 0:,.1f} KB each"
                     + ("" if full else " (quick run: fewer than 10,000)"), idle_verdict.text])
    rows += metrics_targets(line, figures)
    r = ratio(rps(figures, "mailsocketd", "connrate"), rps(figures, FORK, "connrate"))
    rows.append([">= 50x the fork server's connection rate",
                 f"{times(r)} ({count(rps(figures, 'mailsocketd', 'connrate'))} vs "
                 f"{count(rps(figures, FORK, 'connrate'))} connections/s"
                 f"{_spread(line, 'mailsocketd', FORK, 'connrate')})",
                 judge(r, CONNRATE_TARGET,
                       repetition_ratios(line, "mailsocketd", FORK, "connrate")).text])
    return rows


def metrics_targets(line: dict[str, Any], figures: dict[tuple[str, str], Figure]
                    ) -> list[list[str]]:
    """The cost of counting requests ([metrics]) as a share of a request's CPU: the counting
    code's own cost, measured in one process (metrics_cost.py), over mailsocketd's CPU time
    per request at the workload of the same shape."""
    cost = line.get("metrics_cost")
    if not cost:
        return _old_metrics_targets(line, figures)
    rows = []
    for shape, work, label in SHAPE_WORKS:
        share = count_share(cost, figures, shape, work)
        if share is None:
            rows.append([f"[metrics] costs at most {METRICS_COST_TARGET.threshold:g}% of a "
                         f"request ({label})", "not measured", Verdict.NOT_MEASURED.text])
            continue
        value, spread, per_request = share
        inside = cost["in_process"][shape]
        rows.append([f"[metrics] costs at most {METRICS_COST_TARGET.threshold:g}% of a request "
                     f"({label})",
                     f"{value:.1f}% (+{inside['delta_ns']:.0f} ns of {per_request:,.0f} ns per "
                     f"request; {min(spread):.1f}% to {max(spread):.1f}% by block)",
                     judge(value, METRICS_COST_TARGET, spread).text])
    return rows


def count_share(cost: dict[str, Any], figures: dict[tuple[str, str], Figure], shape: str,
                work: str) -> tuple[float, list[float], float] | None:
    """(% of a request's CPU, that % for each block of pairs, ns of CPU per request), where
    mailsocketd's CPU per request is 1 / its median req/s at ``work``, where it keeps its CPU
    busy (server CPU 99-100%, see Load generator); None when either is missing."""
    inside = cost.get("in_process", {}).get(shape)
    served = rps(figures, "mailsocketd", work)
    if inside is None or not served:
        return None
    per_request = 1e9 / served
    return (100 * inside["delta_ns"] / per_request,
            [100 * d / per_request for d in inside["block_delta_ns"]], per_request)


def _old_metrics_targets(line: dict[str, Any], figures: dict[tuple[str, str], Figure]
                         ) -> list[list[str]]:
    """Runs from before metrics_cost.py: [metrics] as a kind of the repetitions."""
    if (METRICS, "rr100") not in figures:
        return []  # a run from before [metrics] existed
    rows = []
    for w, n in (("rr100", "100"), ("rr1000", "1,000"), ("pipe16", "100 pipelining")):
        r = ratio(rps(figures, METRICS, w), rps(figures, "mailsocketd", w))
        rows.append([f"[metrics] costs a few % at most: >= 0.95x without it ({n} connections)",
                     f"{times(r)} ({count(rps(figures, METRICS, w))} vs "
                     f"{count(rps(figures, 'mailsocketd', w))} req/s"
                     f"{_spread(line, METRICS, 'mailsocketd', w)})",
                     judge(r, METRICS_TARGET,
                           repetition_ratios(line, METRICS, "mailsocketd", w)).text])
    return rows


def metrics_overhead(line: dict[str, Any], figures: dict[tuple[str, str], Figure]
                     ) -> list[str]:
    """The metrics-overhead paragraphs and tables."""
    cost = line.get("metrics_cost")
    if not cost:
        return _old_metrics_overhead(line, figures)
    _, works = _labels(line)
    inside_rows = []
    for shape, work, label in SHAPE_WORKS:
        inside = cost["in_process"][shape]
        share = count_share(cost, figures, shape, work)
        blocks = ", ".join(f"{d:.0f}" for d in inside["block_delta_ns"])
        inside_rows.append([
            label, f"{inside['off_ns_median']:,.0f} ns", f"{inside['on_ns_median']:,.0f} ns",
            f"+{inside['delta_ns']:.0f} ns ({blocks})",
            "-" if share is None else f"{share[2]:,.0f} ns", "-" if share is None
            else f"{share[0]:.1f}%"])
    paired = cost["paired"]
    pair_rows = []
    for work, pairs in paired["pairs"].items():
        ratios = [p[METRICS] / p["mailsocketd"] for p in pairs]
        pair_rows.append([works[work], str(len(ratios)), times(paired["median_ratio"][work]),
                          f"{times(min(ratios))} to {times(max(ratios))}"])
    return [
        "### Metrics overhead", "",
        "With `[metrics] listen` set, the daemon counts each request by command and outcome "
        "(one list element incremented); everything else the metrics show is read at scrape "
        "time. That counting is measured where it can be told apart from the machine's noise: "
        "in one process (benchmarks/count_cost.py), `time` requests through the daemon's own "
        "protocol and server on an in-memory transport, alternately without and with counting, "
        f"{cost['in_process']['pipelined']['pairs']} pairs per shape, each timing about 20 ms. "
        "The difference (median of the pairs; in brackets, the median of each block of pairs) "
        "is then set against what one request costs the running daemon: 1 / its req/s in the "
        "repetitions above, at the workload of the same shape, where it keeps its CPU busy.",
        "", *table(["shape", "without counting", "with counting", "counting adds",
                    "mailsocketd's CPU per request", "share"], inside_rows), "",
        "End to end, a fresh daemon runs 10-20% faster or slower than the next on this shared "
        "machine, more than the cost to be seen, so the daemons with and without `[metrics]` "
        "are not compared across repetitions. Instead both run side by side and short loads "
        "alternate between them (which one goes first alternates too); the ratio of each pair "
        "(with / without) shows whether anything beyond the counting code (the HTTP endpoint, "
        "a scrape-time collector) costs the line service. It is for information: its spread is "
        "the noise.", "",
        *table(["workload", "pairs", "with / without, median", "by pair"], pair_rows), ""]


def _old_metrics_overhead(line: dict[str, Any], figures: dict[tuple[str, str], Figure]
                          ) -> list[str]:
    """The metrics-overhead paragraph and table of runs from before metrics_cost.py."""
    if (METRICS, "rr100") not in figures:
        return []
    _, works = _labels(line)
    rows = [[works[w], count(rps(figures, "mailsocketd", w)), count(rps(figures, METRICS, w)),
             times(ratio(rps(figures, METRICS, w), rps(figures, "mailsocketd", w)))
             + _spread(line, METRICS, "mailsocketd", w)]
            for w in [*RR_WORKS, "connrate"]]
    return ["### Metrics overhead", "",
            "The same daemon with `[metrics] listen` set (the endpoint served, requests counted "
            "by command and outcome), against it without, in the same repetitions. Everything "
            "else the metrics show is read at scrape time and costs nothing here.", "",
            *table(["workload", "without [metrics]", "with [metrics]", "ratio"], rows), ""]


def _spread(line: dict[str, Any], kind: str, base: str, work: str) -> str:
    """``; 0.85x to 1.02x by repetition`` (empty for fewer than two repetitions)."""
    ratios = repetition_ratios(line, kind, base, work)
    if len(ratios) < 2:
        return ""
    return f"; {times(min(ratios))} to {times(max(ratios))} by repetition"


def section(run: dict[str, Any], images: Path) -> tuple[list[str], list[list[str]], list[Path]]:
    """The line-service section: text, target rows, and the plots written."""
    line = run["results"]
    s = line["settings"]
    figures = line_figures(line)
    parts: list[str] = [
        "## Line service", "",
        f"{run['mode'].capitalize()} run of {run['started']}: {s['runs']} repetitions, "
        f"{s['seconds']:g} s measured after {s['warmup']:g} s of warm-up per workload. "
        "mailsocketd is started as `twistd -n --pidfile= mailsocketd --config FILE --listen "
        "tcp:PORT:interface=127.0.0.1` (its defaults: connections logged, commands not), "
        "again with `--log-commands` (one log event per command, to a log file)"
        + (", and again with `[metrics] listen` set (see Metrics overhead below). "
           if (METRICS, "rr100") in figures else
           "; the cost of `[metrics]` is measured apart (see Metrics overhead below). ")
        + "Each repetition starts every server afresh and runs each workload on each server "
        "in turn, so the runs a ratio compares are seconds apart. The "
        "configuration file raises the connection limits, "
        "since every benchmark client comes from 127.0.0.1 (defaults: 256 per address, 10,000 "
        "in all):", "", "```toml", line["config"].rstrip(), "```", "",
        "Anchors: `twisted_min.py` (the minimal Twisted server of the protocol, same venv and "
        "Twisted), `seed_select.php` and `seed_fork.php` (the original PHP servers), all "
        "started as `taskset -c 0 python3|php FILE PORT`. Load: `taskset -c 1 loadgen "
        "127.0.0.1 PORT CONNS SECONDS --warmup W [--pipeline 16 | --connect-rate]`.", ""]
    pngs: list[Path] = []
    for build in (throughput, latency, connect_rate):
        text, png = build(line, figures, images)
        parts += text
        pngs.append(png)
    text, png = memory(line, images)
    parts += text
    pngs.append(png)
    parts += metrics_overhead(line, figures)
    parts += startup(line) + generator_load(line, figures) + repetitions(line)
    return parts, targets(line, figures), pngs
