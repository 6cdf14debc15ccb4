"""Hybrid (full-text + dense, fused by RRF) and lexical search on a real Postgres."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from pytest_agentmem.errors import ConfigurationError
from pytest_agentmem.memory.model import InvalidMemoryError, Memory
from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture
from pytest_agentmem.memory.postgres import PostgresMemoryRepository
from pytest_agentmem.memory.service import MemoryService

DIM = 8
repo8 = memory_repo_fixture(dim=DIM)
#: Every filtered search through the HNSW index (no exact scan), fusing 3 rows a branch.
repo8_index = memory_repo_fixture(dim=DIM, exact_threshold=0, fusion_depth=3)

pytestmark = pytest.mark.asyncio


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v + [0.0] * (DIM - len(v)), np.float32)
    return a / np.linalg.norm(a)


QUERY = unit([1, 0])


async def _haystack(repo: PostgresMemoryRepository, user: str = "alice", n: int = 30) -> None:
    """``n`` memories close to QUERY and one far from it holding a rare word."""
    await repo.add_batch([Memory(content=f"we talked about the weather on day {i}",
                                 embedding=unit([1, 0.02 * i]), user_id=user, id=f"{user}-{i}")
                          for i in range(n)])
    await repo.add(Memory(content="The locker code is Zanzibar, remember it", embedding=unit([0, 1]),
                          user_id=user, id=f"{user}-rare"))


async def test_hybrid_finds_a_rare_word_the_dense_ranking_misses(repo8: PostgresMemoryRepository) -> None:
    await _haystack(repo8)
    text = "What was the code of the locker at zanzibar?"
    dense = await repo8.search(QUERY, user_id="alice", limit=5, text=text, mode="dense")
    assert "alice-rare" not in [m.id for m in dense]
    hybrid = await repo8.search(QUERY, user_id="alice", limit=5, text=text)
    assert "alice-rare" in [m.id for m in hybrid] and len(hybrid) == 5
    assert all(m.embedding is None and m.score is not None and m.score > 0 for m in hybrid)
    assert [m.score for m in hybrid] == sorted((m.score for m in hybrid), reverse=True)
    lexical = await repo8.search(None, user_id="alice", limit=5, text=text, mode="lexical")  # type: ignore[arg-type]
    assert lexical[0].id == "alice-rare" and lexical[0].content.startswith("The locker code")
    assert repo8.search_paths["hybrid_exact"] == 1 and repo8.search_paths["lexical"] == 1


async def test_the_query_is_an_or_of_stemmed_lexemes(repo8: PostgresMemoryRepository) -> None:
    await repo8.add_batch([Memory(content="Caroline went hiking in the mountains", embedding=unit([0, 1]),
                                  user_id="u", id="hike"),
                           Memory(content="Melanie paints sunsets", embedding=unit([0, 1, 1]),
                                  user_id="u", id="paint")])
    # plainto_tsquery would AND all six lexemes and find nothing; stems match "hiking".
    found = await repo8.search(None, user_id="u", text="Did Caroline ever hike with her dog in winter?",
                               mode="lexical")
    assert [m.id for m in found] == ["hike"]


async def test_filters_apply_to_the_lexical_branch(repo8: PostgresMemoryRepository) -> None:
    await _haystack(repo8, "alice", n=3)
    # Bob's memories say the rare word more often and sit nearer the query vector.
    await repo8.add_batch([Memory(content=f"zanzibar zanzibar locker code {i}", embedding=QUERY,
                                  user_id="bob", metadata={"team": "red"}, id=f"bob-{i}")
                           for i in range(20)])
    text = "locker code zanzibar"
    for mode in ("hybrid", "lexical"):
        found = await repo8.search(QUERY, user_id="alice", limit=10, text=text, mode=mode)
        assert {m.user_id for m in found} == {"alice"}, mode
        assert "alice-rare" in [m.id for m in found]
        by_meta = await repo8.search(QUERY, filters={"team": "blue"}, text=text, mode=mode)
        assert by_meta == []
        red = await repo8.search(QUERY, filters={"team": "red"}, limit=50, text=text, mode=mode)
        assert {m.id for m in red} == {f"bob-{i}" for i in range(20)}
    assert await repo8.search(QUERY, user_id="carol", text=text) == []


async def test_index_path_fuses_and_keeps_filters(repo8_index: PostgresMemoryRepository) -> None:
    await _haystack(repo8_index, "alice", n=12)
    await _haystack(repo8_index, "bob", n=12)
    text = "zanzibar locker"
    found = await repo8_index.search(QUERY, user_id="alice", limit=3, text=text)
    assert {m.user_id for m in found} == {"alice"} and "alice-rare" in [m.id for m in found]
    assert repo8_index.search_paths["hybrid_index"] == 1
    unfiltered = await repo8_index.search(QUERY, limit=4, text=text)
    assert {"alice-rare", "bob-rare"} <= {m.id for m in unfiltered}
    # Alice's set, known to be big, shrinks below the fusion depth: the index gives too few
    # rows and the exact scan answers.
    for i in range(1, 12):
        await repo8_index.delete(f"alice-{i}")
    found = await repo8_index.search(QUERY, user_id="alice", limit=3, text=text)
    assert [m.id for m in found] == ["alice-rare", "alice-0"]
    assert repo8_index.search_paths["hybrid_fallback"] == 1


async def test_modes_and_their_checks(repo8: PostgresMemoryRepository) -> None:
    await _haystack(repo8, n=5)
    plain = await repo8.search(QUERY, user_id="alice", limit=3)
    dense = await repo8.search(QUERY, user_id="alice", limit=3, text="zanzibar", mode="dense")
    assert [m.id for m in plain] == [m.id for m in dense]
    assert plain[0].score == pytest.approx(1.0, abs=1e-5)  # dense scores are cosine similarities
    with pytest.raises(InvalidMemoryError, match="needs the query text"):
        await repo8.search(QUERY, mode="hybrid")
    with pytest.raises(InvalidMemoryError, match="search mode must be one of"):
        await repo8.search(QUERY, text="x", mode="bm42")
    with pytest.raises(InvalidMemoryError, match="search mode must be one of"):
        PostgresMemoryRepository(repo8.pool, dim=DIM, search_mode="sparse")
    # Only stop words: no lexeme, so lexical finds nothing and hybrid is the dense ranking.
    assert await repo8.search(None, user_id="alice", text="the of and", mode="lexical") == []
    only_dense = await repo8.search(QUERY, user_id="alice", limit=3, text="the of and")
    assert [m.id for m in only_dense] == [m.id for m in plain]
    # Quotes, backslashes and tsquery operators in the text are words, never syntax.
    odd = "O'Reilly's c:\\temp & | ! <-> ( zanzibar:* '"
    assert [m.id for m in await repo8.search(None, user_id="alice", text=odd, mode="lexical")] == ["alice-rare"]
    assert len(await repo8.search(QUERY, user_id="alice", text=odd, exact=True)) == 6


async def test_a_table_from_before_hybrid_search(pg_pool: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with pg_pool.acquire() as conn:  # the schema of the previous version
        await conn.execute(f"""CREATE TABLE memories (id text PRIMARY KEY, content text NOT NULL,
            user_id text, agent_id text, run_id text, metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            embedding vector({DIM}) NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz)""")
    old = PostgresMemoryRepository(pg_pool, dim=DIM)
    await old.add(Memory(content="the locker code is zanzibar", embedding=unit([0, 1]), user_id="u", id="z"))
    await old.add(Memory(content="sunny weather", embedding=QUERY, user_id="u", id="w"))
    # Not set up: a text search falls back to the embedding and says so.
    with caplog.at_level(logging.WARNING, logger="pytest_agentmem.memory.postgres"):
        found = await old.search(QUERY, user_id="u", limit=1, text="zanzibar")
    assert [m.id for m in found] == ["w"] and not old.lexical_available
    assert "has no content_tsv column" in caplog.text and "setup()" in caplog.text
    with pytest.raises(InvalidMemoryError, match="run await repo.setup"):
        await PostgresMemoryRepository(pg_pool, dim=DIM).search(None, text="zanzibar", mode="lexical")
    # setup() adds the column to the existing rows and its index.
    await old.setup()
    assert old.lexical_available
    found = await old.search(QUERY, user_id="u", limit=1, text="zanzibar")
    assert [m.id for m in found] == ["z"]
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'memories_content_tsv_idx'")


class DenseOnlyRepository:
    """A user's repository whose search() knows nothing of text (the protocol before hybrid search)."""

    def __init__(self, inner: PostgresMemoryRepository) -> None:
        self.inner, self.dim, self.calls = inner, inner.dim, 0

    async def add_batch(self, memories: list[Memory]) -> list[str]:
        return await self.inner.add_batch(memories)

    async def search(self, vector: np.ndarray, *, user_id: str | None = None, agent_id: str | None = None,
                     run_id: str | None = None, filters: dict[str, Any] | None = None,
                     limit: int = 10) -> list[Memory]:
        self.calls += 1
        return await self.inner.search(vector, user_id=user_id, agent_id=agent_id, run_id=run_id,
                                       filters=filters, limit=limit)


