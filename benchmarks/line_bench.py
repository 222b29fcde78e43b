"""The line-service half: mailsocketd (as installed) against twisted_min.py and the two seeds.

Every server runs pinned to CPU 0 and the C load generator to CPU 1.  Repetitions are
interleaved: each starts every server afresh and runs each workload on each server in turn,
in an order rotated from one repetition to the next, so the ratios compare figures taken
seconds apart under the same conditions; the report takes medians over repetitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import (
    HOST,
    SERVER_CPU,
    Load,
    Server,
    ask,
    cpu_times,
    free_port,
    run_load,
    tree_cpu_seconds,
    tree_memory,
)

# [line] limits raised for the benchmark: 10,000 idle clients plus probes, all from 127.0.0.1
BENCH_CONFIG = """\
# mailsocketd benchmark configuration: all load comes from 127.0.0.1, so the per-peer limit
# (default 256) and the total (default 10,000) are raised above the 10,000-connection test.
[line]
max_connections = 12000
max_connections_per_peer = 12000
"""


# The metrics endpoint of the kind "mailsocketd_metrics": the same daemon with [metrics] on,
# so that the ratio of the two (in the same repetitions) is the cost of counting.
METRICS_CONFIG = """\
[metrics]
listen = ["tcp:{port}:interface=127.0.0.1"]
"""


@dataclass(frozen=True)
class LineSettings:
    """How long and how often: a full run, or a quick one for development."""

    runs: int = 5
    seconds: float = 3.0
    warmup: float = 1.0
    idle_conns: int = 10_000
    setup_timeout: float = 90.0
    pair_rounds: int = 8  # the [metrics] cost end to end: pairs of runs per workload
    count_pairs: int = 40  # the [metrics] cost in one process: pairs of timings per shape


FULL = LineSettings()
QUICK = LineSettings(runs=3, seconds=1.0, warmup=0.3, idle_conns=1000, setup_timeout=30.0,
                     pair_rounds=2, count_pairs=10)


@dataclass(frozen=True)
class Kind:
    """One server under test and how to drive it."""

    key: str
    label: str
    seed: bool  # bare `time` without newline, one reply per chunk, listen backlog 0
    idle: bool = True  # part of the 10,000-connection memory test
    rotated: bool = True  # part of the interleaved repetitions


KINDS = [
    Kind("mailsocketd", "mailsocketd", seed=False),
    Kind("mailsocketd_log", "mailsocketd --log-commands", seed=False, idle=False),
    Kind("twisted_min", "twisted_min.py", seed=False),
    Kind("seed_select", "seed_select.php", seed=True),
    Kind("seed_fork", "seed_fork.php", seed=True),
    # Not in the repetitions: measured in pairs with mailsocketd (metrics_cost.py).
    Kind("mailsocketd_metrics", "mailsocketd [metrics]", seed=False, idle=False, rotated=False),
]


@dataclass(frozen=True)
class Workload:
    """One load generator set-up: connections, pipelining depth, or connect-rate mode."""

    key: str
    label: str
    conns: int
    pipeline: int = 1
    connect_rate: bool = False


WORKLOADS = [
    Workload("rr1", "1 connection", 1),
    Workload("rr100", "100 connections", 100),
    Workload("rr1000", "1,000 connections", 1000),
    Workload("pipe16", "100 connections, pipelining 16", 100, pipeline=16),
    Workload("connrate", "new connections (8 workers)", 8, connect_rate=True),
]


@dataclass
class Paths:
    """Where things are: the venv's programs, the anchors, the loadgen, a scratch dir."""

    venv: Path
    anchors: Path
    loadgen: Path
    scratch: Path


