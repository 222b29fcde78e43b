"""A reload of ``[accounts]``: added ones start, removed ones stop, only changed ones reconnect,
and those waiting to retry retry at once."""

from __future__ import annotations

from dataclasses import replace

from mailrig import MailReactorClock, account
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsocketd.mail.accounts.service import AccountsService, AccountWatcher

ENV = {"PW": "pw"}


def started(*accounts):
    reactor = MailReactorClock()
    service = AccountsService(list(accounts), reactor, ENV)
    service.startService()
    return service, reactor


def test_only_the_added_and_changed_accounts_connect_and_the_removed_stop():
    work, home, old = (account(name=n, server="tls:127.0.0.1:993") for n in ("work", "home",
                                                                             "old"))
    service, reactor = started(work, home, old)
    kept = {w.account.name: w for w in service.watchers}
    assert len(reactor.tcpClients) == 3

    news = service.reconfigure([work, replace(home, interval=60.0),
                                account(name="new", server="tls:127.0.0.1:993")])

    assert news == ["account home: changed, reconnecting", "account new: added",
                    "account old: removed"]
    assert [w.account.name for w in service.watchers] == ["work", "home", "new"]
    assert service.watchers[0] is kept["work"] and kept["work"].running
    assert service.watchers[1] is not kept["home"] and service.watchers[1].running
    assert service.watchers[1].account.interval == 60.0
    assert not kept["home"].running and not kept["old"].running
    assert len(reactor.tcpClients) == 5  # home again and new; work kept its connection
    assert [s.name for s in service] == ["work", "home", "new"]
    assert [line.split(":")[0] for line in service.status_lines()] == [
        "account work INBOX", "account home INBOX", "account new INBOX"]


def test_the_same_accounts_change_nothing():
    work = account(server="tls:127.0.0.1:993")
    service, reactor = started(work)
    watcher = service.watchers[0]
    assert service.reconfigure([replace(work)]) == []
    assert service.watchers == [watcher] and len(reactor.tcpClients) == 1


@implementer(IStreamClientEndpoint)
class RefusingEndpoint:
    def __init__(self) -> None:
        self.attempts = 0
        self.watcher: AccountWatcher | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.attempts += 1
        assert self.watcher is not None
        failure = Failure(ConnectionRefusedError())
        self.watcher.note_failure(failure)
        return fail(failure)


def test_an_account_waiting_to_retry_retries_at_once_on_reload():
    reactor = MailReactorClock()
    endpoint = RefusingEndpoint()
    watcher = AccountWatcher(account(), reactor, ENV, endpoint=endpoint)
    endpoint.watcher = watcher
    service = AccountsService([], reactor, ENV)
    service.watchers = [watcher]
    watcher.setServiceParent(service)
    service.startService()
    for _ in range(6):  # the waits grow: 1, 2, 4, 8, 16, 32 s
        reactor.advance(reactor.getDelayedCalls()[0].getTime() - reactor.seconds())
    assert endpoint.attempts == 7 and watcher.state.state == "backing-off"
    waiting = reactor.getDelayedCalls()[0].getTime() - reactor.seconds()
    assert waiting > 30

    assert service.reconfigure([watcher.account]) == ["account work: retrying now"]

    assert endpoint.attempts == 8  # at once, not after the wait
    assert len(reactor.getDelayedCalls()) == 1  # the old wait is gone; one new one
    assert service.watchers == [watcher]


def test_a_connected_account_is_not_disturbed_by_a_reload():
    service, reactor = started(account(server="tls:127.0.0.1:993"))
    watcher = service.watchers[0]
    watcher.state.set_state("idling")
    assert service.reconfigure([watcher.account]) == []
    assert len(reactor.tcpClients) == 1
