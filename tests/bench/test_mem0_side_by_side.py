"""Side by side in one run: the shipped memory service against Mem0 OSS (the adapter),
plus the embedder's coalesced ceiling, on the same Postgres, model and LoCoMo questions.

    AGENTMEM_LOCOMO_CONVERSATIONS=3 python -m pytest tests/bench/test_mem0_side_by_side.py \\
        --agentmem-perf -s -p no:cacheprovider

Both systems store the same LoCoMo turns (``"<speaker>: <text>"``, ``dia_id`` in the
metadata) in their own database of the run's Postgres; each answers every question
(categories 1-4) once for evidence recall@k, then the same uncached search workload
(each question reworded every time, so neither a result cache nor an embedding
cache answers) at concurrency 16. The embedder's coalesced ceiling is single
questions embedded at concurrency 16 by the uncached embedder, whose concurrent
calls are coalesced into model batches: no search path that embeds each question
can exceed it. The three are measured in interleaved rounds (ours, Mem0, ceiling,
ours, ...) so a neighbour's load falls on all of them; the figures are medians.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

pytest.importorskip("mem0", reason="mem0ai is not installed: pip install 'pytest-agentmem[mem0]'")

from pytest_agentmem.adapters.mem0 import mem0_service_fixture  # noqa: E402
from pytest_agentmem.config import env_value  # noqa: E402
from pytest_agentmem.datasets.locomo import LocomoMissing, load_locomo  # noqa: E402
from pytest_agentmem.memory.tokens import TokenCounter, token_savings  # noqa: E402
from pytest_agentmem.services.fixtures import pg_database_fixture  # noqa: E402
from pytest_agentmem.session import get_session  # noqa: E402

mem0_database = pg_database_fixture()
mem0_service = mem0_service_fixture(database="mem0_database")

CONCURRENCY = 16
ROUNDS = 3
SECONDS = 6.0
KS = (5, 10, 25)
TOKEN_K = 10  # memories a question puts in the model's context (as the LoCoMo scenario)
DEFAULT_CONVERSATIONS = 3


async def _load(service: Any, data: Any, conversations: list[str]) -> None:
    for conversation in conversations:
        turns = data.turns_of(conversation)
        await service.add_batch([f"{t.speaker}: {t.text}" for t in turns], user_id=conversation,
                                metadata=[{"dia_id": t.dia_id} for t in turns])


async def _recall(service: Any, questions: list[Any], tokens: TokenCounter,
                  history: dict[str, int]) -> dict[str, float]:
    """Evidence recall@k, and token savings of the top ``TOKEN_K`` against the whole conversation."""
    found = []
    retrieved = 0
    for question in questions:
        memories = await service.search(question.question, user_id=question.conversation_id, limit=max(KS))
        assert all(m.user_id == question.conversation_id for m in memories)
        found.append([str(m.metadata.get("dia_id")) for m in memories])
        retrieved += sum(tokens.count_many(m.content for m in memories[:TOKEN_K]))
    full = sum(history[q.conversation_id] for q in questions)
    return {**{f"recall_at_{k}": statistics.fmean(
        sum(e in set(f[:k]) for e in q.evidence) / len(q.evidence) for f, q in zip(found, questions))
        for k in KS}, "token_savings": token_savings(retrieved, full)}


@pytest.mark.agentmem_perf(max_error_rate=0.0, reference=False)
async def test_locomo_search_ours_vs_mem0_and_the_embedder_ceiling(
        memory_service: Any, mem0_service: Any, embedder: Any, perf: Any, pytestconfig: pytest.Config) -> None:
    try:
        data = load_locomo(get_session(pytestconfig).settings.locomo_path, rootdir=pytestconfig.rootpath,
                           categories=(1, 2, 3, 4))
    except LocomoMissing as exc:
        pytest.skip(str(exc))
    limit = env_value("AGENTMEM_LOCOMO_CONVERSATIONS") or DEFAULT_CONVERSATIONS
    conversations = data.conversations[:limit]
    questions = [q for q in data.questions if q.conversation_id in set(conversations)]
    systems = {"agentmem": memory_service, "mem0": mem0_service}
    tokens = TokenCounter.load()
    history = {c: sum(tokens.count_many(f"{t.speaker}: {t.text}" for t in data.turns_of(c))) for c in conversations}
    recalls = {}
    for name, service in systems.items():
        await _load(service, data, conversations)
        recalls[name] = await _recall(service, questions, tokens, history)
        perf.record(f"{name}_locomo", **recalls[name])

    asked = itertools.count()

    def searcher(service: Any) -> Any:
        async def ask(i: int) -> None:
            n = next(asked)  # a new wording each time, across systems and rounds: no cache answers
            question = questions[n % len(questions)]
            await service.search(f"{question.question} (asked {n})", user_id=question.conversation_id,
                                 limit=10)
        return ask

    model = embedder.uncached()

    async def embed(i: int) -> None:
        n = next(asked)
        await model.embed_one(f"{questions[n % len(questions)].question} (asked {n})")

    ops = {"agentmem": searcher(memory_service), "mem0": searcher(mem0_service), "embedder": embed}
    qps: dict[str, list[float]] = {name: [] for name in ops}
    p95: dict[str, list[float]] = {name: [] for name in ops}
    cpu: dict[str, list[float]] = {name: [] for name in ops}  # ms of CPU (ours + Postgres) per op
    for number in range(ROUNDS):
        for name, op in ops.items():
            result = await perf.run(op, concurrency=CONCURRENCY, duration=SECONDS, warmup=CONCURRENCY * 2,
                                    name=f"{name}_c{CONCURRENCY}_r{number}")
            assert result.errors == 0, result.errors_by_type
            qps[name].append(result.qps)
            p95[name].append(result.p95_ms)
            cpu[name].append(result.cpu_ms_per_op)
    median_qps = {name: statistics.median(v) for name, v in qps.items()}
    median_p95 = {name: statistics.median(v) for name, v in p95.items()}
    median_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    ratios = [a / m for a, m in zip(qps["agentmem"], qps["mem0"])]
    perf.record("side_by_side", ours_qps=median_qps["agentmem"], mem0_qps=median_qps["mem0"],
                embedder_ceiling_qps=median_qps["embedder"], ours_vs_mem0=statistics.median(ratios),
                ours_vs_ceiling=statistics.median(a / e for a, e in zip(qps["agentmem"], qps["embedder"])),
                ours_cpu_ms=median_cpu["agentmem"], mem0_cpu_ms=median_cpu["mem0"],
                embedder_cpu_ms=median_cpu["embedder"],
                recall_gain_at_10=recalls["agentmem"]["recall_at_10"] - recalls["mem0"]["recall_at_10"])
    assert mem0_service.llm_calls == 0
    print(f"\nLoCoMo, {len(conversations)} conversations, {len(questions)} questions (categories 1-4), "
          f"concurrency {CONCURRENCY}, {ROUNDS} interleaved rounds of {SECONDS:.0f} s")
    print("| system | search QPS | p95 ms | CPU ms / search | recall@5 | recall@10 | recall@25 | token savings |")
    for name in systems:
        r = recalls[name]
        print(f"| {name} | {median_qps[name]:.0f} | {median_p95[name]:.1f} | {median_cpu[name]:.1f} | "
              f"{r['recall_at_5']:.3f} | {r['recall_at_10']:.3f} | {r['recall_at_25']:.3f} | "
              f"{r['token_savings']:.3f} |")
    print(f"| embedder ceiling (single questions, coalesced) | {median_qps['embedder']:.0f} | "
          f"{median_p95['embedder']:.1f} | {median_cpu['embedder']:.1f} | | | | |")
    print(f"rounds QPS {qps}; CPU ms/op {cpu}; ours/Mem0 per round {[f'{r:.2f}' for r in ratios]}")
