"""The standard agent-memory workloads, as tests you import into your own suite.

::

    # tests/perf/test_memory_scenarios.py
    from pytest_agentmem.scenarios.standard import *  # noqa: F401,F403

They run against whatever the ``memory_service`` fixture gives: the shipped
Postgres/pgvector service by default, your own system if your conftest
overrides ``memory_service`` (or ``memory_repo``) with an implementation of the
same verbs. Sizes scale with ``$AGENTMEM_SCENARIO_SCALE`` (default 1.0).
Every scenario also checks correctness (no errors, the right memories found,
no stale content after a write), so a fast but wrong system fails.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ..datasets.corpus import memory_corpus
from .sizing import AB_TOLERANCE, AB_WRITE_TOLERANCE, SEARCH_TOLERANCE, scaled

__all__ = [
    "test_agentmem_scenario_add",
    "test_agentmem_scenario_add_batch",
    "test_agentmem_scenario_search",
    "test_agentmem_scenario_update_delete",
]


_scaled = scaled


async def _preload(service: Any, n: int) -> Any:
    corpus = memory_corpus(n, users=10)
    ids: list[str] = []
    for user in sorted(set(corpus.user_ids)):
        texts = [t for t, u in zip(corpus.texts, corpus.user_ids) if u == user]
        stored = await service.add_batch(texts, user_id=user)
        ids.extend(m.id for m in stored)
    return corpus


@pytest.mark.agentmem_perf(max_error_rate=0.0, compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_add(memory_service: Any, perf: Any) -> None:
    """Single adds (embed + store + history) from 8 concurrent agents."""
    corpus = memory_corpus(_scaled(400), users=8)
    # Numbered by a counter that runs across rounds, so every text is new: the add
    # path embeds each one, in every round (no cache hit).
    numbers = itertools.count()

    async def add(i: int) -> None:
        n = next(numbers)
        k = n % len(corpus.texts)
        await memory_service.add(f"{corpus.texts[k]} (memory {n})", user_id=corpus.user_ids[k])

    result = await perf.run(add, concurrency=8, total=len(corpus.texts), warmup=16, name="add")
    assert result.errors == 0, result.errors_by_type


@pytest.mark.agentmem_perf(max_error_rate=0.0, compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_add_batch(memory_service: Any, perf: Any) -> None:
    """Batches of 32 memories: throughput in items per second."""
    batch = 32
    corpus = memory_corpus(_scaled(1024), users=4)
    batches = [corpus.texts[i:i + batch] for i in range(0, len(corpus.texts), batch)]
    numbers = itertools.count()  # all texts new, in every round: see the add scenario

    async def add_batch(i: int) -> None:
        n = next(numbers)
        texts = [f"{text} (memory {n}.{j})" for j, text in enumerate(batches[n % len(batches)])]
        await memory_service.add_batch(texts, user_id=f"batch-{n % 4}")

    result = await perf.run(add_batch, concurrency=2, total=len(batches), name="add_batch")
    assert result.errors == 0, result.errors_by_type
    perf.record("add_batch_items", items_per_s=result.qps * batch)


@pytest.mark.agentmem_perf(max_error_rate=0.0, min_recall=0.8, tolerance=SEARCH_TOLERANCE,
                            compare_tolerance=AB_TOLERANCE)
async def test_agentmem_scenario_search(memory_service: Any, perf: Any) -> None:
    """Searches of one user's memories by 16 concurrent agents, with retrieval quality."""
    corpus = await _preload(memory_service, _scaled(2000))
    questions = corpus.questions
    hits = 0
    for question in questions[:200]:
        found = await memory_service.search(question.text, user_id=question.user_id, limit=5)
        assert all(m.user_id == question.user_id for m in found), "a search returned another user's memory"
        hits += any(m.content == corpus.texts[question.expected] for m in found)
    perf.record("search_quality", recall=hits / min(200, len(questions)))

    asked = itertools.count()

    async def search(i: int) -> None:
        # A new wording every time, in every round: the real path (embed, query the store).
        n = next(asked)
        question = questions[(n * 7919) % len(questions)]
        await memory_service.search(f"{question.text} (agent {n})", user_id=question.user_id, limit=10)

    result = await perf.run(search, concurrency=16, duration=_scaled(5), warmup=50, name="search")
    assert result.errors == 0, result.errors_by_type

    async def search_repeated(i: int) -> None:
        # The same 50 questions again and again: what the caches are for.
        question = questions[i % 50]
        await memory_service.search(question.text, user_id=question.user_id, limit=10)

    result = await perf.run(search_repeated, concurrency=16, duration=_scaled(3), warmup=50,
                            name="search_repeated")
    assert result.errors == 0, result.errors_by_type


def _version(text: str) -> int:
    """The ``N`` of a text ending in `` [vN]`` (-1 for an original text)."""
    tail = text.rsplit(" [v", 1)
    return int(tail[1].rstrip("]")) if len(tail) == 2 and tail[1].rstrip("]").isdigit() else -1


@pytest.mark.agentmem_perf(max_error_rate=0.0, compare_tolerance=AB_WRITE_TOLERANCE)
async def test_agentmem_scenario_update_delete(memory_service: Any, perf: Any) -> None:
    """Update-then-search and add-delete-then-search: never a stale answer."""
    corpus = await _preload(memory_service, _scaled(200))
    stored = await memory_service.search(corpus.questions[0].text, user_id=corpus.user_ids[0], limit=50)
    targets = [m for m in stored if m.user_id == corpus.user_ids[0]]
    assert targets, "the preloaded memories are not found"

    versions = itertools.count(1)  # across rounds: perf.run may repeat the op indices
    clock = itertools.count()
    started: dict[int, int] = {}  # version -> when its update was called
    finished: dict[int, int] = {}  # version -> when its update returned

    async def update(i: int) -> None:
        memory = targets[i % len(targets)]
        version = next(versions)
        text = f"{memory.content.split(' [v')[0]} [v{version}]"
        started[version] = next(clock)
        await memory_service.update(memory.id, text)
        finished[version] = next(clock)
        found = await memory_service.search(text, user_id=memory.user_id, limit=3)
        mine = [m for m in found if m.id == memory.id]
        seen = _version(mine[0].content) if mine else None
        # A later version is another agent's newer write. An older one is stale unless its
        # update was still running when this one was called: concurrent writes of one
        # memory may land in either order (the original text, version -1, is always stale).
        if seen is None or (seen < version and (seen < 0 or finished.get(seen, started[version]) < started[version])):
            raise AssertionError(f"search after update returned stale or no content for {memory.id}: "
                                 f"wrote v{version}, found {'nothing' if seen is None else f'v{seen}'}")

    result = await perf.run(update, concurrency=4, total=_scaled(200), name="update_then_search")
    assert result.errors == 0, result.errors_by_type

    notes = itertools.count()  # new texts in every round

    async def forget(i: int) -> None:
        # Remember a fact, forget it, and check that no search brings it back.
        n = next(notes)
        memory = await memory_service.add(f"Temporary note {n}: {corpus.texts[n % len(corpus.texts)]}",
                                          user_id="forgetful")
        await memory_service.delete(memory.id)
        found = await memory_service.search(memory.content, user_id="forgetful", limit=10)
        if any(m.id == memory.id for m in found):
            raise AssertionError(f"search after delete returned deleted memory {memory.id}")

    result = await perf.run(forget, concurrency=4, total=_scaled(100), name="add_delete_then_search")
    assert result.errors == 0, result.errors_by_type
