"""Vector search on a real Postgres: ranking, scoping, metadata filters, filtered recall."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest
import pytest_asyncio
from pgvector.asyncpg import register_vector

from pytest_agentmem.datasets.clustered import (
    clustered_vectors,
    exact_top_k,
    query_vectors,
    recall_at_k,
)
from pytest_agentmem.memory.model import InvalidMemoryError, Memory
from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture
from pytest_agentmem.memory.postgres import PostgresMemoryRepository

DIM = 8
repo8 = memory_repo_fixture(dim=DIM)

# 20k clustered rows of 64 dims, HNSW built after loading. Users: 1,000 (0.1% each);
# agents: 100 (1% each); metadata "g": 10 groups (10% each).
N, D = 20_000, 64
repo64_exact_first = memory_repo_fixture(dim=D, vector_index=False)


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v + [0.0] * (DIM - len(v)), np.float32)
    return a / np.linalg.norm(a)


async def test_search_ranks_nearest_first_and_scores_cosine(repo8: PostgresMemoryRepository) -> None:
    near, mid, far = unit([1, 0.1]), unit([1, 1]), unit([-1, 0.2])
    for name, v in (("near", near), ("mid", mid), ("far", far)):
        await repo8.add(Memory(content=name, embedding=v, user_id="u", id=name))
    found = await repo8.search(unit([1, 0]), user_id="u", limit=3)
    assert [m.content for m in found] == ["near", "mid", "far"]
    assert found[0].score == pytest.approx(float(unit([1, 0]) @ near), abs=1e-5)
    assert found[0].score > found[1].score > found[2].score
    assert all(m.embedding is None for m in found)
    unfiltered = await repo8.search(unit([1, 0]), limit=2)
    assert [m.content for m in unfiltered] == ["near", "mid"]


async def test_search_never_returns_another_users_memory(repo8: PostgresMemoryRepository) -> None:
    target = unit([1, 0])
    await repo8.add_batch([Memory(content=f"bob {i}", embedding=unit([1, 0.01 * i]), user_id="bob")
                           for i in range(30)])
    await repo8.add(Memory(content="alice far", embedding=unit([0, 1]), user_id="alice"))
    found = await repo8.search(target, user_id="alice", limit=10)
    assert [m.content for m in found] == ["alice far"]
    assert await repo8.search(target, user_id="carol") == []
    assert {m.user_id for m in await repo8.search(target, user_id="bob", limit=50)} == {"bob"}
    assert len(await repo8.search(target, user_id="bob", limit=50)) == 30


async def test_scopes_combine(repo8: PostgresMemoryRepository) -> None:
    rows = [Memory(content=f"{u}{a}{r}", embedding=unit([1, i]), user_id=u, agent_id=a, run_id=r)
            for i, (u, a, r) in enumerate((u, a, r) for u in "xy" for a in "pq" for r in "12")]
    await repo8.add_batch(rows)
    found = await repo8.search(unit([1, 0]), user_id="x", agent_id="q", limit=10)
    assert sorted(m.content for m in found) == ["xq1", "xq2"]
    found = await repo8.search(unit([1, 0]), agent_id="p", run_id="2", limit=10)
    assert sorted(m.content for m in found) == ["xp2", "yp2"]


async def test_metadata_filters(repo8: PostgresMemoryRepository) -> None:
    metas = [{"topic": "pets", "n": 1, "tags": ["a", "b"]}, {"topic": "work", "n": 5},
             {"topic": "pets", "n": 9.5, "flag": True}, {"other": None}]
    await repo8.add_batch([Memory(content=str(i), embedding=unit([1, i]), metadata=m, id=str(i))
                           for i, m in enumerate(metas)])

    async def ids(filters: dict) -> set[str]:
        return {m.id for m in await repo8.search(unit([1, 0]), filters=filters, limit=10)}

    assert await ids({"topic": "pets"}) == {"0", "2"}
    assert await ids({"topic": "pets", "n": 1}) == {"0"}
    assert await ids({"flag": True}) == {"2"}
    assert await ids({"other": None}) == {"3"}
    assert await ids({"tags": {"eq": ["a", "b"]}}) == {"0"}
    assert await ids({"tags": {"eq": ["a"]}}) == set()
    assert await ids({"n": {"gt": 1}}) == {"1", "2"}
    assert await ids({"n": {"gte": 1, "lt": 9.5}}) == {"0", "1"}
    assert await ids({"n": {"lte": 5}}) == {"0", "1"}
    assert await ids({"topic": {"ne": "pets"}}) == {"1", "3"}
    assert await ids({"topic": {"in": ["work", "pets"]}}) == {"0", "1", "2"}
    assert await ids({"topic": {"nin": ["work"]}}) == {"0", "2", "3"}
    assert await ids({"flag": {"exists": True}}) == {"2"}
    assert await ids({"flag": {"exists": False}}) == {"0", "1", "3"}
    assert await ids({"topic": "nope"}) == set()
    assert await repo8.count(filters={"topic": "pets"}) == 2


HOSTILE_KEYS = ["a'; DROP TABLE memories; --", 'x") OR 1=1 --', "$1", "k\\'\"", "?", "@>", "é 🙂"]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
async def test_filter_keys_with_sql_metacharacters_are_data(repo8: PostgresMemoryRepository, key: str) -> None:
    await repo8.add(Memory(content="hit", embedding=unit([1]), metadata={key: "v'; --"}, id="hit"))
    await repo8.add(Memory(content="miss", embedding=unit([1, 1]), metadata={"k": "v"}, id="miss"))
    for filters in ({key: "v'; --"}, {key: {"eq": "v'; --"}}, {key: {"in": ["v'; --"]}},
                    {key: {"exists": True}}):
        found = await repo8.search(unit([1]), filters=filters)
        assert [m.id for m in found] == ["hit"], filters
    assert [m.id for m in await repo8.search(unit([1]), filters={key: {"ne": "v'; --"}})] == ["miss"]
    assert await repo8.search(unit([1]), filters={key: {"gt": 1}}) == []
    assert await repo8.count() == 2  # the table is still there


@pytest.mark.parametrize(("filters", "message"), [
    ({"n": {"regex": ".*"}}, "unsupported operator 'regex'.*supported: eq, ne, in"),
    ({"n": {"$gt": 1}}, "unsupported operator"),
    ({"n": {}}, "empty operator dict"),
    ({"n": {"gt": "1"}}, "takes a finite number"),
    ({"n": {"gt": float("nan")}}, "takes a finite number"),
    ({"n": {"in": []}}, "non-empty list"),
    ({"n": {"in": "ab"}}, "non-empty list"),
    ({"n": {"exists": 1}}, "True or False"),
    ({"n": [1, 2]}, "ambiguous"),
    ({"n": float("inf")}, "JSON cannot hold"),
    ({"n": {"eq": object()}}, "JSON cannot hold"),
    ({1: "a"}, "keys must be str"),
    ("topic=pets", "must be a dict"),
])
async def test_bad_filters_raise_clear_errors(repo8: PostgresMemoryRepository, filters: object,
                                              message: str) -> None:
    with pytest.raises(InvalidMemoryError, match=message):
        await repo8.search(unit([1]), filters=filters)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, 10_001, 2.5, True, "10"])
async def test_bad_limits(repo8: PostgresMemoryRepository, limit: object) -> None:
    with pytest.raises(InvalidMemoryError, match="limit"):
        await repo8.search(unit([1]), limit=limit)  # type: ignore[arg-type]


async def test_limits_beyond_ef_search_return_every_row(repo8: PostgresMemoryRepository) -> None:
    vectors = clustered_vectors(300, DIM, clusters=5, seed=3)
    await repo8.add_batch([Memory(content=str(i), embedding=v, user_id=f"u{i % 2}")
                           for i, v in enumerate(vectors)])
    assert len(await repo8.search(vectors[0], limit=250)) == 250
    assert len(await repo8.search(vectors[0], limit=1000)) == 300
    assert len(await repo8.search(vectors[0], user_id="u1", limit=1000)) == 150


repo384 = memory_repo_fixture(dim=384)


async def _index_scans(conn: Any, index: str) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1", index))


async def test_searches_that_take_the_index_use_it_on_a_small_analysed_table(repo384: PostgresMemoryRepository) -> None:
    # 3,000 rows of 384 dims, analysed: at ef_search 100 the planner costs the HNSW scan above a
    # sequential scan and sort, and took it (768 blocks, ~4 ms a query, against ~0.3 ms)
    vectors = clustered_vectors(3_000, 384, seed=11)
    await repo384.add_batch([Memory(content=f"m{i}", embedding=v, user_id="v", metadata={"bucket": i % 100})
                             for i, v in enumerate(vectors)])
    await repo384.create_vector_index()  # exists already: ANALYZE
    queries = query_vectors(vectors, 5, seed=12)
    async with repo384.pool.acquire() as conn:
        @contextlib.asynccontextmanager
        async def this_connection() -> AsyncIterator[Any]:
            yield conn  # every search on the backend whose statistics are read

        repo384._acquire = this_connection  # type: ignore[method-assign]
        before = await _index_scans(conn, "memories_embedding_idx")
        for query in queries:
            assert len(await repo384.search(query, limit=10)) == 10
            assert len(await repo384.search(query, filters={"bucket": {"ne": 0}}, limit=10)) == 10
        # the first filtered search scans its set exactly to learn that it is large; then the index
        assert await _index_scans(conn, "memories_embedding_idx") - before >= 2 * len(queries) - 1


# --------------------------------------------------------------------------- filtered recall


async def load_clustered(repo: PostgresMemoryRepository) -> tuple[np.ndarray, np.ndarray]:
    base = clustered_vectors(N, D, clusters=50, seed=0)
    users = np.random.default_rng(7).integers(0, 1000, N)
    await repo.add_batch([Memory(content=f"m{i}", embedding=base[i], id=str(i), user_id=f"u{users[i]}",
                                 agent_id=f"a{users[i] % 100}", metadata={"g": int(users[i] % 10)})
                          for i in range(N)])
    await repo.create_vector_index()
    return base, users


async def check_recall(repo: PostgresMemoryRepository, base: np.ndarray, users: np.ndarray,
                       scope: str, queries: int = 30) -> float:
    qs = query_vectors(base, queries, seed=11)
    picks = np.random.default_rng(3).integers(0, N, queries)
    found, truth = [], []
    for q, pick in zip(qs, picks):
        user = int(users[pick])
        if scope == "user":  # 0.1%
            mask, kw = users == user, {"user_id": f"u{user}"}
        elif scope == "agent":  # 1%
            mask, kw = users % 100 == user % 100, {"agent_id": f"a{user % 100}"}
        else:  # 10%, a metadata filter
            mask, kw = users % 10 == user % 10, {"filters": {"g": user % 10}}
        got = await repo.search(q, limit=10, **kw)
        ids = [int(m.id) for m in got]
        assert len(ids) == min(10, int(mask.sum())), scope
        assert all(mask[i] for i in ids), "a result outside the filter"
        assert [m.score for m in got] == sorted((m.score for m in got), reverse=True)
        found.append(ids)
        truth.append(exact_top_k(base, q[None], 10, mask)[0])
    return recall_at_k(found, truth)


async def test_filtered_recall_default_paths(repo64_exact_first: PostgresMemoryRepository) -> None:
    """Default settings: small filtered sets exact, large ones through the index."""
    repo = repo64_exact_first
    base, users = await load_clustered(repo)
    for scope in ("user", "agent", "metadata"):
        assert await check_recall(repo, base, users, scope) >= 0.95, scope
    assert repo.search_paths["exact"] >= 60 and repo.search_paths["index"] > 0

    qs = query_vectors(base, 40, seed=12)
    truth = exact_top_k(base, qs, 10)
    found = [[int(m.id) for m in await repo.search(q)] for q in qs]
    assert recall_at_k(found, truth) >= 0.95
    exact = [[int(m.id) for m in await repo.search(q, exact=True)] for q in qs[:5]]
    assert recall_at_k(exact, truth[:5]) == 1.0


@pytest_asyncio.fixture
async def seqscan_off_pool(pg_database: str) -> AsyncIterator[Any]:
    """A pool whose sessions may not seq-scan: with the scope btrees dropped, the
    planner has to serve even 0.1% filters from HNSW (it would rather not)."""
    pool = await asyncpg.create_pool(pg_database, min_size=1, max_size=4, init=register_vector,
                                     server_settings={"enable_seqscan": "off"})
    yield pool
    await pool.close()


@pytest.mark.asyncio
async def test_filtered_recall_through_the_index(seqscan_off_pool: Any) -> None:
    """exact_threshold=0: every filter goes through HNSW with iterative scans, down
    to 0.1% selectivity, where plain HNSW filtering comes back short."""
    repo = PostgresMemoryRepository(seqscan_off_pool, dim=D, exact_threshold=0)
    await repo.setup(vector_index=False)
    base, users = await load_clustered(repo)
    q = query_vectors(base, 1, seed=5)[0]
    plain = "SELECT id FROM memories WHERE user_id = $1 ORDER BY embedding <=> $2 LIMIT 10"
    async with repo.pool.acquire() as conn:
        await conn.execute("DROP INDEX memories_user_idx, memories_agent_idx")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + plain, "u1", q))
        assert "Index Scan using memories_embedding_idx" in plan, plan
        short = await conn.fetch(plain, "u1", q)
    assert len(short) < 10 <= int((users == 1).sum())  # the trap
    assert len(await repo.search(q, user_id="u1")) == 10

    for scope, queries in (("user", 20), ("agent", 30), ("metadata", 30)):  # 0.1% is slow here
        assert await check_recall(repo, base, users, scope, queries) >= 0.95, scope
    assert repo.search_paths["index"] >= 80 and repo.search_paths["exact"] <= 3


@pytest.mark.asyncio
async def test_index_path_falls_back_to_exact_when_short(seqscan_off_pool: Any) -> None:
    """Few matching rows through the index, which may scan 1 tuple: the count is
    still min(limit, matching), by the exact fallback."""
    repo = PostgresMemoryRepository(seqscan_off_pool, dim=DIM, exact_threshold=0, max_scan_tuples=1)
    await repo.setup()
    vectors = clustered_vectors(2000, DIM, clusters=20, seed=4)
    await repo.add_batch([Memory(content=str(i), embedding=v, metadata={"r": int(i % 100 == 0)})
                          for i, v in enumerate(vectors)])
    rare = {"r": {"gt": 0}}  # 20 rows, a condition no index but HNSW can serve
    found = await repo.search(vectors[1], filters=rare, limit=15)
    assert len(found) == 15 and all(m.metadata == {"r": 1} for m in found)
    assert repo.search_paths["index_fallback"] == 1
    assert len(await repo.search(vectors[1], filters=rare, limit=50)) == 20
