"""A protocol trace for the test Courier (courier.sh): imaplogin runs this instead of imapd,
after the login, as the mail user.

    python3 courier_trace.py LOGDIR REAL_IMAPD ARGS...

Runs REAL_IMAPD ARGS with pipes for its standard input and output, copies the client's bytes
to it and its bytes back, and writes both directions, time-stamped (HH:MM:SS.mmm), to
LOGDIR/imap-PID.log ("C:" client to server, "S:" server to client; lines longer than 400
bytes are cut). The bytes are plain text here: TLS (implicit or STARTTLS) is done by
couriertls in front of imaplogin. Stdlib only (it runs under the system's python3).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import BinaryIO

MAX_LOGGED = 400


class Trace:
    """Whole lines of each direction, time-stamped, into the log file."""

    def __init__(self, log: BinaryIO) -> None:
        self.log = log
        self.pending = {"C": b"", "S": b""}

    def note(self, direction: str, data: bytes) -> None:
        *lines, self.pending[direction] = (self.pending[direction] + data).split(b"\n")
        for line in lines:
            shown = line.rstrip(b"\r")
            if len(shown) > MAX_LOGGED:
                shown = shown[:MAX_LOGGED] + f"...({len(shown)} bytes)".encode()
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
            self.log.write(f"{stamp} {direction}: ".encode() + shown + b"\n")


def relay(child: subprocess.Popen[bytes], trace: Trace) -> None:
    """Copy standard input to the child and the child's output to standard output, tracing
    both, until the child closes its output."""
    assert child.stdin is not None and child.stdout is not None
    client, server = 0, child.stdout.fileno()
    # imaplogin hands over non-blocking descriptors (the pipe to couriertls): a write of a
    # large reply would fail with EAGAIN. This process is alone on them now: block.
    os.set_blocking(0, True)
    os.set_blocking(1, True)
    client_open = True
    while True:
        readable, _, _ = select.select([server] + ([client] if client_open else []), [], [], 3600)
        if client in readable:
            data = os.read(client, 65536)
            if not data:
                client_open = False
                child.stdin.close()
                trace.note("C", b"<client closed>\n")
            else:
                trace.note("C", data)
                try:
                    child.stdin.write(data)
                except BrokenPipeError:
                    client_open = False
        if server in readable:
            data = os.read(server, 65536)
            if not data:
                trace.note("S", b"<imapd closed>\n")
                return
            trace.note("S", data)
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]


def main() -> int:
    logdir, real = sys.argv[1], sys.argv[2]
    child = subprocess.Popen([real, *sys.argv[3:]], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, bufsize=0, close_fds=True)
    path = os.path.join(logdir, f"imap-{os.getpid()}.log")
    with open(path, "ab", buffering=0) as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} session start, "
                  f"imapd pid {child.pid}\n".encode())
        relay(child, Trace(log))
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
