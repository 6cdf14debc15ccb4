"""A run ends on time, always: operations still running after the drain period are cut.

The bounds below are hang guards (``asyncio.wait_for``), not timing asserts.
"""

from __future__ import annotations

import asyncio

import pytest

from pytest_agentmem.load import run_load, validate
from pytest_agentmem.load.result import CANCELLED_AT_END
from pytest_agentmem.load.runner import (
    CANCEL_WAIT_S,
    MAX_DRAIN_GRACE_S,
    MIN_DRAIN_GRACE_S,
)

#: The run may take the duration, the longest drain period and the cancel wait; plus slack.
BOUND_S = MAX_DRAIN_GRACE_S + CANCEL_WAIT_S + 5.0


async def _run(op, **kwargs):
    kwargs.setdefault("name", "drain")
    spec = validate(op, **kwargs)
    return await asyncio.wait_for(run_load(op, spec), (spec.duration or 0) + BOUND_S)


def _never_returns_at(*stuck: int):
    async def op(index: int) -> None:
        if index in stuck:
            await asyncio.Event().wait()
        await asyncio.sleep(0.005)
    return op


@pytest.mark.asyncio
async def test_closed_loop_cuts_an_op_that_never_returns() -> None:
    result = await _run(_never_returns_at(0), concurrency=2, duration=0.5)
    assert result.cancelled == 1
    assert result.errors_by_type[CANCELLED_AT_END]["count"] == 1
    assert result.errors == 1 and result.ops == result.histogram.get_total_count() + 1
    assert result.duration_s >= 0.5 + MIN_DRAIN_GRACE_S * 0.9  # it did wait the drain period
    assert "cancelled at the end of the run" in result.describe()


@pytest.mark.asyncio
async def test_open_loop_cuts_ops_that_never_return() -> None:
    result = await _run(_never_returns_at(3, 7), rate=50, duration=0.5)
    assert result.cancelled == 2
    assert result.errors_by_type[CANCELLED_AT_END]["count"] == 2
    assert result.ops == 25 and result.errors == 2


@pytest.mark.asyncio
async def test_with_a_timeout_the_timeout_ends_them_not_the_cut() -> None:
    result = await _run(_never_returns_at(0, 1), concurrency=2, duration=0.3, timeout=0.2)
    assert result.timeouts == 2 and result.cancelled == 0


@pytest.mark.asyncio
async def test_an_op_swallowing_the_cancellation_is_abandoned_and_counted() -> None:
    release = asyncio.Event()

    async def stubborn(index: int) -> None:
        if index == 0:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    pass  # a badly behaved op
        await asyncio.sleep(0.005)

    try:
        result = await _run(stubborn, concurrency=2, duration=0.3)
    finally:
        release.set()
        await asyncio.sleep(0.05)  # let the abandoned user finish
    assert result.cancelled == 1 and result.errors == 1


@pytest.mark.asyncio
async def test_ops_finishing_in_the_drain_period_count_as_successes() -> None:
    async def op(index: int) -> None:
        await asyncio.sleep(0.3)

    result = await _run(op, concurrency=3, duration=0.1)
    assert result.cancelled == 0 and result.errors == 0 and result.ops == 3
