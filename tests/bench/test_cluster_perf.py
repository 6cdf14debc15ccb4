"""The Ray path of ``processes=N`` against local worker processes, on this machine (issue 19).

    python -m pytest tests/bench/test_cluster_perf.py --agentmem-perf -p no:cacheprovider -s

A local two-node Ray cluster (head + one node, as ``--agentmem-load-cluster ray``
starts) and ``processes=`` on the same machine run the same work, interleaved
(local, ray, local, ray...): the no-op ceiling and the CPU each operation costs,
20,000 thinking agents, and the real memory service's search at concurrency 16.
Medians and ratios of one run (the machine is shared and noisy).
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")

from pytest_agentmem.cluster.ray_cluster import RayCluster  # noqa: E402
from pytest_agentmem.datasets.corpus import memory_corpus  # noqa: E402
from pytest_agentmem.load import run_load, validate  # noqa: E402
from pytest_agentmem.load.worker_op import WorkerOp  # noqa: E402
from pytest_agentmem.memory.worker import memory_service_setup  # noqa: E402

ROUNDS = 3
SEARCH_ROUNDS = 6
CORPUS = memory_corpus(400, users=10)


async def noop(index: int) -> None:
    return None


async def search(service: Any, index: int) -> None:
    """A search of a new text each time (the model and the store work; no cache answers it)."""
    question = CORPUS.questions[index % len(CORPUS.questions)]
    await service.search(f"{question.text} (turn {index})", user_id=question.user_id, limit=5)


@pytest.fixture(scope="module")
def cluster():
    created = RayCluster("ray:2", timeout=120)
    created.connect()
    try:
        yield created
    finally:
        created.shutdown()


async def _both(op: Any, cluster: RayCluster, rounds: int, **kwargs: Any) -> dict[str, list[Any]]:
    """``rounds`` pairs of runs, local processes then Ray, alternating."""
    out: dict[str, list[Any]] = {"local": [], "ray": []}
    for number in range(rounds):
        for where in ("local", "ray") if number % 2 == 0 else ("ray", "local"):
            spec = validate(op, name=f"{where}-{number}", **kwargs)
            out[where].append(await run_load(op, spec, cluster=cluster if where == "ray" else None))
    return out


def _median(results: list[Any], key: Any) -> float:
    return float(statistics.median(key(r) for r in results))


def _paired(runs: dict[str, list[Any]], key: Any) -> float:
    """Median of the per-pair ratios ray / local (each pair measured back to back)."""
    return float(statistics.median(key(ray) / key(local) for ray, local in zip(runs["ray"], runs["local"])))


def _cpu_us_per_op(result: Any) -> float:
    return 1e6 * result.resources["process_cpu_s"] / max(1, result.successes)


@pytest.mark.agentmem_perf(reference=False)
async def test_noop_ceiling_and_cost_per_operation(perf, cluster) -> None:
    runs = await _both(noop, cluster, ROUNDS, concurrency=16, duration=3.0, processes=2)
    qps = {k: _median(v, lambda r: r.qps) for k, v in runs.items()}
    cpu = {k: _median(v, _cpu_us_per_op) for k, v in runs.items()}
    ratio = _paired(runs, lambda r: r.qps)
    perf.record("noop_ceiling", local_ops_per_s=qps["local"], ray_ops_per_s=qps["ray"],
                ray_over_local=ratio, local_cpu_us_per_op=cpu["local"], ray_cpu_us_per_op=cpu["ray"])
    print(f"\nno-op ceiling, 2 workers x 8 users, {ROUNDS} interleaved rounds of 3 s: processes= "
          f"{[round(r.qps) for r in runs['local']]} ops/s (median {qps['local']:,.0f}), Ray 2 nodes "
          f"{[round(r.qps) for r in runs['ray']]} (median {qps['ray']:,.0f}); ray/local (median of paired ratios) {ratio:.2f}; "
          f"CPU per op (workers + driver): processes= {cpu['local']:.2f} us, Ray {cpu['ray']:.2f} us")
    assert all(len(r.placement["nodes"]) == 2 for r in runs["ray"])


@pytest.mark.agentmem_perf(reference=False)
async def test_20000_thinking_agents_over_two_nodes(perf, cluster) -> None:
    from pytest_agentmem.scenarios.users import THINK_S

    runs = await _both(noop, cluster, 2, concurrency=20_000, think=THINK_S, duration=10.0, processes=2)
    served = {k: _median(v, lambda r: r.qps) for k, v in runs.items()}
    p99 = {k: _median(v, lambda r: r.p99_ms) for k, v in runs.items()}
    cpu = {k: _median(v, lambda r: r.resources["process_cpu_pct"]) for k, v in runs.items()}
    perf.record("20k_thinking_agents", local_served_per_s=served["local"], ray_served_per_s=served["ray"],
                local_p99_ms=p99["local"], ray_p99_ms=p99["ray"], local_cpu_pct=cpu["local"],
                ray_cpu_pct=cpu["ray"], offered_per_s=20_000 / THINK_S)
    print(f"\n20,000 agents thinking {THINK_S:g} s (offered {20_000 / THINK_S:.0f}/s), no-op, 2 workers, "
          f"2 interleaved rounds of 10 s: served processes= {served['local']:.1f}/s, Ray 2 nodes "
          f"{served['ray']:.1f}/s; p99 (loop delay) {p99['local']:.2f} vs {p99['ray']:.2f} ms; "
          f"CPU of workers + driver {cpu['local']:.1f} % vs {cpu['ray']:.1f} % of one core; "
          f"Ray placement {runs['ray'][0].placement['nodes']}; ops/duration: "
          f"{[(r.ops, round(r.duration_s, 2)) for r in runs['local']]} vs "
          f"{[(r.ops, round(r.duration_s, 2)) for r in runs['ray']]}")
    assert all(r.errors == 0 for rs in runs.values() for r in rs)


@pytest.mark.agentmem_perf(reference=False)
async def test_memory_service_search_at_concurrency_16(perf, cluster, memory_service, pg_database) -> None:
    for user in sorted(set(CORPUS.user_ids)):
        texts = [t for t, u in zip(CORPUS.texts, CORPUS.user_ids) if u == user]
        await memory_service.add_batch(texts, user_id=user)
    op = WorkerOp(search, setup=memory_service_setup(pg_database, result_cache=None))
    runs = await _both(op, cluster, SEARCH_ROUNDS, concurrency=16, duration=5.0, warmup=32, processes=2)
    qps = {k: _median(v, lambda r: r.qps) for k, v in runs.items()}
    p95 = {k: _median(v, lambda r: r.p95_ms) for k, v in runs.items()}
    cpu = {k: _median(v, lambda r: r.cpu_ms_per_op) for k, v in runs.items()}
    ratio = _paired(runs, lambda r: r.qps)
    cpu_ratio = _paired(runs, lambda r: r.cpu_ms_per_op)
    perf.record("search_c16", local_qps=qps["local"], ray_qps=qps["ray"], ray_over_local=ratio,
                local_p95_ms=p95["local"], ray_p95_ms=p95["ray"], local_cpu_ms_per_op=cpu["local"],
                ray_cpu_ms_per_op=cpu["ray"], cpu_ray_over_local=cpu_ratio)
    print(f"\nmemory_service.search (new text each time: embed + hybrid SQL), 16 users over 2 workers, "
          f"{SEARCH_ROUNDS} interleaved rounds of 5 s: processes= {[round(r.qps, 1) for r in runs['local']]} "
          f"(median {qps['local']:.1f}/s, p95 {p95['local']:.1f} ms), Ray 2 nodes "
          f"{[round(r.qps, 1) for r in runs['ray']]} (median {qps['ray']:.1f}/s, p95 {p95['ray']:.1f} ms); "
          f"ray/local (median of paired ratios) {ratio:.3f}; client CPU per search (workers + driver) "
          f"{cpu['local']:.2f} vs {cpu['ray']:.2f} ms, paired ratio {cpu_ratio:.3f}")
    assert all(r.errors == 0 for rs in runs.values() for r in rs), [r.errors_by_type for r in runs["ray"]]
