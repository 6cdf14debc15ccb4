"""CPU cost per operation (``cpu_ms_per_op``): the test process, its workers and the services.

No timing asserts: CPU seconds of deterministic work are compared with wide
ratios, and the services' share with a lower bound that a slower machine only
raises.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from pytest_agentmem.gate.directions import compared, direction_of, is_primary, is_time_like, latency_floor
from pytest_agentmem.load import histogram as hdr
from pytest_agentmem.load import run_load, validate
from pytest_agentmem.load.fixtures import round_figures
from pytest_agentmem.load.resources import service_pids_of
from pytest_agentmem.load.result import LoadResult, merge_results, model_yardstick
from pytest_agentmem.services.plugin import service_manager

BURN_SQL = "SELECT count(*) FROM generate_series(1, 200000)"


def _burn(units: int) -> bytes:
    digest = b"x"
    for _ in range(units):
        digest = hashlib.sha256(digest * 64).digest()
    return digest


async def burn_op(index: int) -> None:
    """Module level: CPU work in this process (picklable for processes=N)."""
    _burn(2000)


async def _run(op, service_pids=None, **kwargs):
    kwargs.setdefault("name", "cpu")
    return await run_load(op, validate(op, **kwargs), service_pids=service_pids)


@pytest.mark.asyncio
async def test_cpu_per_op_is_positive_for_a_cpu_burning_op_and_in_every_output() -> None:
    result = await _run(burn_op, total=50)
    assert result.resources["process_cpu_s"] > 0
    assert result.cpu_ms_per_op > 0
    assert result.cpu_ms_per_op == pytest.approx(
        1000 * result.resources["process_cpu_s"] / result.successes)
    assert result.metrics()["cpu_ms_per_op"] == result.cpu_ms_per_op
    assert result.to_dict()["cpu_ms_per_op"] == result.cpu_ms_per_op


@pytest.mark.asyncio
async def test_the_embedding_models_share_of_the_cpu_is_counted(embedder) -> None:
    """What the model's runs took of an operation's CPU (the gate picks a figure's peers by it)."""
    model = embedder.uncached()
    texts = iter(range(10**9))

    async def embed_op(index: int) -> None:
        await model.embed([f"note {next(texts)}: the user moved to a new flat near the station"])

    embedding = await _run(embed_op, total=40, concurrency=4)
    assert embedding.resources["model_cpu_s"] > 0
    assert 0.3 < embedding.model_cpu_share <= 1.0, embedding.resources
    assert embedding.to_dict()["model_cpu_share"] == embedding.model_cpu_share
    hashing = await _run(burn_op, total=40)
    assert hashing.model_cpu_share == 0.0
    merged = merge_results([embedding, hashing])
    assert merged.resources["model_cpu_s"] == pytest.approx(embedding.resources["model_cpu_s"])
    embedding.resources.pop("model_cpu_s")  # worker processes ran it: unknown, not 0
    assert embedding.model_cpu_share is None


@pytest.mark.asyncio
async def test_an_operation_that_embeds_is_also_measured_in_units_of_the_model(embedder) -> None:
    """``model_cpu_ms_per_op`` and ``cpu_model_ratio``: the model as the round's yardstick."""
    model = embedder.uncached()
    texts = iter(range(10**9))

    async def embed_and_hash(index: int) -> None:
        await model.embed([f"note {next(texts)}: the user moved to a new flat near the station"])
        _burn(200)  # the rest of the operation: real CPU outside the model

    result = await _run(embed_and_hash, total=40, concurrency=4)
    figures = result.metrics()
    model_ms = 1000 * result.resources["model_cpu_s"] / result.successes
    assert figures["model_cpu_ms_per_op"] == pytest.approx(model_ms)
    assert figures["cpu_model_ratio"] == pytest.approx(result.cpu_ms_per_op / model_ms)
    assert figures["cpu_model_ratio"] > 1.0  # the hashing is outside the model
    assert result.rounds == [] and round_figures(result)["cpu_model_ratio"] == figures["cpu_model_ratio"]
    for metric in ("model_cpu_ms_per_op", "cpu_model_ratio"):  # gated by default, as CPU costs
        assert direction_of(metric) == "lower" and is_time_like(metric) and is_primary(metric)
        assert latency_floor(metric) == 0.0
    hashing = await _run(burn_op, total=40)  # no model: no yardstick
    assert "cpu_model_ratio" not in hashing.metrics() and "model_cpu_ms_per_op" not in hashing.metrics()


def test_a_run_whose_model_took_little_of_its_cpu_has_no_yardstick() -> None:
    assert model_yardstick({"process_cpu_s": 2.0, "services_cpu_s": 1.0, "model_cpu_s": 1.5}, 100) == {
        "model_cpu_ms_per_op": 15.0, "cpu_model_ratio": 2.0}
    assert model_yardstick({"process_cpu_s": 2.0, "services_cpu_s": 1.0, "model_cpu_s": 0.2}, 100) == {}  # < 10 %
    assert model_yardstick({"process_cpu_s": 2.0}, 100) == {}  # worker processes: unknown
    assert model_yardstick({"process_cpu_s": 2.0, "model_cpu_s": 1.0}, 0) == {}  # nothing succeeded


@pytest.mark.asyncio
async def test_cpu_scales_with_the_operations() -> None:
    few = await _run(burn_op, total=40)
    many = await _run(burn_op, total=160)
    ratio = many.resources["process_cpu_s"] / few.resources["process_cpu_s"]
    assert 2.0 < ratio < 8.0, (few.resources, many.resources)  # 4x the work
    per_op = many.cpu_ms_per_op / few.cpu_ms_per_op
    assert 0.5 < per_op < 2.0, (few.cpu_ms_per_op, many.cpu_ms_per_op)


@pytest.mark.asyncio
async def test_a_sleeping_op_costs_far_less_cpu_than_a_burning_one() -> None:
    async def sleepy(index: int) -> None:
        await asyncio.sleep(0.01)

    idle = await _run(sleepy, total=40, concurrency=1)
    busy = await _run(burn_op, total=40, concurrency=1)
    assert idle.cpu_ms_per_op < busy.cpu_ms_per_op / 2, (idle.cpu_ms_per_op, busy.cpu_ms_per_op)


def test_worker_processes_cpu_is_counted() -> None:
    async def main():
        return await _run(burn_op, total=60, concurrency=2, processes=2)

    result = asyncio.run(main())
    assert result.processes == 2 and result.successes == 60
    # the parent only waits: nearly all the CPU is the workers'
    alone = asyncio.run(_run(burn_op, total=60))
    assert result.cpu_ms_per_op > 0.5 * alone.cpu_ms_per_op, (result.resources, alone.resources)


def _result(ops: int, errors: int, resources: dict[str, float]) -> LoadResult:
    hist = hdr.new_histogram()
    for _ in range(ops - errors):
        hist.record_value(1000)
    return LoadResult.build(histogram=hist, ops=ops, errors=errors, duration_s=1.0, name="m",
                            timeouts=0, concurrency=1, rate=None, resources=resources)


def test_merging_rounds_is_total_cpu_over_total_successes() -> None:
    first = _result(100, 0, {"process_cpu_s": 1.0, "services_cpu_s": 0.5})
    second = _result(50, 10, {"process_cpu_s": 2.0, "services_cpu_s": 0.0})
    assert first.cpu_ms_per_op == 15.0
    assert second.cpu_ms_per_op == 50.0
    merged = merge_results([first, second])
    assert merged.cpu_ms_per_op == 1000 * 3.5 / 140  # not the mean of 15 and 50
    assert [r["cpu_ms_per_op"] for r in merged.rounds] == [15.0, 50.0]


def test_no_success_means_no_cost_figure() -> None:
    assert _result(10, 10, {"process_cpu_s": 1.0}).cpu_ms_per_op == 0.0


def test_cpu_per_op_is_gated_like_a_latency_without_its_jitter_floor() -> None:
    assert direction_of("cpu_ms_per_op") == "lower"
    assert is_time_like("cpu_ms_per_op") and compared("cpu_ms_per_op")
    assert latency_floor("cpu_ms_per_op") == 0.0
    assert latency_floor("p95_ms") > 0


@pytest.mark.asyncio
async def test_postgres_cpu_is_counted_in_the_services(pg_pool, pytestconfig) -> None:
    async def op(index: int) -> None:
        await pg_pool.fetchval(BURN_SQL)

    result = await _run(op, service_pids=service_pids_of(service_manager(pytestconfig)), total=20, concurrency=2)
    assert result.errors == 0
    res = result.resources
    # counting 200k rows takes milliseconds of the backend's CPU, the client microseconds
    assert res["services_cpu_s"] > 20 * 0.002, res
    assert res["services_cpu_s"] > res["process_cpu_s"], res
    assert result.cpu_ms_per_op >= 1000 * res["services_cpu_s"] / 20


@pytest.mark.asyncio
async def test_backends_born_and_gone_between_samples_are_counted(agentmem_services,
                                                                  pytestconfig) -> None:
    import asyncpg

    dsn = agentmem_services.postgres.dsn

    async def op(index: int) -> None:  # a connection of its own: a backend lives ~one query
        conn = await asyncpg.connect(dsn)
        try:
            await conn.fetchval(BURN_SQL)
        finally:
            await conn.close()

    result = await _run(op, service_pids=service_pids_of(service_manager(pytestconfig)), total=10)
    assert result.errors == 0
    assert result.resources["services_cpu_s"] > 10 * 0.002, result.resources


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/task"), reason="Linux /proc only")
def test_a_competing_process_shows_as_run_queue_wait_a_sleep_does_not() -> None:
    """The wait share of a round: time ready to run while other processes held the CPUs."""
    import os
    import subprocess
    import sys
    import time

    from pytest_agentmem.load.fixtures import WAIT_SHARE, round_figures
    from pytest_agentmem.load.resources import run_queue_wait_s

    def burn(seconds: float) -> float:
        start = run_queue_wait_s()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return (run_queue_wait_s() or 0.0) - (start or 0.0)

    assert run_queue_wait_s() is not None
    began, start = time.perf_counter(), run_queue_wait_s() or 0.0
    time.sleep(0.2)
    waited_asleep = (run_queue_wait_s() or 0.0) - start
    awake = time.perf_counter() - began - 0.2  # the most this thread can have been runnable
    # Sleeping is not waiting for a CPU: the wait fits in the time the thread was awake,
    # however busy the machine (counting the sleep would add its 0.2 s).
    assert waited_asleep <= awake + 0.005, (waited_asleep, awake)
    cpus = sorted(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * len(cpus))]
    try:
        time.sleep(0.2)
        waited = burn(1.0)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    assert waited > 0.1  # with twice as many spinners as CPUs, most of the second is waiting

    result = asyncio.run(run_load(_sleep_1ms, validate(_sleep_1ms, duration=0.2, name="w")))
    assert 0.0 <= round_figures(result)[WAIT_SHARE] <= 1.0
    assert "process_wait_s" in result.resources


async def _sleep_1ms(i: int) -> None:
    await asyncio.sleep(0.001)
