"""What the evidence costs on the search scenario (issue 23; run with --agentmem-perf).

Rounds of the same search load alternate in one run between: nothing collected,
every collector on (statements, pool, I/O; read before and after each round,
sampled during it), and a py-spy profile running outside the process. The figures
are the medians of the per-pair ratios (on / off), so the machine's drift cancels;
other engineers load this machine, quote them with that said.

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

PAIRS = 7
ROUND_S = 1.5


def _ratio(on: list[float], off: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(on, off) if b > 0)


@pytest.mark.agentmem_perf(baseline=False)
async def test_evidence_cost_on_the_search_scenario(uncached_service: Any, pg_pool: Any, perf: Any,
                                                    request: pytest.FixtureRequest, tmp_path: Any) -> None:
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
    collector = RoundCollector(sources_of(request.node), EVIDENCE_KINDS, pids)
    assert collector.active

    qps: dict[str, list[float]] = {"off": [], "evidence": [], "off2": [], "profile": []}
    cpu: dict[str, list[float]] = {k: [] for k in qps}
    have_py_spy = py_spy_path() is not None
    for k in range(PAIRS):
        order = ["off", "evidence"] if k % 2 == 0 else ["evidence", "off"]
        if have_py_spy:
            order += ["off2", "profile"] if k % 2 == 0 else ["profile", "off2"]
        for variant in order:
            profiler = None
            if variant == "evidence":
                await collector.before()
            if variant == "profile":
                profiler = Profiler(tmp_path / f"p{k}.folded")
                assert profiler.start(), profiler.problem
            result = await run_load(search, spec, service_pids=pids)
            if variant == "evidence":
                evidence = await collector.after(result.ops)
                assert evidence["statements_status"] == "ok"
            if profiler is not None:
                profiler.stop()
            qps[variant].append(result.qps)
            cpu[variant].append(result.metrics()["cpu_ms_per_op"])
    figures = {"evidence_qps_ratio": _ratio(qps["evidence"], qps["off"]),
               "evidence_cpu_ratio": _ratio(cpu["evidence"], cpu["off"]),
               "qps_off_median": statistics.median(qps["off"])}
    if have_py_spy:
        figures.update(profile_qps_ratio=_ratio(qps["profile"], qps["off2"]),
                       profile_cpu_ratio=_ratio(cpu["profile"], cpu["off2"]))
    perf.record("evidence_cost", **figures)
    print("\nevidence cost on the search scenario:",
          {k: round(v, 4) for k, v in figures.items()})
