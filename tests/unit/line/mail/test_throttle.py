"""Failed logins per address: growing delays, then a lock-out that ages away."""

from __future__ import annotations

from twisted.internet.task import Clock

from mailsocketd.line.mail.throttle import MAX_DELAY, LoginThrottle, client_key, user_key


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


def test_clients_are_keyed_by_ipv4_address_ipv6_slash_64_and_unix_peer_uid():
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"  # a dual-stack listener's IPv4 client
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("unix", 1000) == "unix uid 1000"
    assert client_key("unix", 1000) != client_key("unix", 1001)
    assert client_key("unix") == "unix"  # peer unknown: all such clients as one


def test_user_names_are_keyed_by_their_local_part_case_folded():
    assert user_key("Alice") == user_key("alice") == user_key("alice@evil.example") == "alice"
    assert user_key("a@b@c") == "a@b"
    assert user_key("@example.test") == "@example.test"


def test_attempts_under_way_count_so_no_more_than_the_limit_are_ever_tried():
    clock = Clock()
    throttle = LoginThrottle(clock, limit=3, window=60.0)
    assert [throttle.reserve("h") for _ in range(5)] == [True, True, True, False, False]
    assert throttle.pending("h") == 3
    throttle.failed("h", reserved=True)
    assert not throttle.reserve("h")  # one failed, two still under way: no room
    throttle.release("h")  # one of them logged in
    assert throttle.reserve("h")  # room for exactly one more
    assert not throttle.reserve("h")
    throttle.failed("h", reserved=True)
    throttle.failed("h", reserved=True)
    assert throttle.pending("h") == 0 and throttle.locked_for("h") == 60.0
    assert not throttle.reserve("h")
    clock.advance(60.0)
    assert throttle.reserve("h")


def test_status_counts_only_records_that_have_not_aged_out():
    """Issue 16: ``status`` said 'failed logins on record from 1 addresses' 396 s after the last
    failure with a 300 s lockout, because records were pruned only when their key came back."""
    clock = Clock()
    throttle = LoginThrottle(clock, limit=5, window=300.0)
    for _ in range(5):
        throttle.failed("192.0.2.7")
    throttle.failed("192.0.2.8")
    clock.advance(100.0)
    throttle.failed("192.0.2.9")
    assert throttle.addresses() == 3
    clock.advance(296.0)  # 396 s after the first two keys' last failure
    assert throttle.addresses() == 1  # only 192.0.2.9's failure is still within its window
    clock.advance(100.0)
    assert throttle.addresses() == 0
