"""Benchmarks of the load engine itself (run with --agentmem-perf).

    python -m pytest tests/bench/test_load_perf.py --agentmem-perf -p no:cacheprovider -s

Each benchmark interleaves what it compares in the same run and quotes medians
and ratios (the machine is shared and noisy); the figures are printed and
recorded with ``perf.record`` for the gate and the reports.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from pytest_agentmem.load import run_load, validate

ROUNDS = 3


async def noop(index: int) -> None:
    return None


async def _hand_loop(op, users: int, duration: float) -> tuple[int, float]:
    """The reference: ``users`` coroutines calling ``op`` back to back; (calls, seconds)."""
    stop = False
    count = 0

    async def worker() -> None:
        nonlocal count
        done = 0
        while not stop:
            await op(count)
            count += 1
            done += 1
            if not done % 256:
                await asyncio.sleep(0)

    def end() -> None:
        nonlocal stop
        stop = True

    loop = asyncio.get_running_loop()
    handle = loop.call_later(duration, end)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(users)))
    handle.cancel()
    return count, time.perf_counter() - start


@pytest.mark.agentmem_perf(min_runner_ops_per_s=200_000)
async def test_runner_ops_per_second_on_a_noop(perf) -> None:
    runner, reference = [], []
    for _ in range(ROUNDS):
        count, elapsed = await _hand_loop(noop, 1, 2.0)
        reference.append(count / elapsed)
        result = await perf.run(noop, concurrency=1, duration=2.0, name=f"noop-{len(runner)}")
        runner.append(result.ops / result.duration_s)
    many = await perf.run(noop, concurrency=1000, duration=2.0, name="noop-1000-users")
    figures = {"runner_ops_per_s": statistics.median(runner),
               "hand_loop_ops_per_s": statistics.median(reference),
               "runner_ops_per_s_1000_users": many.ops / many.duration_s,
               "process_cpu_pct": result.resources["process_cpu_pct"]}
    perf.record("runner", **figures)
    print(f"\nno-op op, {result.loop}: runner {runner} ops/s (median {figures['runner_ops_per_s']:,.0f}); "
          f"hand loop without timing {reference} (median {figures['hand_loop_ops_per_s']:,.0f}); "
          f"1000 users {figures['runner_ops_per_s_1000_users']:,.0f} ops/s")


@pytest.mark.agentmem_perf(max_overhead_pct=5)
async def test_overhead_against_a_hand_written_loop_on_redis_gets(perf, redis_client) -> None:
    """Same GETs, same users: the runner against a bare loop, in short alternating slices.

    Slices alternate ABBA so drift of the machine's speed hits both alike; the
    overhead is 1 - the median of the per-pair throughput ratios. CPU time per
    operation (this process) is compared too: it is less sensitive to other
    processes competing for the cores than throughput is.
    """
    await redis_client.set("key", b"x" * 100)

    async def get(index: int) -> None:
        await redis_client.get("key")

    users, seconds, pairs = 8, 0.5, 12
    spec = validate(get, concurrency=users, duration=seconds, name="redis-get")
    await _hand_loop(get, users, 0.5)  # warm the connections
    ratios, cpu_ratios, runner, reference = [], [], [], []
    for number in range(pairs):
        order = ("hand", "runner") if number % 2 == 0 else ("runner", "hand")
        pair: dict[str, tuple[float, float]] = {}
        for which in order:
            cpu0 = time.process_time()
            if which == "hand":
                ops, elapsed = await _hand_loop(get, users, seconds)
                rate = ops / elapsed
            else:
                result = await run_load(get, spec)
                rate, ops = result.ops / result.duration_s, result.ops
            pair[which] = (rate, (time.process_time() - cpu0) / ops * 1e6)
        runner.append(pair["runner"][0])
        reference.append(pair["hand"][0])
        ratios.append(pair["runner"][0] / pair["hand"][0])
        cpu_ratios.append(pair["runner"][1] / pair["hand"][1])
    overhead = 100.0 * (1.0 - statistics.median(ratios))
    cpu_overhead = 100.0 * (statistics.median(cpu_ratios) - 1.0)
    perf.record("redis_get_overhead", overhead_pct=overhead, cpu_overhead_pct=cpu_overhead,
                runner_ops_per_s=statistics.median(runner),
                hand_loop_ops_per_s=statistics.median(reference))
    print(f"\nredis GET x{users} users, {result.loop}: runner median {statistics.median(runner):,.0f} "
          f"ops/s, hand loop median {statistics.median(reference):,.0f} ops/s; per-pair ratios "
          f"{[round(x, 3) for x in ratios]}; throughput overhead (1 - median ratio) {overhead:.1f} %; "
          f"CPU-per-op overhead (median ratio - 1) {cpu_overhead:.1f} %")


@pytest.mark.agentmem_perf(max_process_cpu_pct=25)
async def test_engine_overhead_of_20000_thinking_users(perf) -> None:
    """ENGINE OVERHEAD ONLY, not a system figure: 20,000 users of the concurrent-users scenario
    (think time THINK_S, so 100 operations/s) doing nothing, on this process's event loop.

    The users against the real services are the scenario
    (``pytest_agentmem/scenarios/users.py``, run by tests/perf/test_scenarios.py);
    this measures what driving them costs: the CPU share of this process (one core
    = 100 %) is the driver's own, and the no-op's latency is the loop's delay.
    It shows one process suffices to drive 20,000 users at that rate.
    """
    from pytest_agentmem.scenarios.users import THINK_S

    users, seconds = 20_000, 10.0
    result = await perf.run(noop, concurrency=users, think=THINK_S, duration=seconds,
                            name="20k-thinking-users-noop")
    cpu = result.resources["process_cpu_pct"]
    perf.record("20k_thinking_users", process_cpu_pct=cpu, served_per_s=result.qps,
                offered_per_s=users / THINK_S, rss_mb=result.resources["process_rss_mb_max"])
    print(f"\n20,000 users thinking {THINK_S:g} s, no-op op, {result.loop}: {result.describe()}; "
          f"driver cpu {cpu:.1f} % of one core, rss {result.resources['process_rss_mb_max']:.0f} MB")