def make_server(kind: Kind, paths: Paths) -> Server:
    """The Server for a kind, on a fresh port, logging into the scratch dir."""
    port = free_port()
    log = paths.scratch / f"{kind.key}-{port}.log"
    if kind.key.startswith("mailsocketd"):
        config = paths.scratch / f"{kind.key}-bench.toml"
        # with [metrics] on (served, not scraped: a scrape every 15 s costs nothing measurable)
        config.write_text(BENCH_CONFIG + (METRICS_CONFIG.format(port=free_port())
                                          if kind.key == "mailsocketd_metrics" else ""))
        argv = [str(paths.venv / "bin" / "twistd"), "-n", "--pidfile=", "mailsocketd",
                "--config", str(config), "--listen", f"tcp:{port}:interface={HOST}"]
        if kind.key == "mailsocketd_log":
            argv.append("--log-commands")
    elif kind.key == "twisted_min":
        argv = [str(paths.venv / "bin" / "python"), str(paths.anchors / "twisted_min.py"),
                str(port)]
    else:
        argv = ["php", str(paths.anchors / f"{kind.key}.php"), str(port)]
    probe = b"time" if kind.seed else b"time\n"
    return Server(kind.key, argv, port, log, probe, cwd=paths.scratch)


def loadgen_argv(paths: Paths, port: int, kind: Kind, conns: int, seconds: float,
                 *extra: str) -> list[str]:
    """The loadgen command line; the seeds need a bare `time` and one connect at a time."""
    argv = [str(paths.loadgen), HOST, str(port), str(conns), f"{seconds:g}"]
    argv += ["--newline", "none", "--inflight", "1"] if kind.seed else ["--newline", "lf"]
    return argv + list(extra)


def applicable(kind: Kind, work: Workload) -> str | None:
    """Why a workload is not run for a kind (None: it is run)."""
    if kind.seed and work.pipeline > 1:
        return "n/a (cannot pipeline)"
    return None


def run_workload(server: Server, kind: Kind, work: Workload, paths: Paths,
                 settings: LineSettings) -> dict[str, Any]:
    """One loadgen run against a running server; the figures and the generator's CPU use."""
    extra = ["--warmup", f"{settings.warmup:g}", "--setup-timeout",
             f"{settings.setup_timeout:g}", "--stall", "10"]
    if work.pipeline > 1:
        extra += ["--pipeline", str(work.pipeline)]
    if work.connect_rate:
        extra.append("--connect-rate")
    argv = loadgen_argv(paths, server.port, kind, work.conns, settings.seconds, *extra)
    cpu_before, cpu0_before = tree_cpu_seconds(server.pid), cpu_times(int(SERVER_CPU))
    result = run_load(argv, timeout=settings.setup_timeout + settings.warmup
                      + settings.seconds + 30)
    server_cpu = tree_cpu_seconds(server.pid) - cpu_before
    cpu0 = cpu_times(int(SERVER_CPU))
    cpu0_total = max(1e-9, cpu0.total_s - cpu0_before.total_s)
    # process time on CPU 0 that was not the server's: other programs competing with it
    others = cpu0.process_s - cpu0_before.process_s - server_cpu
    f = result.number
    return {"rps": f("rps"), "p50_us": f("p50_us"), "p99_us": f("p99_us"),
            "errors": int(f("errors")), "ok": int(f("ok")), "setup_ms": f("setup_ms"),
            "cpu0": f("cpu0"), "cpu1": f("cpu1"), "steal": f("steal"),
            "loadgen_cpu_pct": round(result.cpu_pct, 1),
            "server_cpu_pct": round(100 * server_cpu / result.wall_s, 1),
            "cpu0_others_pct": round(max(0.0, 100 * others / cpu0_total), 1),
            "cpu0_interrupts_pct": round(
                100 * (cpu0.interrupt_s - cpu0_before.interrupt_s) / cpu0_total, 1),
            "alive": server.alive(),
            "line": result.output}


