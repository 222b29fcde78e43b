"""Reconnection backoff: grows and is jittered; after a healthy session (logged in, first STATUS
answered) the next attempt is at once; a rejected login waits minutes."""

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


def test_a_login_alone_is_not_healthy():
    """Logged in, but dropped before the first STATUS was answered: the curve goes on."""
    clock = Clock()
    b = backoff(clock)
    b.delay(), b.delay(), b.delay()
    b.logged_in()
    clock.advance(5)
    assert b.delay() == 8


def test_after_a_healthy_session_the_next_attempt_is_at_once_and_the_curve_starts_again():
    clock = Clock()
    b = backoff(clock)
    for _ in range(6):
        b.delay()
    b.logged_in()
    b.healthy()
    clock.advance(61)
    assert b.delay() == 0.5  # the jitter only: 0 to 1 s
    assert b.delay() == 1  # that attempt failed: the curve from its start
    assert b.delay() == 2


def test_the_quick_return_is_jittered_and_bounded():
    for jitter, expected in ((0.0, 0.0), (1.0, 1.0), (0.25, 0.25)):
        clock = Clock()
        b = backoff(clock, jitter=jitter)
        b.healthy()
        clock.advance(30)
        assert b.delay() == expected


def test_a_healthy_session_that_ends_within_quick_after_counts_as_a_failure():
    """A server that answers STATUS and drops the session at once cannot make a loop of it:
    the delay keeps growing until a session lasts quick_after (10 s)."""
    clock = Clock()
    b = backoff(clock)
    delays = []
    for _ in range(4):
        b.healthy()
        clock.advance(0.2)
        delays.append(b.delay())
    assert delays == [1, 2, 4, 8]
    b.healthy()
    clock.advance(10)
    assert b.delay() == 0.5  # a session that lasted: back at once
    assert b.delay() == 1


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
