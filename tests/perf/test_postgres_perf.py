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
    base = clustered_vectors(N, DIM, seed=11).astype(np.float32)  # embedders give float32
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
    # ef_search 40 (the server default) needs no transaction: one round trip instead of three.
    ef40 = PostgresMemoryRepository(bulk_repo.pool, dim=DIM, ef_search=None)
    perf.record("quality-ef40", recall_ef40=await recall(ef40, base, queries[:200], False))
    r = await perf.run(lambda i: ef40.search(queries[i % len(queries)], limit=K), concurrency=16,
                       duration=4.0, warmup=50, name="search-ef40-c16")
    lines.append(f"search ef_search=40 c16: {r.qps:,.0f} QPS p95 {r.p95_ms:.1f} ms")
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


COLUMNS = ("id", "content", "user_id", "agent_id", "run_id", "metadata", "embedding", "created_at")
HISTORY_COLUMNS = ("memory_id", "event", "old_content", "new_content", "created_at")


async def _raw_copy(repo: PostgresMemoryRepository, records: list[tuple[Any, ...]],
                    history: list[tuple[Any, ...]] | None = None) -> float:
    """Bare COPY of prepared rows into raw_copy (and raw_history) in one transaction."""
    async with repo.pool.acquire() as conn:
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("raw_copy", records=records, columns=COLUMNS)
            if history is not None:
                await conn.copy_records_to_table("raw_history", records=history, columns=HISTORY_COLUMNS)
        return time.perf_counter() - start


async def _truncate(repo: PostgresMemoryRepository) -> None:
    async with repo.pool.acquire() as conn:
        await conn.execute("TRUNCATE memories, memories_history, raw_copy, raw_history")


@pytest.mark.agentmem_perf
async def test_postgres_batch_insert_against_raw_copy(perf: Any, bulk_repo: PostgresMemoryRepository) -> None:
    """add_batch (checks, COPY of the rows, COPY of their ADD events, one transaction)
    against bare COPYs of the same prepared rows into identical tables: the rows
    alone, and the rows plus the same history rows. Interleaved rounds, medians."""
    base = clustered_vectors(10_000, DIM, seed=3).astype(np.float32)
    async with bulk_repo.pool.acquire() as conn:
        await conn.execute("CREATE TABLE raw_copy (LIKE memories INCLUDING ALL)")
        await conn.execute("CREATE TABLE raw_history (LIKE memories_history INCLUDING ALL)")
    lines = []
    for label, rows, rounds in (("no vector index", 10_000, 7), ("with HNSW", 1_000, 3)):
        batch = memories(base, 0, rows)
        records = [(m.id, m.content, m.user_id, m.agent_id, m.run_id, '{"n": 1}', m.embedding, m.created_at)
                   for m in batch]
        history = [(m.id, "ADD", None, m.content, m.created_at) for m in batch]
        if label == "with HNSW":
            await bulk_repo.create_vector_index()
            async with bulk_repo.pool.acquire() as conn:
                await conn.execute("CREATE INDEX ON raw_copy USING hnsw (embedding vector_cosine_ops)")
        rates: dict[str, list[float]] = {"add_batch": [], "raw": [], "raw+history": []}
        for _ in range(rounds):
            await _truncate(bulk_repo)
            rates["raw"].append(rows / await _raw_copy(bulk_repo, records))
            await _truncate(bulk_repo)
            rates["raw+history"].append(rows / await _raw_copy(bulk_repo, records, history))
            await _truncate(bulk_repo)
            start = time.perf_counter()
            await bulk_repo.add_batch(batch)
            rates["add_batch"].append(rows / (time.perf_counter() - start))
            perf.record(f"batch-insert ({label})", rows_per_s=rates["add_batch"][-1],
                        raw_copy_rows_per_s=rates["raw"][-1],
                        raw_copy_with_history_rows_per_s=rates["raw+history"][-1])
        med = {k: statistics.median(v) for k, v in rates.items()}
        # add_batch rows/s over raw COPY rows/s (named *_speedup: higher is better for the gate).
        perf.record(f"batch-insert ratios ({label})", vs_raw_copy_speedup=med["add_batch"] / med["raw"],
                    vs_raw_copy_with_history_speedup=med["add_batch"] / med["raw+history"])
        lines.append(f"{label} ({rows:,} rows): add_batch {med['add_batch']:,.0f} rows/s, raw COPY "
                     f"{med['raw']:,.0f} (ratio {med['add_batch'] / med['raw']:.2f}), raw COPY + "
                     f"history {med['raw+history']:,.0f} (ratio {med['add_batch'] / med['raw+history']:.2f})")
    print("\nbatch insert of 384-dim memories, medians: " + "; ".join(lines))