def one_repetition(kinds: list[Kind], paths: Paths, settings: LineSettings,
                   say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Start every server (timing each start-up), then run each workload on each server in
    turn, in ``kinds``' order, and stop them all.  Workload by workload rather than server
    by server: the runs that a ratio compares are then seconds apart, not minutes, and this
    kind of shared machine is 10-20% faster or slower from one minute to the next."""
    out: dict[str, dict[str, Any]] = {}
    servers: dict[str, Server] = {}
    try:
        for kind in kinds:
            servers[kind.key] = server = make_server(kind, paths)
            out[kind.key] = {"startup_s": server.start()}
        for work in WORKLOADS:
            for kind in kinds:
                if applicable(kind, work) is not None:
                    continue
                server = servers[kind.key]
                out[kind.key][work.key] = run_workload(server, kind, work, paths, settings)
                say(f"  {kind.label:30} {work.label:32} {_short(out[kind.key][work.key])}")
                server.wait_settled()
                time.sleep(0.3)  # let closed connections drain before the next load
    finally:
        for server in servers.values():
            server.stop()
            discard_log(server)
    return out


def _short(r: dict[str, Any]) -> str:
    return (f"{r['rps']:>9,.0f}/s p50 {r['p50_us']:>7,.0f} us p99 {r['p99_us']:>8,.0f} us "
            f"ok {r['ok']} err {r['errors']} loadgen cpu {r['loadgen_cpu_pct']:.0f}%")


def discard_log(server: Server) -> None:
    """Per-command logs grow fast under load: remove each once its server has stopped."""
    server.log_path.unlink(missing_ok=True)


def idle_test(kind: Kind, paths: Paths, settings: LineSettings,
              say: Callable[[str], None]) -> dict[str, Any]:
    """Hold N idle connections: memory with them minus memory without, per connection."""
    n = settings.idle_conns
    server = make_server(kind, paths)
    server.start()
    try:
        time.sleep(0.5)
        base = tree_memory(server.pid)
        extra = ["--idle", str(n), "--setup-timeout", f"{settings.setup_timeout:g}",
                 "--stall", "10"]
        load = Load(loadgen_argv(paths, server.port, kind, n, 600, *extra))
        try:
            ready = load.read_line("idle_ready", timeout=settings.setup_timeout + 30)
            if ready is None:
                raise RuntimeError(f"load generator gave no idle_ready line: {load.buffer!r}")
            time.sleep(1.0)
            held = tree_memory(server.pid)
            answers = ask(server.port, server.probe, timeout=3.0) is not None
        finally:
            server.stop()  # before the clients go: see Server.stop
            load.kill()
            load.reap()
    finally:
        server.stop()
        discard_log(server)
    fields = dict(p.split("=", 1) for p in ready.split()[1:])
    ok = int(fields["ok"])
    result = {"conns": n, "ok": ok, "errors": int(fields["errors"]),
              "setup_ms": float(fields["setup_ms"]), "answers_new_client": answers,
              "base_rss_kb": base.rss_kb, "base_pss_kb": base.pss_kb,
              "held_rss_kb": held.rss_kb, "held_pss_kb": held.pss_kb,
              "processes": held.processes, "loadgen_cpu_s": round(load.cpu_s, 2),
              "rss_per_conn_b": (held.rss_kb - base.rss_kb) * 1024 / ok if ok else None,
              "pss_per_conn_b": (held.pss_kb - base.pss_kb) * 1024 / ok if ok else None}
    say(f"  {kind.label:30} idle {ok}/{n} held, per connection: "
        f"RSS {_b(result['rss_per_conn_b'])} PSS {_b(result['pss_per_conn_b'])}, "
        f"answers a new client: {answers}, {held.processes} processes")
    return result


def _b(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} KB"


def run_line(paths: Paths, settings: LineSettings, say: Callable[[str], None],
             only: set[str] | None = None) -> dict[str, Any]:
    """The whole line section: interleaved repetitions, then the idle-memory test."""
    kinds = [k for k in KINDS if k.rotated and (only is None or k.key in only)]
    reps: list[dict[str, dict[str, Any]]] = []
    for rep in range(settings.runs):
        order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
        say(f"line service: repetition {rep + 1} of {settings.runs}")
        reps.append(one_repetition(order, paths, settings, say))
    say(f"line service: {settings.idle_conns:,} idle connections")
    idle = {k.key: idle_test(k, paths, settings, say) for k in kinds if k.idle}
    return {
        "settings": settings.__dict__,
        "config": BENCH_CONFIG,
        "kinds": [{"key": k.key, "label": k.label, "seed": k.seed} for k in kinds],
        "workloads": [w.__dict__ for w in WORKLOADS],
        "not_applicable": {f"{k.key}/{w.key}": why for k in kinds for w in WORKLOADS
                           if (why := applicable(k, w))},
        "repetitions": reps,
        "idle": idle,
    }
