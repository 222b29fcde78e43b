"""run_process with real, short-lived programs: stdin in, capped output out, no shell, a timeout
that kills, cancellation that kills, and a clear failure for a program that cannot start."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from processrig import ended_within
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport
from twisted.internet.task import Clock, deferLater

from mailsocketd.mail.process import SETSID, ProcessResult, ProcessStartError, run_process

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
LIMIT = 10.0  # seconds any of these programs may take; each finishes (or is killed) far sooner


def python(code):
    return [sys.executable, "-c", code]


@pytest_twisted.ensureDeferred
async def test_stdin_reaches_the_program_and_is_closed():
    data = bytes(range(256)) * 4096  # 1 MiB: more than a pipe holds at once
    result = await run_process(
        reactor, python("import sys, hashlib; d = sys.stdin.buffer.read(); "
                        "print(len(d), hashlib.sha256(d).hexdigest())"),
        ENV, LIMIT, stdin=data)
    assert result.ok, result
    assert result.stdout.split() == [str(len(data)).encode(),
                                     hashlib.sha256(data).hexdigest().encode()]


@pytest_twisted.ensureDeferred
async def test_without_stdin_data_the_program_reads_end_of_file_at_once():
    result = await run_process(reactor, python("import sys; print(repr(sys.stdin.read()))"),
                               ENV, LIMIT)
    assert result.ok and result.stdout == b"''\n"


@pytest_twisted.ensureDeferred
async def test_a_program_that_ignores_its_stdin_still_ends_cleanly():
    result = await run_process(reactor, python("pass"), ENV, LIMIT, stdin=b"x" * (4 << 20))
    assert result.ok and result.exit_code == 0


@pytest_twisted.ensureDeferred
async def test_argv_is_not_parsed_by_a_shell_and_env_is_exactly_what_was_given():
    result = await run_process(
        reactor, [*python("import os, sys; print(sys.argv[1:]); print(sorted(os.environ))"),
                  "$HOME;*", "a b"],
        {**ENV, "ONLY_THIS": "1"}, LIMIT)
    argv_line, env_line = result.stdout.decode().splitlines()
    assert argv_line == "['$HOME;*', 'a b']"
    assert "ONLY_THIS" in env_line and "HOME" not in env_line
    result = await run_process(reactor, ["printf", "%s", "$HOME;`id`|*"], ENV, LIMIT)
    assert result.stdout == b"$HOME;`id`|*"


@pytest_twisted.ensureDeferred
async def test_output_is_capped_and_hidden_from_repr():
    result = await run_process(reactor, python("print('x' * 100000)"), ENV, LIMIT,
                               max_output=1000)
    assert result.ok and result.truncated and result.stdout == b"x" * 1000
    assert "xxx" not in repr(result)
    whole = await run_process(reactor, python("print('x' * 999)"), ENV, LIMIT, max_output=1000)
    assert not whole.truncated and len(whole.stdout) == 1000


@pytest_twisted.ensureDeferred
async def test_stderr_is_dropped_unless_asked_for_and_then_capped():
    code = "import sys; sys.stderr.write('e' * 50000); sys.stdout.write('out')"
    dropped = await run_process(reactor, python(code), ENV, LIMIT)
    assert dropped.stderr == b"" and dropped.stdout == b"out"
    kept = await run_process(reactor, python(code), ENV, LIMIT, max_stderr=100)
    assert kept.stderr == b"e" * 100 and not kept.truncated  # truncated is about stdout
    assert "eee" not in repr(kept)


@pytest_twisted.ensureDeferred
async def test_exit_status_and_signal_are_reported():
    failed = await run_process(reactor, python("raise SystemExit(3)"), ENV, LIMIT)
    assert (failed.exit_code, failed.signal, failed.ok) == (3, None, False)
    assert failed.describe() == "exited with status 3"
    killed = await run_process(reactor, python("import os; os.kill(os.getpid(), 15)"),
                               ENV, LIMIT)
    assert (killed.exit_code, killed.signal, killed.timed_out) == (None, 15, False)
    assert killed.describe() == "was killed by signal 15"


@pytest_twisted.ensureDeferred
async def test_a_program_that_outlives_its_timeout_is_killed():
    start = time.monotonic()
    result = await run_process(
        reactor, python("import os, sys, time; print(os.getpid(), flush=True); time.sleep(60)"),
        ENV, 0.3)
    assert time.monotonic() - start < 5
    assert result.timed_out and not result.ok and result.signal == 9
    assert result.describe() == "timed out after 0.3 s and was killed"
    assert await ended_within(int(result.stdout))  # what it wrote before is kept


@pytest_twisted.ensureDeferred
async def test_cancelling_kills_the_program(tmp_path):
    pid_file = tmp_path / "pid"
    d = run_process(reactor, python(f"import os, time; open({str(pid_file)!r}, 'w').write("
                                    "str(os.getpid())); time.sleep(60)"), ENV, LIMIT)
    await written(pid_file)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert await ended_within(int(pid_file.read_text()))


@pytest_twisted.ensureDeferred
async def test_a_program_that_cannot_start_fails_clearly(tmp_path):
    with pytest.raises(ProcessStartError,
                       match=r"^cannot run /nonexistent/helper: No such file or directory$"):
        await run_process(reactor, ["/nonexistent/helper", "arg"], ENV, LIMIT)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(ProcessStartError, match=r"^cannot run .*/not-executable: Permission denied$"):
        await run_process(reactor, [str(script)], ENV, LIMIT)


class FakeTransport:
    """The part of IProcessTransport that run_process uses, each call recorded."""

    def __init__(self, log):
        self.log = log

    def write(self, data):
        self.log.append(("write", data))

    def closeStdin(self):
        self.log.append(("closeStdin",))

    def signalProcess(self, name):
        self.log.append(("signal", name))


class FakeReactor(Clock):
    """A clock whose spawnProcess connects the protocol to a transport that records calls."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple[object, ...]] = []
        self.protocol: IProcessProtocol | None = None

    def spawnProcess(self, processProtocol: IProcessProtocol, executable: bytes | str,
                     args: Sequence[bytes | str], *, env: Mapping[str, str] | None = None,
                     **kw: Any) -> IProcessTransport:
        self.log.append(("spawn", executable, args, env))
        self.protocol = processProtocol
        # partial on purpose: only the calls run_process makes, so that any other one fails
        transport = cast(IProcessTransport, FakeTransport(self.log))
        processProtocol.makeConnection(transport)
        return transport


