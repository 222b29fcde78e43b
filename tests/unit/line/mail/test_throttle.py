"""Failed logins per address: growing delays, then a lock-out that ages away."""

from __future__ import annotations

from twisted.internet.task import Clock

from mailsocketd.line.mail.throttle import MAX_DELAY, LoginThrottle


def test_delays_grow_then_the_address_is_locked_out():
    clock = Clock()
    throttle = LoginThrottle(clock, limit=5, window=300.0)
    delays = [throttle.failed("192.0.2.7") for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert throttle.locked_for("192.0.2.7") == 0.0
    assert throttle.failed("192.0.2.7") == MAX_DELAY
    assert throttle.locked_for("192.0.2.7") == 300.0
    assert throttle.locked_for("192.0.2.8") == 0.0  # other addresses are not affected
    clock.advance(299.0)
    assert throttle.locked_for("192.0.2.7") == 1.0
    clock.advance(1.0)
    assert throttle.locked_for("192.0.2.7") == 0.0


def test_old_failures_age_out_and_stop_counting():
    clock = Clock()
    throttle = LoginThrottle(clock, limit=3, window=60.0)
    throttle.failed("h")
    throttle.failed("h")
    clock.advance(61.0)
    assert throttle.failed("h") == 1.0  # the first two no longer count
    assert throttle.locked_for("h") == 0.0
    assert throttle.addresses() == 1
    clock.advance(61.0)
    assert throttle.locked_for("h") == 0.0
    assert throttle.addresses() == 0
