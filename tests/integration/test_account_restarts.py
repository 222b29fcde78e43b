"""Issue 16: an account whose REAL Dovecot is restarted (cleanly and as a crash) again and
again is watching again within 5 s of each restart, instead of backing off for minutes."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from imapservers import DovecotServer
from test_checker import Watching, eventually, imaps_account, state_of, unique_mailbox
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

pytestmark = pytest.mark.timeout(150)

RESTARTS = ("dovecot-stop", "dovecot-kill", "dovecot-stop", "dovecot-kill", "dovecot-stop")
# Between restarts the account watches this long: more than the 10 s a session must last to
# earn a quick reconnection (backoff.py: sooner it counts as a failure), as a server restarted
# every minute would be watched.
WATCHING_S = 11.0


@pytest_twisted.ensureDeferred
async def test_the_account_is_watching_within_5_s_of_each_restart(mailserver, tmp_path):
    box = unique_mailbox(DovecotServer.wrap(mailserver))
    await threads.deferToThread(mailserver.populate, "alice", 2, box)
    account = imaps_account(mailserver, tmp_path, mailboxes=[box])
    recovered: list[float] = []
    async with Watching(account) as w:
        await eventually(lambda: state_of(w) == "idling", what="idling")
        for how in RESTARTS:
            await eventually(lambda: state_of(w) == "idling", timeout=10, what="idling")
            await deferLater(reactor, WATCHING_S)
            stop = mailserver.stop_dovecot if how == "dovecot-stop" else mailserver.kill_dovecot
            try:
                await threads.deferToThread(stop)
                await eventually(lambda: state_of(w) != "idling", timeout=5,
                                 what="noticing the restart")
            finally:
                await threads.deferToThread(mailserver.start_dovecot)
            back = time.monotonic()  # start_dovecot returns once a LOGIN works
            await eventually(lambda: state_of(w) == "idling", timeout=30, what="idling again")
            recovered.append(time.monotonic() - back)
        assert w.state.mailboxes[box].counts.messages == 2
    print("recovered in", [round(r, 2) for r in recovered], "s")
    assert max(recovered) < 5.0, recovered
