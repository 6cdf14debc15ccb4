"""Benchmarks of PostgresMemoryRepository (run with --agentmem-perf).

    python -m pytest tests/perf/test_postgres_perf.py --agentmem-perf -s

Search: 100,000 clustered 384-dim vectors (all-MiniLM-L6-v2's size) in 1,000
users, bulk-loaded with add_batch, HNSW built once; top-10 searches at
concurrency 1, 16 and 64, unfiltered (HNSW, ef_search 100) and per user (0.1 %
of the rows: the exact path), with recall@10 against exact search on the same
queries. Batch insert: add_batch against raw COPY of the same rows into an
identical table, interleaved in one run, medians of the rounds.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pytest

from pytest_agentmem.datasets.clustered import clustered_vectors, exact_top_k, query_vectors, recall_at_k
from pytest_agentmem.memory.model import Memory
from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture
from pytest_agentmem.memory.postgres import PoolSettings, PostgresMemoryRepository, create_memory_pool

N, DIM, K, USERS, BATCH = 100_000, 384, 10, 1_000, 10_000
bulk_repo = memory_repo_fixture(dim=DIM, vector_index=False)


def memories(base: np.ndarray, start: int, stop: int, users: int = USERS) -> list[Memory]:
    return [Memory(f"memory {i} of user {i % users}", id=str(i), user_id=f"u{i % users}",
                   embedding=base[i], metadata={"n": i % 7}) for i in range(start, stop)]


async def recall(repo: PostgresMemoryRepository, base: np.ndarray, queries: np.ndarray,
                 per_user: bool) -> float:
    users = np.arange(len(base)) % USERS
    found, truth = [], []
    for number, query in enumerate(queries):
        user = number % USERS if per_user else None
        got = await repo.search(query, user_id=None if user is None else f"u{user}", limit=K)
        found.append([int(m.id) for m in got])
        truth.append(exact_top_k(base, query[None], K, None if user is None else users == user)[0])
    return recall_at_k(found, truth)


@pytest.mark.agentmem_perf(min_recall=0.95)
async def test_postgres_search_over_100k_memories(perf: Any, bulk_repo: PostgresMemoryRepository,
                                                  pg_database: str) -> None:
    base = clustered_vectors(N, DIM, seed=11)
    queries = query_vectors(base, 2_000, seed=12)
    start = time.perf_counter()
    for offset in range(0, N, BATCH):
        await bulk_repo.add_batch(memories(base, offset, offset + BATCH))
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    await bulk_repo.create_vector_index()
    index_s = time.perf_counter() - start
    perf.record("build", insert_rows_per_s=N / insert_s, index_build_s=index_s)
    perf.record("quality", recall=await recall(bulk_repo, base, queries[:200], False),
                filtered_recall=await recall(bulk_repo, base, queries[200:400], True))

    async def search(index: int) -> None:
        await bulk_repo.search(queries[index % len(queries)], limit=K)

    async def search_user(index: int) -> None:
        await bulk_repo.search(queries[index % len(queries)], user_id=f"u{index % USERS}", limit=K)

    lines = [f"insert {N / insert_s:,.0f} rows/s, HNSW build {index_s:.1f} s"]
    for concurrency in (1, 16, 64):
        for name, op in (("search", search), ("search-user", search_user)):
            r = await perf.run(op, concurrency=concurrency, duration=4.0, warmup=50,
                               name=f"{name}-c{concurrency}")
            lines.append(f"{name} c{concurrency}: {r.qps:,.0f} QPS p50 {r.p50_ms:.1f} p95 {r.p95_ms:.1f} ms")
    # The repository's own pool defaults (max 4 per core) against the fixture's 16.
    pool = await create_memory_pool(pg_database, PoolSettings())
    try:
        small = PostgresMemoryRepository(pool, dim=DIM)
        for concurrency in (16, 64):
            r = await perf.run(lambda i: small.search(queries[i % len(queries)], limit=K),
                               concurrency=concurrency, duration=4.0, warmup=50,
                               name=f"search-c{concurrency}-pool{PoolSettings().max_size}")
            lines.append(f"search c{concurrency} pool {PoolSettings().max_size}: {r.qps:,.0f} QPS "
                         f"p95 {r.p95_ms:.1f} ms")
    finally:
        await pool.close()
    print("\nPostgres 100k x 384: " + "; ".join(lines))


async def _raw_copy(repo: PostgresMemoryRepository, table: str, records: list[tuple[Any, ...]]) -> float:
    async with repo.pool.acquire() as conn:
        start = time.perf_counter()
        await conn.copy_records_to_table(table, records=records, columns=(
            "id", "content", "user_id", "agent_id", "run_id", "metadata", "embedding", "created_at"))
        return time.perf_counter() - start


async def _truncate(repo: PostgresMemoryRepository, *tables: str) -> None:
    async with repo.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {', '.join(tables)}")


@pytest.mark.agentmem_perf(min_ratio_to_raw_copy=0.8)
async def test_postgres_batch_insert_against_raw_copy(perf: Any, bulk_repo: PostgresMemoryRepository) -> None:
    """add_batch (checks + COPY of rows and history in one transaction) against a bare
    COPY of the same rows into an identical table; interleaved rounds, medians."""
    base = clustered_vectors(20_000, DIM, seed=3)
    async with bulk_repo.pool.acquire() as conn:
        await conn.execute("CREATE TABLE raw_copy (LIKE memories INCLUDING ALL)")
    lines = []
    for label, rows, rounds in (("no vector index", 10_000, 5), ("with HNSW", 1_000, 3)):
        batch = memories(base, 0, rows)
        records = [(m.id, m.content, m.user_id, None, None, '{"n": 1}', m.embedding, m.created_at)
                   for m in batch]
        if label == "with HNSW":
            await bulk_repo.create_vector_index()
            async with bulk_repo.pool.acquire() as conn:
                await conn.execute("CREATE INDEX ON raw_copy USING hnsw (embedding vector_cosine_ops)")
        repo_rates, raw_rates = [], []
        for _ in range(rounds):
            await _truncate(bulk_repo, "memories", "memories_history", "raw_copy")
            raw_rates.append(rows / await _raw_copy(bulk_repo, "raw_copy", records))
            start = time.perf_counter()
            await bulk_repo.add_batch(batch)
            repo_rates.append(rows / (time.perf_counter() - start))
            perf.record(f"batch-insert ({label})", rows_per_s=repo_rates[-1],
                        raw_copy_rows_per_s=raw_rates[-1], ratio_to_raw_copy=repo_rates[-1] / raw_rates[-1])
        lines.append(f"{label}: add_batch {statistics.median(repo_rates):,.0f} rows/s, raw COPY "
                     f"{statistics.median(raw_rates):,.0f} rows/s (ratio of medians "
                     f"{statistics.median(repo_rates) / statistics.median(raw_rates):.2f})")
    print("\nbatch insert of 384-dim memories: " + "; ".join(lines))
