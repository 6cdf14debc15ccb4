"""What the evidence costs on the search scenario (issue 23; run with --agentmem-perf).

Rounds of the same search load alternate in one run between: nothing collected,
every collector on (statements, pool, I/O; read before and after each round,
sampled during it), and a py-spy profile running outside the process. The figures
are the medians of the per-pair ratios (on / off), so the machine's drift cancels;
other engineers load this machine, quote them with that said.
Each block measures every variant once, in an order rotated from block to block.

The memory service has no result cache here (every search embeds and queries
Postgres, the questions' embeddings cached after their first use): the SQL is as
large a share of the time as the scenario allows, which is the conservative case
for the statements' cost.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from pytest_agentmem.config import EVIDENCE_KINDS
from pytest_agentmem.datasets.corpus import memory_corpus
from pytest_agentmem.evidence.collector import RoundCollector
from pytest_agentmem.evidence.profile import Profiler, py_spy_path
from pytest_agentmem.evidence.sources import sources_of
from pytest_agentmem.load.engine import run_load
from pytest_agentmem.load.resources import service_pids_of
from pytest_agentmem.load.spec import validate
from pytest_agentmem.memory.fixtures import memory_service_fixture
from pytest_agentmem.services.plugin import service_manager

uncached_service = memory_service_fixture(result_cache=None)

BLOCKS = 8
ROUND_S = 1.2
#: The variants of each block (rotated from block to block): nothing, each collector alone,
#: all of them, and the py-spy profile.
VARIANTS = ("off", "statements", "pool", "io", "redis", "all", "profile")


def _ratios(values: dict[str, list[float]], variant: str) -> list[float]:
    return [a / b for a, b in zip(values[variant], values["off"]) if b > 0]


def _summary(ratios: list[float]) -> tuple[float, float, float]:
    """Median and the quartiles of the per-block ratios."""
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(ratios), q[0], q[2]


@pytest.mark.agentmem_perf(reference=False)
async def test_evidence_cost_on_the_search_scenario(uncached_service: Any, pg_pool: Any, redis_client: Any,
                                                    perf: Any, request: pytest.FixtureRequest,
                                                    tmp_path: Any) -> None:
    corpus = memory_corpus(2000, users=10, seed=3)
    for user in sorted(set(corpus.user_ids)):
        await uncached_service.add_batch([t for t, u in zip(corpus.texts, corpus.user_ids) if u == user],
                                         user_id=user)
    questions = corpus.questions

    async def search(i: int) -> None:
        q = questions[i % len(questions)]
        await uncached_service.search(q.text, user_id=q.user_id, limit=10)

    spec = validate(search, concurrency=4, duration=ROUND_S, name="search")
    pids = service_pids_of(service_manager(request.config))
    await run_load(search, validate(search, concurrency=4, total=len(questions) * 2, name="warm"))
    sources = sources_of(request.node)
    collectors = {kind: RoundCollector(sources, (kind,), pids) for kind in EVIDENCE_KINDS}
    collectors["all"] = RoundCollector(sources, EVIDENCE_KINDS, pids)
    variants = VARIANTS if py_spy_path() is not None else VARIANTS[:-1]

    qps: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    share: dict[str, list[float]] = {v: [] for v in variants}  # the loop's time spent sampling
    for block in range(BLOCKS):
        order = list(variants[block % len(variants):]) + list(variants[:block % len(variants)])
        if block % 2:
            order.reverse()
        for variant in order:
            collector = collectors.get(variant)
            profiler = None
            if collector is not None:
                await collector.before()
            if variant == "profile":
                profiler = Profiler(tmp_path / f"p{block}.folded")
                assert profiler.start(), profiler.problem
            result = await run_load(search, spec, service_pids=pids)
            if collector is not None:
                evidence = await collector.after(result.ops)
                share[variant].append(evidence["sampling_s"] / evidence["duration_s"])
                if variant in ("statements", "all"):
                    assert evidence["statements_status"] == "ok"
            if profiler is not None:
                profiler.stop()
            qps[variant].append(result.qps)
            cpu[variant].append(result.metrics()["cpu_ms_per_op"])
    figures: dict[str, float] = {"qps_off_median": statistics.median(qps["off"])}
    print(f"\nevidence cost on the search scenario ({BLOCKS} blocks of {ROUND_S} s rounds, "
          "ratio on/off per block: median [quartiles])")
    for variant in variants[1:]:
        q, q1, q3 = _summary(_ratios(qps, variant))
        c, c1, c3 = _summary(_ratios(cpu, variant))
        figures[f"{variant}_qps_ratio"] = q
        figures[f"{variant}_cpu_ratio"] = c
        sampled = f"   sampling {100 * statistics.median(share[variant]):.3f} % of the round" \
            if share[variant] else ""
        print(f"  {variant:10s} QPS {q:.3f} [{q1:.3f}, {q3:.3f}]   CPU/op {c:.3f} [{c1:.3f}, {c3:.3f}]{sampled}")
    perf.record("evidence_cost", **figures)
