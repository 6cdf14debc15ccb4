"""Retrieval-quality ablation on LoCoMo: dense, lexical and hybrid search of the shipped service.

Reproduces the "Retrieval quality" table of docs/figures.md::

    python -m pytest -p no:cacheprovider -q tests/bench/test_retrieval_quality.py --agentmem-perf -s

Every question of categories 1-4 is searched once per mode (evidence recall@5,
@10, @25, overall and per category), then the search path's throughput of
dense-only and hybrid is measured in interleaved rounds (concurrency 16, every
question reworded so no cache answers), and their QPS ratio recorded.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

from pytest_agentmem.datasets.locomo import LocomoMissing, load_locomo

KS = (5, 10, 25)
CATEGORIES = (1, 2, 3, 4)
MODES = ("dense", "lexical", "hybrid")
QPS_ROUNDS = 3


def _recall(questions: list[Any], found: list[list[str]], k: int, category: int | None = None) -> float:
    scores = [sum(e in set(f[:k]) for e in q.evidence) / len(q.evidence)
              for q, f in zip(questions, found) if category is None or q.category == category]
    return sum(scores) / len(scores)


@pytest.mark.agentmem_perf(max_error_rate=0.0, min_recall_at_10_hybrid=0.60, min_qps_ratio_hybrid_dense=0.8)
async def test_locomo_retrieval_ablation(memory_service: Any, perf: Any, pytestconfig: pytest.Config) -> None:
    try:
        data = load_locomo(rootdir=pytestconfig.rootpath, categories=CATEGORIES)
    except LocomoMissing as exc:
        pytest.skip(str(exc))
    for conversation in data.conversations:
        turns = data.turns_of(conversation)
        await memory_service.add_batch([f"{t.speaker}: {t.text}" for t in turns], user_id=conversation,
                                       metadata=[{"dia_id": t.dia_id} for t in turns])
    questions = list(data.questions)

    metrics: dict[str, float] = {}
    for mode in MODES:
        memory_service.search_mode = mode
        found = [[str(m.metadata.get("dia_id")) for m in
                  await memory_service.search(q.question, user_id=q.conversation_id, limit=max(KS))]
                 for q in questions]
        for k in KS:
            metrics[f"recall_at_{k}_{mode}"] = _recall(questions, found, k)
            for c in CATEGORIES:
                metrics[f"recall_at_{k}_{mode}_cat{c}"] = _recall(questions, found, k, c)
    perf.record("locomo_ablation", **metrics)
    print(f"\nLoCoMo evidence recall, {len(questions)} questions (categories 1-4)")
    print("| mode | k | all | " + " | ".join(f"cat {c}" for c in CATEGORIES) + " |")
    for mode in MODES:
        for k in KS:
            cells = [metrics[f"recall_at_{k}_{mode}"]] + [metrics[f"recall_at_{k}_{mode}_cat{c}"]
                                                         for c in CATEGORIES]
            print(f"| {mode} | {k} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")

    asked = itertools.count()

    async def ask(i: int) -> None:
        n = next(asked)
        question = questions[n % len(questions)]
        await memory_service.search(f"{question.question} (asked {n})", user_id=question.conversation_id,
                                    limit=10)

    qps: dict[str, list[float]] = {"dense": [], "hybrid": []}
    for r in range(QPS_ROUNDS):
        for mode in ("dense", "hybrid") if r % 2 == 0 else ("hybrid", "dense"):
            memory_service.search_mode = mode
            result = await perf.run(ask, concurrency=16, total=600, warmup=32, name=f"locomo_search_{mode}_{r}")
            assert result.errors == 0, result.errors_by_type
            qps[mode].append(result.qps)
    ratio = statistics.median(h / d for h, d in zip(qps["hybrid"], qps["dense"]))
    perf.record("locomo_search_cost", qps_ratio_hybrid_dense=ratio)
    print(f"search QPS at concurrency 16, dense {[round(x) for x in qps['dense']]}, "
          f"hybrid {[round(x) for x in qps['hybrid']]}, median hybrid/dense ratio {ratio:.3f}")
