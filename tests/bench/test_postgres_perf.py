"""Benchmarks of PostgresMemoryRepository (run with --agentmem-perf).

    python -m pytest tests/bench/test_postgres_perf.py --agentmem-perf -s

Search: 100,000 clustered 384-dim vectors (all-MiniLM-L6-v2's size) in 1,000
users, bulk-loaded with add_batch, HNSW built once; top-10 searches at
concurrency 1, 16 and 64, unfiltered (HNSW, ef_search 100) and per user (0.1 %
of the rows: the exact path), with recall@10 against exact search on the same
queries. Batch insert: add_batch against raw COPY of the same rows into an
identical table, interleaved in one run, medians of the rounds.

    python -m pytest tests/bench/test_postgres_perf.py --agentmem-perf -s -k batch
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

import numpy as np
import pytest

from pytest_agentmem.datasets.clustered import (
    clustered_vectors,
    exact_top_k,
    query_vectors,
    recall_at_k,
)
from pytest_agentmem.memory.model import Memory
from pytest_agentmem.memory.pg_batch import batch_records
from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture
from pytest_agentmem.memory.postgres import (
    PoolSettings,
    PostgresMemoryRepository,
    create_memory_pool,
)

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


async def _raw_copy(repo: PostgresMemoryRepository, records: list[tuple[Any, ...]]) -> float:
    """Bare COPY of prepared rows into raw_copy: one statement, as add_batch's; timed
    from the pool acquire, as add_batch's is."""
    start = time.perf_counter()
    async with repo.pool.acquire() as conn:
        await conn.copy_records_to_table("raw_copy", records=records, columns=COLUMNS)
    return time.perf_counter() - start


async def _add_batch(repo: PostgresMemoryRepository, batch: list[Memory]) -> float:
    start = time.perf_counter()
    await repo.add_batch(batch)
    return time.perf_counter() - start


async def _truncate(repo: PostgresMemoryRepository) -> None:
    async with repo.pool.acquire() as conn:
        await conn.execute("TRUNCATE memories, memories_history, raw_copy")


# Held in 5 of 5 runs: 0.85-0.97 (no vector index), 0.90-1.09 (with HNSW).
@pytest.mark.agentmem_perf(min_vs_raw_copy_speedup=0.8)
async def test_postgres_batch_insert_against_raw_copy(perf: Any, bulk_repo: PostgresMemoryRepository) -> None:
    """add_batch (checks every row, one COPY of the memory rows; ADD history events are
    implicit) against a bare COPY of the very records add_batch sends, prepared before
    the clock starts (same ids, texts, scopes, metadata JSON, created_at, and vectors
    pre-encoded in pgvector's binary format as add_batch encodes them) into a table
    made LIKE memories INCLUDING ALL (same layout and indexes). Also, for information,
    the bare COPY with numpy vectors that pgvector's codec encodes row by row (the
    former baseline). Interleaved rounds, the order rotating, medians."""
    base = clustered_vectors(10_000, DIM, seed=3).astype(np.float32)
    async with bulk_repo.pool.acquire() as conn:
        await conn.execute("CREATE TABLE raw_copy (LIKE memories INCLUDING ALL)")
    lines = []
    for label, rows, rounds in (("no vector index", 10_000, 9), ("with HNSW", 1_000, 3)):
        batch = memories(base, 0, rows)
        records = batch_records(batch, DIM)
        assert [r[0] for r in records] == [m.id for m in batch] and records[1][5] == '{"n": 1}'
        ndarray_records = [(*r[:6], m.embedding, r[7]) for r, m in zip(records, batch)]
        if label == "with HNSW":
            await bulk_repo.create_vector_index()
            async with bulk_repo.pool.acquire() as conn:
                await conn.execute("CREATE INDEX ON raw_copy USING hnsw (embedding vector_cosine_ops) "
                                   f"WITH (m = {bulk_repo.hnsw_m}, "
                                   f"ef_construction = {bulk_repo.hnsw_ef_construction})")
        runs = {"add_batch": partial(_add_batch, bulk_repo, batch),
                "raw": partial(_raw_copy, bulk_repo, records),
                "raw_ndarray": partial(_raw_copy, bulk_repo, ndarray_records)}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for number in range(rounds):
            for name in names[number % 3:] + names[:number % 3]:
                await _truncate(bulk_repo)
                rates[name].append(rows / await runs[name]())
            perf.record(f"batch-insert ({label})", rows_per_s=rates["add_batch"][-1],
                        raw_copy_rows_per_s=rates["raw"][-1],
                        raw_copy_ndarray_rows_per_s=rates["raw_ndarray"][-1])
        med = {k: statistics.median(v) for k, v in rates.items()}
        # add_batch rows/s over raw COPY rows/s (named *_speedup: higher is better for the gate).
        perf.record(f"batch-insert ratios ({label})", vs_raw_copy_speedup=med["add_batch"] / med["raw"],
                    vs_raw_copy_ndarray_speedup=med["add_batch"] / med["raw_ndarray"])
        lines.append(f"{label} ({rows:,} rows, {rounds} rounds): add_batch {med['add_batch']:,.0f} rows/s, "
                     f"raw COPY {med['raw']:,.0f} (ratio {med['add_batch'] / med['raw']:.2f}), raw COPY "
                     f"with numpy vectors {med['raw_ndarray']:,.0f} "
                     f"(ratio {med['add_batch'] / med['raw_ndarray']:.2f})")
    print("\nbatch insert of 384-dim memories, medians: " + "; ".join(lines))
