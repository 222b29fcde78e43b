"""What counting requests ([metrics]) adds to each request, measured inside one process.

Run with the python of the venv mailsocketd is installed in (bench.py does, pinned to the
servers' CPU); prints one JSON object.  The daemon's own line server, factory and protocol are
driven through a StringTransport with ``time`` requests, alternately without and with
counting (``LineServer.count_commands``), so both sides of each pair see the same machine
within milliseconds: the difference is the counting code itself, free of the network, the
kernel and the load generator, which make the end-to-end figures vary by 10-20% from one
run to the next on a shared machine.

Two shapes: ``pipelined`` (16 requests in one read, as the benchmark's pipelining workload)
and ``single`` (one request per read, as its closed-loop workloads).  The pairs are split
into blocks; each block's median difference is one of the figure's repetitions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsocketd.line.config import LineConfig
from mailsocketd.line.factory import LineFactory
from mailsocketd.line.server import LineServer

SHAPES = {"pipelined": 16, "single": 1}
TARGET_SECONDS = 0.02  # each timing of one side of a pair


def driver(lines: int) -> tuple[LineServer, Callable[[], None]]:
    """A server with one connected client, and a function that serves ``lines`` requests."""
    clock = Clock()
    clock.advance(time.time())
    server = LineServer(LineConfig(), [], clock, log_commands=False)
    factory = LineFactory(server, clock)
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    proto = factory.buildProtocol(peer)
    assert proto is not None
    transport = StringTransport(peerAddress=peer)
    proto.makeConnection(transport)
    data = b"time\n" * lines

    def serve() -> None:
        proto.dataReceived(data)
        transport.clear()

    return server, serve


def timed(serve: Callable[[], None], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        serve()
    return time.perf_counter() - started


def measure(lines: int, pairs: int, blocks: int) -> dict[str, object]:
    """Nanoseconds per request without and with counting, in ``pairs`` alternating pairs."""
    server, serve = driver(lines)
    server.count_commands()
    counts = server.command_counts
    number = max(1, int(TARGET_SECONDS / max(1e-9, timed(serve, 200) / 200)))
    for counting in (False, True, False, True):  # warm up both sides before measuring
        server.command_counts = counts if counting else None
        timed(serve, number * 5)

    def per_request(counting: bool) -> float:
        server.command_counts = counts if counting else None
        return timed(serve, number) / number / lines * 1e9

    off: list[float] = []
    on: list[float] = []
    for pair in range(pairs):
        if pair % 2:  # alternate which side goes first
            on.append(per_request(True))
            off.append(per_request(False))
        else:
            off.append(per_request(False))
            on.append(per_request(True))
    deltas = [b - a for a, b in zip(off, on, strict=True)]
    size = max(1, pairs // blocks)
    block_deltas = [statistics.median(deltas[i:i + size]) for i in range(0, pairs, size)
                    if len(deltas[i:i + size]) == size]
    assert counts is not None and counts["time"][0] > 0, "counting did not count"
    return {"lines_per_read": lines, "pairs": pairs, "requests_per_timing": number * lines,
            "off_ns_median": round(statistics.median(off), 1),
            "on_ns_median": round(statistics.median(on), 1),
            "delta_ns": round(statistics.median(deltas), 1),
            "block_delta_ns": [round(d, 1) for d in block_deltas]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--blocks", type=int, default=5)
    args = parser.parse_args(argv)
    if not 2 <= args.pairs <= 1000 or not 1 <= args.blocks <= args.pairs:
        parser.error("--pairs from 2 to 1000, --blocks from 1 to --pairs")
    out = {shape: measure(lines, args.pairs, args.blocks) for shape, lines in SHAPES.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
