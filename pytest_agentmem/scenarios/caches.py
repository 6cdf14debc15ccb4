"""Caches: the result cache and the embedding cache, their hit rates and the hit path's speed.

::

    from pytest_agentmem.scenarios.caches import *  # noqa: F401,F403

These are CACHE figures, named so (``cache_*``): they measure how fast a
repeated question is answered from memory, not how fast the store searches
(the retrieval and vector-search scenarios ask new questions every time for that).

On ``memory_service`` with ``500 x scale`` memories of 10 users: the same 50
questions are searched again and again by 16 agents. First checked: a cached
answer equals the uncached one, and a write to the user makes the next search
see it (no stale cached answer). Recorded: ``cache_result_hit_path`` (QPS,
latency of searches served by the result cache), ``cache_result.hit_rate``,
and ``cache_embedding.hit_rate`` (every search embeds its question first:
repeated questions hit the embedding cache). The test skips when the service
has no result cache with ``hits``/``misses`` counters (``.result_cache``).
"""

from __future__ import annotations

from typing import Any

import pytest

from ..datasets.corpus import memory_corpus
from .sizing import AB_TOLERANCE, scaled, scaled_seconds

__all__ = ["test_agentmem_scenario_result_cache"]

QUESTIONS = 50


def _counters(obj: Any, hits: str, misses: str) -> tuple[int, int] | None:
    found = getattr(obj, hits, None), getattr(obj, misses, None)
    return found if all(isinstance(x, int) for x in found) else None  # type: ignore[return-value]


def _rate(before: tuple[int, int], after: tuple[int, int]) -> float:
    hits, misses = after[0] - before[0], after[1] - before[1]
    return hits / (hits + misses) if hits + misses else 0.0


@pytest.mark.agentmem_perf(max_error_rate=0.0, min_hit_rate=0.9, compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_result_cache(memory_service: Any, perf: Any) -> None:
    """50 questions asked over and over: the result cache's hit rate and hit-path QPS."""
    cache = getattr(memory_service, "result_cache", None)
    if cache is None or _counters(cache, "hits", "misses") is None:
        pytest.skip("memory_service has no result cache with hits/misses counters (.result_cache)")
    corpus = memory_corpus(scaled(500, minimum=QUESTIONS), users=10)
    for user in sorted(set(corpus.user_ids)):
        await memory_service.add_batch([t for t, u in zip(corpus.texts, corpus.user_ids) if u == user],
                                       user_id=user)
    questions = corpus.questions[:QUESTIONS]

    # A cached answer is the answer.
    for question in questions:
        fresh = await memory_service.search(question.text, user_id=question.user_id, limit=10)
        cached = await memory_service.search(question.text, user_id=question.user_id, limit=10)
        assert [m.id for m in cached] == [m.id for m in fresh], f"cached answer differs for {question.text!r}"
    # A write invalidates: the new memory is found by the next (otherwise cached) search.
    target = questions[0]
    note = await memory_service.add(f"{target.text} Answer: written after the answer was cached.",
                                    user_id=target.user_id)
    after = await memory_service.search(target.text, user_id=target.user_id, limit=10)
    assert note.id in [m.id for m in after], "a search after a write returned the stale cached answer"

    embedder = getattr(memory_service, "embedder", None)
    stats = getattr(embedder, "stats", None)
    before = _counters(cache, "hits", "misses")
    embed_before = _counters(stats, "hits", "texts") if stats is not None else None

    async def ask(i: int) -> None:
        question = questions[i % QUESTIONS]
        await memory_service.search(question.text, user_id=question.user_id, limit=10)

    result = await perf.run(ask, concurrency=16, duration=scaled_seconds(2.0), warmup=QUESTIONS,
                            name="cache_result_hit_path")
    assert result.errors == 0, result.errors_by_type
    perf.record("cache_result", hit_rate=_rate(before, _counters(cache, "hits", "misses")))  # type: ignore[arg-type]
    if embed_before is not None:
        embed_after = _counters(stats, "hits", "texts")
        texts = embed_after[1] - embed_before[1]  # type: ignore[index]
        perf.record("cache_embedding", hit_rate=(embed_after[0] - embed_before[0]) / max(1, texts))  # type: ignore[index]
