"""The reloadable set of listeners on a MemoryReactor: opened and closed by a reload, all or
none, and a TLS listener's certificate replaced without closing its port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import MultiService
from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

import twisted
from mailsocketd.listeners import ListenerSet, ReplaceableTls
from mailsocketd.reload import Change, ReloadError
from mailsocketd.tap import Listener

PEM = Path(twisted.__file__).parent / "test" / "server.pem"  # key and certificate in one


def listener_set() -> tuple[ListenerSet, MemoryReactor, MultiService]:
    reactor, top = MemoryReactor(), MultiService()
    listeners = ListenerSet(reactor, top, Listener, {"line.listen": Factory(),
                                                     "line.daytime": Factory()})
    return listeners, reactor, top


def prepared(listeners: ListenerSet, wanted: list[tuple[str, str]]) -> Change:
    """The Change of a prepare that needs no reactor turn (a MemoryReactor closes at once)."""
    outcome: list[Change | Failure] = []
    ensureDeferred(listeners.prepare(wanted)).addBoth(outcome.append)
    [result] = outcome
    if isinstance(result, Failure):
        result.raiseException()
    assert isinstance(result, Change)
    return result


def ports(reactor: MemoryReactor) -> list[int]:
    return [p[0] for p in reactor.tcpServers]


def test_new_listeners_open_at_prepare_and_removed_ones_close_at_commit() -> None:
    listeners, reactor, top = listener_set()
    listeners.add_all([("line.listen", "tcp:1000"), ("line.daytime", "tcp:1013")])
    top.privilegedStartService()
    top.startService()
    assert ports(reactor) == [1000, 1013]
    change = prepared(listeners, [("line.listen", "tcp:1000"), ("line.listen", "tcp:2000")])
    assert ports(reactor) == [1000, 1013, 2000]  # opened before anything is committed
    assert ("line.daytime", "tcp:1013") in listeners.services
    change.commit()
    assert sorted(listeners.services) == [("line.listen", "tcp:1000"),
                                          ("line.listen", "tcp:2000")]
    assert change.summary == ("listening on 'tcp:2000'", "no longer listening on 'tcp:1013'")


def test_an_aborted_reload_closes_what_it_opened() -> None:
    listeners, _, top = listener_set()
    listeners.add_all([("line.listen", "tcp:1000")])
    top.privilegedStartService()
    top.startService()
    change = prepared(listeners, [("line.listen", "tcp:1000"), ("line.listen", "tcp:2000")])
    change.abort()
    assert list(listeners.services) == [("line.listen", "tcp:1000")]
    assert len(list(top)) == 1


def test_a_bad_endpoint_refuses_the_reload() -> None:
    listeners, _, top = listener_set()
    top.startService()
    with pytest.raises(ReloadError, match="line.listen: bad endpoint 'nonsense:1'"):
        prepared(listeners, [("line.listen", "nonsense:1")])
    assert listeners.services == {}


def test_a_tls_listener_gets_fresh_options_on_reload_and_keeps_its_port() -> None:
    listeners, reactor, top = listener_set()
    description = f"ssl:1443:privateKey={PEM}:certKey={PEM}"
    listeners.add_all([("line.listen", description)])
    top.privilegedStartService()
    top.startService()
    assert len(reactor.sslServers) == 1
    replaceable: Any = listeners.tls[("line.listen", description)]
    assert isinstance(replaceable, ReplaceableTls)
    before = replaceable.options
    change = prepared(listeners, [("line.listen", description)])
    assert replaceable.options is before  # only a commit replaces it
    change.commit()
    assert replaceable.options is not before
    assert replaceable.getContext() is replaceable.options.getContext()
    assert len(reactor.sslServers) == 1  # not listened again
    assert change.summary == (f"TLS certificate and key of {description!r} read again",)
