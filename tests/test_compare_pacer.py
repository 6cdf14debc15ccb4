"""How many paired rounds an A/B run is split into when the user does not say."""

from __future__ import annotations

import pytest

from pytest_agentmem.compare.pacer import MAX_AUTO_PAIRS, MIN_AUTO_PAIRS, auto_pairs, pairs_text
from pytest_agentmem.load.spec import validate


async def _op(i: int) -> None:
    return None


@pytest.mark.parametrize(("measured_s", "expected_ops", "pairs"), [
    (2.0, None, 40),            # rounds of 50 ms
    (0.6, None, 12),
    (0.3, None, MIN_AUTO_PAIRS),  # a short run still gets enough pairs for a test
    (60.0, None, MAX_AUTO_PAIRS),  # a long run gets longer rounds, not thousands of hand-overs
    (10.0, 1000.0, 50),         # a run that offers 1,000 operations: 20 a round
    (2.0, 100.0, MIN_AUTO_PAIRS),
    (None, 2000.0, 100),        # ends by count: by operations only
    (None, None, MIN_AUTO_PAIRS),
])
def test_auto_pairs_aim_at_short_rounds_that_hold_enough_operations(
        measured_s: float | None, expected_ops: float | None, pairs: int) -> None:
    assert auto_pairs(measured_s, expected_ops) == pairs


def test_the_reports_say_how_rounds_are_paired() -> None:
    assert pairs_text(12) == "12 paired rounds"
    assert pairs_text(None) == "paired rounds of about 50 ms"


def test_a_run_says_how_many_operations_a_round_offers() -> None:
    assert validate(_op, total=500).offered_ops() == 500
    assert validate(_op, total=500, duration=1.0, rate=100).offered_ops() == 100  # the rate ends it first
    assert validate(_op, duration=2.0, rate=50).offered_ops() == 100
    assert validate(_op, duration=10.0, concurrency=1000, think=200.0).offered_ops() == 50
    assert validate(_op, duration=2.0, concurrency=4).offered_ops() is None  # as fast as the op allows
