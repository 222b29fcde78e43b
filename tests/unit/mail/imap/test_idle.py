"""The anti-spin rule shared by account checks and ``watch``: quick ends of IDLE in a row."""

from __future__ import annotations

import pytest

from mailsocketd.mail.imap.idle import IDLE_SHORT, IDLE_SHORT_LIMIT, QuickIdleEnds

QUICK = IDLE_SHORT / 10
LONG = IDLE_SHORT


def run(ends: list[tuple[float, bool, bool]]) -> list[bool]:
    rule = QuickIdleEnds()
    return [rule.ended(lasted, by_server=by_server, news=news)
            for lasted, by_server, news in ends]


def test_the_limit_of_quick_ends_by_the_server_in_a_row_means_poll():
    verdicts = run([(QUICK, True, False)] * IDLE_SHORT_LIMIT)
    assert verdicts == [False] * (IDLE_SHORT_LIMIT - 1) + [True]


@pytest.mark.parametrize(("between", "breaks"), [
    ((LONG, True, False), True),   # an IDLE that lasted, ended by the server
    ((LONG, False, False), True),  # ... or by us
    ((LONG, True, True), True),    # ... even with news
    ((QUICK, False, False), False),  # one we ended early: neither counts nor breaks
    ((QUICK, True, True), False),    # one the server ended with news: the same
])
def test_what_breaks_the_row(between, breaks):
    quick = (QUICK, True, False)
    ends = [quick] * (IDLE_SHORT_LIMIT - 1) + [between, quick]
    assert run(ends)[-1] is (not breaks)
