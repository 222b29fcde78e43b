"""Reconnection backoff: grows, is jittered, is forgiven only after a healthy session, and a
rejected login waits minutes."""

from __future__ import annotations

from twisted.internet.task import Clock

from mailsocketd.mail.accounts.backoff import Backoff


def backoff(clock=None, jitter=0.5):
    # jitter 0.5 makes the factor exactly 1: delays are the bare curve
    return Backoff(clock or Clock(), jitter=lambda: jitter)


def test_grows_exponentially_to_the_maximum():
    b = backoff()
    assert [b.delay() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_jitter_spreads_by_a_quarter_either_way():
    assert backoff(jitter=0.0).delay() == 0.75
    assert backoff(jitter=1.0).delay() == 1.25


def test_attempt_count_from_clientservice_is_ignored():
    b = backoff()
    assert [b.delay(1), b.delay(1), b.delay(1)] == [1, 2, 4]


def test_a_short_session_is_not_forgiven():
    clock = Clock()
    b = backoff(clock)
    b.delay(), b.delay(), b.delay()
    b.logged_in()
    clock.advance(5)  # logged in, but dropped after 5 s: a flapping server
    assert b.delay() == 8


def test_a_healthy_session_resets_the_backoff():
    clock = Clock()
    b = backoff(clock)
    for _ in range(6):
        b.delay()
    b.logged_in()
    clock.advance(61)
    assert b.delay() == 1
    assert b.delay() == 2


def test_rejected_logins_wait_minutes_and_grow():
    clock = Clock()
    b = backoff(clock)
    delays = []
    for _ in range(6):
        b.auth_failed()
        delays.append(b.delay())
    assert delays == [300, 600, 1200, 2400, 3600, 3600]
    # a connection failure in between uses the ordinary curve ...
    assert b.delay() == 1
    # ... and a good login forgets the rejections
    b.logged_in()
    b.auth_failed()
    assert b.delay() == 300
