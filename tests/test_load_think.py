"""Closed-loop users with think time (``think=``): what they offer, what is timed, how they stop.

No timing lower bounds on throughput: the bounds below are loose upper bounds
(a no-op never takes the think time; a run never waits for users that think).
"""

from __future__ import annotations

import asyncio

import pytest

from pytest_agentmem.errors import ConfigurationError
from pytest_agentmem.load import run_load, validate
from pytest_agentmem.load.runner import MIN_DRAIN_GRACE_S


async def noop(index: int) -> None:
    return None


@pytest.mark.asyncio
async def test_think_time_is_not_in_the_latency() -> None:
    spec = validate(noop, concurrency=200, think=0.5, duration=1.5, name="think")
    result = await run_load(noop, spec)
    assert result.ops > 50 and result.errors == 0, result.describe()
    # were the think time timed, the median would be ~0.35 s; a no-op takes microseconds
    assert result.p50_ms < 100.0, result.describe()
    assert result.think_s == 0.5 and "thinking 0.5 s" in result.describe()
    assert result.offered_rate == pytest.approx(200 / 0.5, rel=0.01)
    assert result.to_dict()["think_s"] == 0.5


@pytest.mark.asyncio
async def test_users_think_before_their_first_operation() -> None:
    """1,000 users thinking 1,000 s on average act ~0.3 times in 0.3 s, not 1,000 times at once."""
    spec = validate(noop, concurrency=1000, think=1000.0, duration=0.3, name="herd")
    result = await run_load(noop, spec)
    assert result.ops < 20, result.describe()


@pytest.mark.asyncio
async def test_a_run_does_not_wait_for_users_that_think() -> None:
    """At the end of the duration thinking users stop at once: no drain period, nothing cut."""
    spec = validate(noop, concurrency=500, think=1000.0, duration=0.2, name="stop")
    result = await run_load(noop, spec)
    assert result.cancelled == 0 and result.errors == 0
    assert result.duration_s < spec.duration + MIN_DRAIN_GRACE_S, result.describe()
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("agentmem-user-")]
    assert leftover == []


@pytest.mark.asyncio
async def test_operations_in_flight_at_the_end_still_finish() -> None:
    async def slow(index: int) -> None:
        await asyncio.sleep(0.3)

    spec = validate(slow, concurrency=50, think=0.01, duration=0.5, name="drain")
    result = await run_load(slow, spec)
    assert result.cancelled == 0 and result.errors == 0 and result.ops >= 50, result.describe()


@pytest.mark.asyncio
async def test_warmup_with_think_ends_when_its_operations_are_done() -> None:
    """A warm-up (a total) ends its thinking users too, instead of waiting for them."""
    spec = validate(noop, concurrency=20, think=0.05, total=30, warmup=10, timeout=5.0, name="w")
    result = await run_load(noop, spec)
    assert result.ops == 30 and result.warmup_ops == 10, result.describe()


@pytest.mark.parametrize("kwargs, message", [
    ({"think": 0}, "think must be a number of seconds > 0"),
    ({"think": float("inf")}, "think must be a number of seconds > 0"),
    ({"think": "1"}, "think must be a number of seconds > 0"),
    ({"think": 1.0, "rate": 10.0}, "think= paces closed-loop users"),
])
def test_think_is_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        validate(noop, concurrency=2, duration=1.0, **kwargs)
