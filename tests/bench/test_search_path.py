"""The uncached search path against the embedder's coalesced ceiling, closed and open loop (issue 21).

    AGENTMEM_LOCOMO_CONVERSATIONS=3 python -m pytest -p no:cacheprovider -q -s \\
        tests/bench/test_search_path.py --agentmem-perf

The memory service (hybrid search, Postgres/pgvector, the default embedding run)
stores LoCoMo turns; every search asks a question of categories 1-4 reworded each
time (no cache answers). In interleaved rounds: the service's search QPS at
concurrency 16 and the embedder's coalesced ceiling (the same new wordings embedded
one call each at concurrency 16 by the uncached embedder: no search that embeds its
question can pass it), and their ratio, with where a search's CPU went (the model, the
rest of the test process, Postgres and Redis) and what it may spend outside the model for
the ratio to reach 0.85 (issue 21's goal); then an open loop at ``RATE`` searches/s
(latency from each search's intended start), its p95 and error rate.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

from pytest_agentmem.config import env_value
from pytest_agentmem.datasets.locomo import LocomoMissing, load_locomo
from pytest_agentmem.session import get_session

CONCURRENCY = 16
ROUNDS = 3
SECONDS = 5.0
RATE = 150.0
OPEN_SECONDS = 8.0
DEFAULT_CONVERSATIONS = 3


#: Issue 21's goal for search QPS over the ceiling's.
GOAL = 0.85
#: Where a search's CPU went: the model's runs, the rest of the test process (asyncio,
#: asyncpg, the service's Python), the services (Postgres, Redis).
SEARCH_PARTS = ("search_model_cpu_ms", "search_python_cpu_ms", "search_services_cpu_ms")


def search_parts(resources: dict[str, float], searches: int) -> dict[str, float]:
    """CPU ms per search of each of :data:`SEARCH_PARTS` (empty if the run did not read them)."""
    model = resources.get("model_cpu_s")
    if model is None or not searches:
        return {}
    per = 1000.0 / searches
    return {"search_model_cpu_ms": model * per,
            "search_python_cpu_ms": (resources.get("process_cpu_s", 0.0) - model) * per,
            "search_services_cpu_ms": resources.get("services_cpu_s", 0.0) * per}


@pytest.mark.agentmem_perf(max_error_rate=0.0, reference=False)
async def test_uncached_search_against_the_embedder_ceiling(memory_service: Any, embedder: Any, perf: Any,
                                                           pytestconfig: pytest.Config) -> None:
    try:
        data = load_locomo(get_session(pytestconfig).settings.locomo_path, rootdir=pytestconfig.rootpath,
                           categories=(1, 2, 3, 4))
    except LocomoMissing as exc:
        pytest.skip(str(exc))
    conversations = data.conversations[:env_value("AGENTMEM_LOCOMO_CONVERSATIONS") or DEFAULT_CONVERSATIONS]
    for conversation in conversations:
        turns = data.turns_of(conversation)
        await memory_service.add_batch([f"{t.speaker}: {t.text}" for t in turns], user_id=conversation,
                                       metadata=[{"dia_id": t.dia_id} for t in turns])
    questions = [q for q in data.questions if q.conversation_id in set(conversations)]
    asked = itertools.count()

    async def search(i: int) -> None:
        n = next(asked)  # a new wording each time: neither cache answers
        question = questions[n % len(questions)]
        await memory_service.search(f"{question.question} (asked {n})", user_id=question.conversation_id, limit=10)

    model = embedder.uncached()

    async def embed(i: int) -> None:
        n = next(asked)
        await model.embed_one(f"{questions[n % len(questions)].question} (asked {n})")

    ops = {"search": search, "embedder": embed}
    qps: dict[str, list[float]] = {name: [] for name in ops}
    cpu: dict[str, list[float]] = {name: [] for name in ops}
    parts: dict[str, list[float]] = {part: [] for part in SEARCH_PARTS}
    for number in range(ROUNDS):
        for name in (ops if number % 2 == 0 else reversed(list(ops))):
            result = await perf.run(ops[name], concurrency=CONCURRENCY, duration=SECONDS, warmup=CONCURRENCY * 2,
                                    name=f"{name}_c{CONCURRENCY}_r{number}")
            assert result.errors == 0, result.errors_by_type
            qps[name].append(result.qps)
            cpu[name].append(result.cpu_ms_per_op)
            if name == "search":
                for part, value in search_parts(result.resources, result.successes).items():
                    parts[part].append(value)
    ratios = [s / e for s, e in zip(qps["search"], qps["embedder"])]
    opened = await perf.run(search, concurrency=64, rate=RATE, duration=OPEN_SECONDS, warmup=32,
                            name=f"search_open_{RATE:.0f}")
    figures = {"search_qps": statistics.median(qps["search"]), "ceiling_qps": statistics.median(qps["embedder"]),
               "search_vs_ceiling": statistics.median(ratios),
               "search_cpu_ms": statistics.median(cpu["search"]),
               "embedder_cpu_ms": statistics.median(cpu["embedder"]),
               **{part: statistics.median(values) for part, values in parts.items() if values},
               "open_p50_ms": opened.p50_ms, "open_p95_ms": opened.p95_ms, "open_qps": opened.qps,
               "open_error_rate": opened.error_rate}
    if "search_model_cpu_ms" in figures:  # what a search may spend outside the model for the goal
        figures["budget_outside_model_ms"] = figures["embedder_cpu_ms"] / GOAL - figures["search_model_cpu_ms"]
    perf.record("uncached_search_path", **figures)
    print(f"\nuncached search path, {len(conversations)} LoCoMo conversations, {model.model_id}, "
          f"{ROUNDS} interleaved rounds of {SECONDS:.0f} s at concurrency {CONCURRENCY}")
    for name, value in figures.items():
        print(f"  {name}: {value:.3f}")
    print(f"  rounds QPS {qps}; CPU ms/op {cpu}; search/ceiling per round {[f'{r:.2f}' for r in ratios]}")
