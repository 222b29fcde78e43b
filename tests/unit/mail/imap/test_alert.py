"""[ALERT] (RFC 3501 7.1): every alert reaches on_alert, cleaned, or waits for it."""

from __future__ import annotations

from mailrig import Rig
from twisted.internet.defer import ensureDeferred, succeed
from twisted.logger import LogLevel, capturedLogs

from mailsocketd.mail.accounts.connection import AccountConnection
from mailsocketd.mail.accounts.state import AccountState
from mailsocketd.mail.imap.client import MAX_ALERTS_KEPT
from mailsocketd.mail.secrets import Secret


def test_untagged_and_tagged_alerts_reach_on_alert():
    rig = Rig().connect()
    heard: list[str] = []
    rig.client.listen_for_alerts(heard.append)
    rig.greet()
    d = rig.client.noop_check()
    rig.expect(b"NOOP")
    rig.reply("OK [ALERT] System going down in 5 minutes", "NO [ALERT] quota\r low",
              "OK [UIDVALIDITY 3] not an alert", "OK no code", text="[ALERT] over quota")
    assert d.called
    assert heard == ["System going down in 5 minutes", "quota  low", "over quota"]


def test_alerts_before_anyone_listens_wait_bounded_and_are_told_then():
    rig = Rig().connect()
    rig.server("* OK [CAPABILITY IMAP4rev1] [ALERT] is no code here")
    for n in range(MAX_ALERTS_KEPT + 2):
        rig.server(f"* OK [ALERT] alert {n}")
    heard: list[str] = []
    rig.client.listen_for_alerts(heard.append)
    assert heard == [f"alert {n}" for n in range(2, MAX_ALERTS_KEPT + 2)]
    rig.server("* BYE [ALERT] shutting down")
    assert heard[-1] == "shutting down"


def test_an_account_logs_alerts():
    """Courier says ``* OK [ALERT] Filesystem notification initialization error -- contact
    your mail administrator (check for configuration errors with the FAM/Gamin library)``
    after LOGIN when its IDLE notifications cannot work (the recipe's mail user)."""
    from mailrig import account

    acct = account()
    rig = Rig().connect()
    state = AccountState(acct, rig.clock)
    connection = AccountConnection(rig.client, account=acct, state=state, clock=rig.clock,
                                   password=lambda: succeed(Secret(b"pw")))
    with capturedLogs() as events:
        done = ensureDeferred(connection.run())
        rig.greet()
        rig.plain_login(caps_after="IMAP4rev1")
        rig.expect(b"STATUS")
        rig.reply("OK [ALERT] Filesystem notification initialization error -- contact your "
                  "mail administrator (check for configuration errors with the FAM/Gamin "
                  "library)", "STATUS INBOX (MESSAGES 1 UNSEEN 0 RECENT 0 UIDNEXT 2 "
                  "UIDVALIDITY 1)")
    (event,) = [e for e in events if e.get("event") == "imap_alert"]
    assert event["account"] == "work" and event["log_level"] == LogLevel.warn
    assert event["text"].startswith("Filesystem notification initialization error")
    assert not done.called
