"""Native memory upkeep for real (mailsocketd/memory.py, issue 16): glibc's malloc in a child
Python process, with and without what the daemon does (the arena cap, malloc_trim), and the
real daemon saying at start-up that it does it.  No timing: what is compared is the number of
malloc arenas and resident memory, each against the same process without the upkeep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from daemon import running_daemon

# A child that runs THREADS threads allocating at the same time (each its first malloc on its
# own), optionally after the daemon's arena cap, and prints how many arenas malloc made.
ARENAS = r"""
import ctypes, json, os, sys, tempfile, threading
from mailsocketd.memory import cap_arenas, glibc_malloc
env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
capped = cap_arenas(glibc_malloc(), environ=env) if sys.argv[1] == "cap" else False
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    keep = [bytes(2000) + bytes([i % 256]) for i in range(2000)]  # > 512 bytes: malloc's
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    info = open(out.name).read()
print(json.dumps({"capped": capped, "arenas": info.count("<heap nr=")}))
"""

# A child that fills the heap with 1 KB blocks, frees all but one in 64 (so glibc's own trim,
# which only cuts free space at the top of the heap, can give back little), then optionally
# calls malloc_trim as the daemon's timer does; prints resident memory at each step in MB.
TRIM = r"""
import json, sys
from mailsocketd.memory import glibc_malloc
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss()
blocks = [bytes(1024) + bytes([i % 256]) for i in range(60_000)]  # about 60 MB from malloc
full = rss()
kept = blocks[::64]
del blocks
freed = rss()
if sys.argv[1] == "trim":
    glibc_malloc().malloc_trim(0)
print(json.dumps({"before": before, "full": full, "freed": freed, "after": rss(),
                  "kept": len(kept)}))
"""


def child(script: str, mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                         timeout=60, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def test_capped_arenas_hold_eight_threads_to_two_arenas() -> None:
    free = child(ARENAS, "free")
    capped = child(ARENAS, "cap")
    assert free["arenas"] > 2, free  # without the cap: an arena per thread, up to 8 per CPU
    assert capped["capped"] is True
    assert capped["arenas"] <= 2, capped


def test_malloc_trim_gives_freed_heap_back() -> None:
    kept = child(TRIM, "keep")
    trimmed = child(TRIM, "trim")
    grown = kept["full"] - kept["before"]
    assert grown > 40, kept
    # without the trim most of what was freed stays resident; with it most goes back
    assert kept["after"] - kept["before"] > grown / 2, kept
    assert trimmed["after"] - trimmed["before"] < grown / 4, trimmed


def test_the_daemon_says_at_start_that_it_trims(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        d.wait_log(r"malloc upkeep: malloc_trim every 10 s; arenas capped at 2")
        assert d.ask(b"time").startswith(b"20")
