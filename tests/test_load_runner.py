"""The load runner measured on operations of known duration (they test the instrument).

Margins are wide enough for a shared, noisy 2-core machine; the benchmarks with
tight figures live in tests/bench/test_load_perf.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from pytest_agentmem.errors import ConfigurationError
from pytest_agentmem.load import LoadSpec, run_load, validate
from pytest_agentmem.load.resources import service_pids_of
from pytest_agentmem.services.plugin import service_manager


async def sleep_10ms(index: int) -> None:
    """Module level, so worker processes (processes=N) can import it."""
    await asyncio.sleep(0.010)


async def _run(op, **kwargs):
    kwargs.setdefault("name", "t")
    return await run_load(op, validate(op, **kwargs))


@pytest.mark.asyncio
async def test_p50_of_a_10ms_op_is_10ms() -> None:
    own_ms: list[float] = []

    async def timed_sleep_10ms(index: int) -> None:
        began = time.perf_counter()
        await asyncio.sleep(0.010)
        own_ms.append((time.perf_counter() - began) * 1000)

    result = await _run(timed_sleep_10ms, concurrency=4, duration=1.0)
    # a sleep is never shorter; a busy machine wakes it late, in the op's own time as in
    # the runner's. The runner's clock reads run back to back with the op's (no await in
    # between), so its median is the op's own within the histogram's precision: a runner
    # that added its own time (queueing, a late wake-up of its own) would show here.
    assert 9.9 <= result.p50_ms, result.describe()
    own_p50 = sorted(own_ms)[len(own_ms) // 2]
    assert result.p50_ms == pytest.approx(own_p50, abs=0.5), (own_p50, result.describe())
    assert result.errors == 0 and result.ops > 20  # about 400 quiet; a starved loop does far fewer
    assert result.p50_ms <= result.p90_ms <= result.p95_ms <= result.p99_ms <= result.p999_ms <= result.max_ms


@pytest.mark.asyncio
async def test_qps_of_n_users_is_n_times_100() -> None:
    users = 20
    result = await _run(sleep_10ms, concurrency=users, duration=1.5)
    # Little's law holds for the runner's own figures within a few percent...
    assert result.qps * result.mean_ms / 1000 == pytest.approx(users, rel=0.05), result.describe()
    # ...and the throughput is at most N x 100/s (how far below depends on how late a
    # busy machine wakes the sleeps up: Little's law above already ties it to them)
    assert result.qps <= users * 100 * 1.02, result.describe()


def _stalling_op(stall_at: int):
    async def op(index: int) -> None:
        if index == stall_at:
            time.sleep(0.5)  # blocks the whole event loop: a stall
        await asyncio.sleep(0.002)
    return op


@pytest.mark.asyncio
async def test_open_loop_shows_a_stall_in_the_tail_closed_loop_hides_it() -> None:
    open_loop = await _run(_stalling_op(100), rate=200, duration=2.0)
    # A count, not a duration: 1 stall in 400 ops stays out of p99 however slow the machine.
    closed = await _run(_stalling_op(100), concurrency=1, total=400)
    # open loop: ~100 ops were due during the 500 ms stall, ~25 % of 400
    assert open_loop.ops == pytest.approx(400, abs=4)
    assert open_loop.p95_ms >= 200, open_loop.describe()
    assert open_loop.p99_ms >= 350, open_loop.describe()
    assert open_loop.missed_schedule["count"] >= 50
    assert open_loop.missed_schedule["max_lag_ms"] >= 400
    # closed loop: one slow op among 400; p95/p99 stay below the stall (for the 2 ms ops to
    # reach 500 ms at p99, 4 of them would have to stall as long as the injected stall)
    assert closed.max_ms >= 500
    assert closed.p95_ms < 500 and closed.p99_ms < 500, closed.describe()


@pytest.mark.asyncio
async def test_open_loop_rate_and_latency_from_intended_start() -> None:
    result = await _run(sleep_10ms, rate=100, duration=1.0)
    assert result.ops == 100 and result.mode == "open"
    # From the intended start: never shorter than the sleep, however late a busy machine
    # starts it (how late shows in the stall test above). The upper bound tells ms from us.
    assert 9.9 <= result.p50_ms < 1000
    # The schedule caps the rate: 100 operations due in 1 s (a slow machine runs them later).
    assert result.qps <= 100 * 1.02


@pytest.mark.asyncio
async def test_open_loop_cap_delays_ops_and_their_latency_counts_from_intended_start() -> None:
    # 1 op in flight at a time, 10 ms each, due every 5 ms: the queue grows
    result = await _run(sleep_10ms, rate=200, total=40, concurrency=1)
    assert result.ops == 40
    assert result.missed_schedule["capped"] > 0
    # the 40th op was due at 195 ms and could start at ~390 ms at the earliest
    assert result.max_ms >= 150, result.describe()


@pytest.mark.asyncio
async def test_errors_timeouts_and_warmup_are_counted_exactly() -> None:
    seen: list[int] = []

    async def op(index: int) -> None:
        seen.append(index)
        if index % 10 == 0:
            raise ValueError(f"bad {index}")
        if index % 10 == 1:
            await asyncio.sleep(5)  # cancelled by the timeout
        elif index % 10 == 2:
            raise KeyError(index)

    result = await _run(op, concurrency=8, total=200, warmup=30, timeout=0.05)
    assert sorted(seen) == list(range(230))  # warm-up ops ran first, then 200 measured
    assert result.ops == 200 and result.warmup_ops == 30
    assert result.timeouts == 20
    assert result.errors == 60  # 20 ValueError, 20 KeyError, 20 timeouts
    assert result.error_rate == pytest.approx(0.3)
    assert result.histogram.get_total_count() == 140
    assert result.errors_by_type["ValueError"]["count"] == 20
    assert result.errors_by_type["ValueError"]["samples"] == ["bad 30", "bad 40", "bad 50"]
    assert result.errors_by_type["KeyError"]["count"] == 20
    assert result.errors_by_type["Timeout"]["count"] == 20
    assert result.max_ms < 1000


@pytest.mark.asyncio
async def test_an_op_raising_timeouterror_itself_is_an_error_not_a_timeout() -> None:
    async def op(index: int) -> None:
        raise TimeoutError("the server said so")

    result = await _run(op, total=5, timeout=1.0)
    assert result.errors == 5 and result.timeouts == 0
    assert "TimeoutError" in result.errors_by_type


@pytest.mark.asyncio
async def test_warmup_in_open_loop_is_excluded() -> None:
    seen: list[int] = []

    async def op(index: int) -> None:
        seen.append(index)

    result = await _run(op, rate=500, total=50, warmup=20)
    assert sorted(seen) == list(range(70))
    assert result.ops == 50


@pytest.mark.asyncio
async def test_duration_ends_the_run_and_timeline_has_one_entry_a_second() -> None:
    result = await _run(sleep_10ms, concurrency=2, duration=2.2)
    # A count, not a wall-clock bound: each op sleeps >= 10 ms on any machine, so 2 users
    # start at most 2 x 220 in 2.2 s (+1 each in flight); a slow machine starts fewer.
    assert 2.2 <= result.duration_s
    assert result.ops <= 2 * 220 + 2
    assert [round(e["t"]) for e in result.timeline[:2]] == [1, 2]
    assert sum(e["ops"] for e in result.timeline) == result.ops
    assert all(e["p95_ms"] >= 9.9 for e in result.timeline if e["ops"])
    assert result.resources["process_cpu_s"] >= 0
    assert result.resources["process_rss_mb_max"] > 10


@pytest.mark.asyncio
async def test_a_cpu_bound_op_that_never_suspends_ends_on_time() -> None:
    """The users check the clock themselves: the loop's timer runs only when an op yields.

    A 4 ms op that never awaits yields to the loop every 256 operations (about 1 s);
    the run still ends after its 0.3 s (the margin allows a busy machine).
    """
    async def spin_4ms(index: int) -> None:
        end = time.perf_counter() + 0.004
        while time.perf_counter() < end:
            pass

    result = await _run(spin_4ms, concurrency=2, duration=0.3)
    assert 0.3 <= result.duration_s
    # Each op spins >= 4 ms of wall time on any machine: ending on time allows < 80 of
    # them, waiting for the loop's timer would run 256 (a slower machine runs fewer).
    assert result.ops < 200


@pytest.mark.asyncio
async def test_a_noop_op_that_never_suspends_does_not_hang_the_run() -> None:
    async def noop(index: int) -> None:
        return None

    calls: list[int] = []

    async def noop_counted(index: int) -> None:
        calls.append(index)

    # It ends (a hang fails here, not at the suite's timeout); no wall-clock bound.
    result = await asyncio.wait_for(_run(noop_counted, concurrency=3, duration=0.3), 120)
    assert result.ops == len(calls) > 0 and 0.3 <= result.duration_s


def test_processes_spread_users_and_merge_exactly() -> None:
    async def main():
        return await _run(sleep_10ms, concurrency=4, total=200, warmup=8, processes=2)

    result = asyncio.run(main())
    assert result.processes == 2 and result.ops == 200 and result.errors == 0
    assert result.histogram.get_total_count() == 200
    assert 9.9 <= result.p50_ms < 1000  # milliseconds, not microseconds (a sleep is never shorter)
    assert result.resources["process_cpu_s"] >= 0 and result.resources["process_rss_mb_max"] > 10


def test_processes_split_an_open_loop_schedule() -> None:
    async def main():
        return await _run(sleep_10ms, rate=200, total=150, processes=2)

    result = asyncio.run(main())
    assert result.processes == 2 and result.mode == "open" and result.rate == 200
    assert result.ops == 150 and result.histogram.get_total_count() == 150
    assert result.placement == {"backend": "processes", "workers": 2, "nodes": result.placement["nodes"]}
    assert sum(result.placement["nodes"].values()) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 0, "total": 1}, "concurrency must be an int >= 1"),
    ({"rate": 0, "total": 1}, "rate must be a number"),
    ({"rate": float("nan"), "total": 1}, "rate must be a number"),
    ({}, "give duration= (seconds) or total="),
    ({"total": 0}, "total must be an int >= 1"),
    ({"duration": -1}, "duration must be a number"),
    ({"total": 1, "warmup": -1}, "warmup must be an int >= 0"),
    ({"total": 1, "timeout": 0}, "timeout must be a number"),
    ({"total": 1, "rate": 10, "processes": 3, "concurrency": 2}, "splits the cap on operations in flight"),
    ({"total": 1, "concurrency": 1, "processes": 2}, "needs at least as many users"),
])
def test_arguments_are_validated(kwargs, message) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate(sleep_10ms, **kwargs)
    assert message in str(info.value)


def test_processes_need_a_picklable_op() -> None:
    async def local(index: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match="module-level async function"):
        validate(local, concurrency=2, total=2, processes=2)


def test_spec_defaults() -> None:
    assert validate(sleep_10ms, total=1) == LoadSpec(concurrency=1, total=1, name="load")
    assert validate(sleep_10ms, rate=5, total=1).concurrency is None  # open loop: no cap


@pytest.mark.asyncio
async def test_the_service_processes_are_measured(redis_client, pytestconfig) -> None:
    await redis_client.set("key", b"x")

    async def get(index: int) -> None:
        await redis_client.get("key")

    spec = validate(get, concurrency=4, total=2000)
    result = await run_load(get, spec, service_pids=service_pids_of(service_manager(pytestconfig)))
    assert result.errors == 0 and result.ops == 2000
    assert result.resources["services_cpu_s"] > 0, result.resources
    assert result.resources["services_rss_mb_max"] > 1, result.resources