@pytest.mark.slow
async def test_service_modes_on_the_real_model(memory_service: MemoryService, memory_repo: Any,
                                               embedder: Any) -> None:
    assert memory_service.search_mode == "hybrid" and memory_service.text_search
    texts = [f"Melanie: I painted a lake at sunset, picture number {i}" for i in range(40)]
    texts.append("Caroline: my passport number is QX7781, keep it safe")
    await memory_service.add_batch(texts, user_id="u")
    await memory_service.add("Caroline: my passport number is QX7781", user_id="other")
    question = "what is the qx7781 thing"
    found = {}
    for mode in ("dense", "hybrid", "lexical"):
        memory_service.search_mode = mode
        found[mode] = [m.content for m in await memory_service.search(question, user_id="u", limit=3)]
    # Lexical after hybrid on the same question: one row, not hybrid's cached three (the
    # mode is part of the result cache's key).
    assert texts[-1] in found["hybrid"] and found["lexical"] == [texts[-1]] and len(found["hybrid"]) == 3
    with pytest.raises(ConfigurationError, match="search_mode must be one of"):
        memory_service.search_mode = "sparse"
    dense_only = MemoryService(DenseOnlyRepository(memory_repo), embedder)
    assert dense_only.search_mode == "dense" and not dense_only.text_search
    assert len(await dense_only.search(question, user_id="u", limit=3)) == 3
    assert dense_only.repository.calls == 1  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="lexical.*needs a repository"):
        MemoryService(DenseOnlyRepository(memory_repo), embedder, search_mode="lexical")
