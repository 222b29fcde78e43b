"""An account watching a Courier folder nobody opened read-write (issue 15, point 1).

Courier derives such a folder's UIDVALIDITY from the clock: every check of it logged
``UIDVALIDITY changed; counting afresh`` and new mail was never reported, the hook never run.
Now the second check sees the UIDVALIDITY change while the messages stay, SELECTs the folder
read-write once (which makes Courier write its UID database: settled), and new mail is
reported as on any server, polled or through IDLE.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytest
import pytest_twisted
from interoprig import unsettled_folder
from logrig import global_log_events
from mailrig import global_reactor, parsed_account, write_password
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from mailsocketd.mail.accounts.service import AccountWatcher

pytestmark = pytest.mark.timeout(120)


async def eventually(predicate: Callable[[], object], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout} s")
        await deferLater(reactor, 0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "polled"])
@pytest.mark.parametrize("imap_server", ["courier"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_new_mail_in_an_unsettled_courier_folder_is_reported(imap_server, tmp_path,
                                                                    idle):
    box = await threads.deferToThread(unsettled_folder, imap_server, "bob")
    runs = tmp_path / "runs"
    hook = [sys.executable, "-c",
            "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + chr(10))",
            str(runs)]
    account = parsed_account(
        "work", server=f"tcp:{imap_server.host}:{imap_server.imap_port}", user="bob",
        ca_file=str(imap_server.ca_file), mailboxes=[box], interval=5, idle=idle,
        password_file=write_password(tmp_path, imap_server.users["bob"]),
        on_new_mail=hook, on_new_mail_delay=0.2)
    watcher = AccountWatcher(account, global_reactor(), {})
    with global_log_events() as events:
        watcher.startService()
        try:
            record = watcher.state.mailboxes[box]
            await eventually(lambda: record.checks >= 2, 15, "two checks")
            await deferLater(reactor, 1.1)  # its UIDVALIDITY, if unsettled, moves on
            await threads.deferToThread(
                lambda: imap_server.deliver("bob", "second", mailbox=box))
            took = await eventually(lambda: record.new_mail, 15, "new mail")
            await eventually(runs.exists, 5, "the hook run")
            checks = record.checks  # one more: no second SELECT, no counting afresh
            await eventually(lambda: record.checks > checks, 15, "one more check")
        finally:
            await watcher.stopService()
    names = [e.get("event") for e in events if e.get("account") == "work"]
    assert "uidvalidity_changed" not in names, names
    assert names.count("uidvalidity_unsettled") == 1, names
    assert names.count("new_mail") == 1 and record.new_mail == 1
    assert runs.read_text().split() == ["work", box, "1", "2", "2"]
    assert took < (2 if idle else 6), took  # IDLE (ENHANCEDIDLE=1) at once; else the interval
    print(f"new mail noticed after {took:.2f} s ({'IDLE' if idle else 'polled'})")
