"""How many paired rounds an A/B run is split into when the user does not say."""

from __future__ import annotations

import pytest

from pytest_agentmem.compare.pacer import MAX_AUTO_PAIRS, MIN_AUTO_PAIRS, auto_pairs, pairs_text
from pytest_agentmem.load.spec import validate


async def _op(i: int) -> None:
    return None


@pytest.mark.parametrize(("run", "rounds", "pairs"), [
    ({"duration": 2.0}, 1, 40),                     # rounds of 50 ms
    ({"duration": 0.6}, 1, 12),
    ({"duration": 0.3}, 2, 12),                     # the measured time of all rounds asked
    ({"duration": 0.3}, 1, MIN_AUTO_PAIRS),         # a short run still gets enough pairs for a test
    ({"duration": 60.0}, 1, MAX_AUTO_PAIRS),        # a long run gets longer rounds, not thousands of hand-overs
    ({"duration": 10.0, "rate": 100}, 1, 50),       # 1,000 arrivals: 20 a round
    ({"duration": 2.0, "rate": 50}, 1, MIN_AUTO_PAIRS),
    ({"total": 2000}, 1, 100),                      # ends by count: by operations only
    ({"total": 2000, "concurrency": 50}, 1, 40),    # a round holds at least one operation per user
    # 20,000 agents thinking 200 s for 12 s offer 1,200 operations: far fewer than a round needs
    ({"duration": 12.0, "concurrency": 20000, "think": 200.0}, 1, MIN_AUTO_PAIRS),
    ({"duration": 10.0, "concurrency": 8, "processes": 2}, 1, MIN_AUTO_PAIRS),  # workers start each round
])
def test_auto_pairs_aim_at_short_rounds_that_hold_enough_operations(run: dict, rounds: int, pairs: int) -> None:
    assert auto_pairs(validate(_op, **run), rounds) == pairs


def test_without_a_spec_the_fewest_pairs() -> None:
    assert auto_pairs(None) == MIN_AUTO_PAIRS


def test_the_reports_say_how_rounds_are_paired() -> None:
    assert pairs_text(12) == "12 paired rounds"
    assert pairs_text(None) == "paired rounds of about 50 ms"


def test_a_run_says_how_many_operations_a_round_offers() -> None:
    assert validate(_op, total=500).offered_ops() == 500
    assert validate(_op, total=500, duration=1.0, rate=100).offered_ops() == 100  # the rate ends it first
    assert validate(_op, duration=2.0, rate=50).offered_ops() == 100
    assert validate(_op, duration=10.0, concurrency=1000, think=200.0).offered_ops() == 50
    assert validate(_op, duration=2.0, concurrency=4).offered_ops() is None  # as fast as the op allows