def test_stdin_is_written_once_then_closed_and_no_timer_outlives_the_program():
    from twisted.internet.error import ProcessDone
    from twisted.python.failure import Failure

    fake = FakeReactor()
    results: list[object] = []
    helper = sys.executable  # run_process checks that the program exists before it spawns
    wrap = [SETSID, "--"] if SETSID else []
    run_process(fake, [helper, "a"], {"X": "1"}, 5.0, stdin=b"data").addBoth(
        results.append)
    assert fake.log == [("spawn", (wrap or [helper])[0], [*wrap, helper, "a"], {"X": "1"}),
                        ("write", b"data"), ("closeStdin",)]
    assert len(fake.getDelayedCalls()) == 1
    assert fake.protocol is not None
    fake.protocol.processEnded(Failure(ProcessDone(0)))
    assert fake.getDelayedCalls() == []
    assert results == [ProcessResult(0, None, timeout=5.0)]
    fake.advance(10)
    assert ("signal", "KILL") not in fake.log


# -- helpers with children (issue 11, item 15) ----------------------------------------------------

# A program that starts a child holding its stdout (it inherits it), prints the child's pid,
# then does ``then``.  The child sleeps 30 s: a test that waited for the pipes would show it.
def with_child(then: str = "", detach: bool = False) -> list[str]:
    return [sys.executable, "-c",
        "import os, subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'], "
        f"start_new_session={detach})\n"
        "print(child.pid, flush=True)\n" + then]


async def written(path: Path) -> None:
    """Wait (at most LIMIT seconds) until the program has written its pid to ``path``."""
    deadline = time.monotonic() + LIMIT
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_child_left_holding_the_output_neither_delays_the_result_nor_survives():
    start = time.monotonic()
    result = await run_process(reactor, with_child("print('done')"), ENV, LIMIT)
    assert time.monotonic() - start < 3  # not the child's 30 s, nor the timeout
    assert result.ok and not result.timed_out, result
    child, done = result.stdout.split()
    assert done == b"done"  # everything the program wrote before it exited is kept
    assert await ended_within(int(child))  # the rest of its process group is killed when it exits


@pytest_twisted.ensureDeferred
async def test_a_timeout_kills_the_whole_group():
    start = time.monotonic()
    result = await run_process(reactor, with_child("import time; time.sleep(60)"), ENV, 0.5)
    assert time.monotonic() - start < 3  # not when the child, holding the output, ends
    assert result.timed_out and result.signal == 9
    assert await ended_within(int(result.stdout))


@pytest_twisted.ensureDeferred
async def test_cancelling_kills_the_whole_group(tmp_path):
    """As the daemon's stop does (hooks, password commands)."""
    pid_file = tmp_path / "child"
    d = run_process(reactor, with_child(f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
                                        "import time; time.sleep(60)"), ENV, LIMIT)
    await written(pid_file)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert await ended_within(int(pid_file.read_text()))


@pytest_twisted.ensureDeferred
async def test_a_child_that_leaves_the_group_holding_the_output_delays_the_result_by_a_second():
    start = time.monotonic()
    result = await run_process(reactor, with_child("print('done')", detach=True), ENV, LIMIT)
    took = time.monotonic() - start
    child, done = result.stdout.split()
    os.kill(int(child), 9)  # started (indirectly) by this test: end it
    assert result.ok and done == b"done"
    assert took < 3  # EXIT_GRACE (1 s), not the child's 30 s
