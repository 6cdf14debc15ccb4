"""Benchmarks of LanceDBMemoryStore over 100,000 memories (run with --agentmem-perf).

    python -m pytest tests/bench/test_lance_perf.py --agentmem-perf -s

100,000 clustered 384-dim vectors (all-MiniLM-L6-v2's size) in 1,000 users,
inserted with add_batch; the vector index (IVF_HNSW_SQ) is built once; then
top-10 searches at concurrency 1, 16 and 64, unfiltered (through the index) and
per user (0.1 % of the rows, exact over the user's rows), with recall@10 against
exact search measured on the same queries. Each search figure merges 3 rounds of 3 s.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pytest_agentmem.datasets.clustered import (
    clustered_vectors,
    exact_top_k,
    query_vectors,
    recall_at_k,
)
from pytest_agentmem.memory.fixtures import lancedb_store_fixture
from pytest_agentmem.memory.lance import LanceDBMemoryStore
from pytest_agentmem.memory.model import Memory

N, DIM, K, USERS, BATCH, ROUNDS = 100_000, 384, 10, 1_000, 10_000, 3
perf_store = lancedb_store_fixture(dim=DIM, index_threshold=None)


async def _recall(store: LanceDBMemoryStore, base: np.ndarray, queries: np.ndarray,
                  users: np.ndarray | None) -> float:
    found, truths = [], []
    for number, query in enumerate(queries):
        if users is None:
            results = await store.search(query, limit=K)
            truths.append(exact_top_k(base, query[None, :], K)[0])
        else:
            user = number % USERS
            results = await store.search(query, user_id=f"u{user}", limit=K)
            truths.append(exact_top_k(base, query[None, :], K, mask=users == user)[0])
        found.append([int(r.id) for r in results])
    return recall_at_k(found, np.array(truths))


@pytest.mark.agentmem_perf(min_recall=0.95)
async def test_lance_search_over_100k_memories(perf, perf_store: LanceDBMemoryStore) -> None:
    base = clustered_vectors(N, DIM, seed=11)
    users = np.arange(N) % USERS
    queries = query_vectors(base, 2_000, seed=12)

    start = time.perf_counter()
    for offset in range(0, N, BATCH):
        await perf_store.add_batch([
            Memory(f"memory {i} of user {users[i]}", id=str(i), user_id=f"u{users[i]}", embedding=base[i])
            for i in range(offset, offset + BATCH)])
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    await perf_store.create_index()
    index_s = time.perf_counter() - start
    perf.record("build", insert_rows_per_s=N / insert_s, index_build_s=index_s)

    recall = await _recall(perf_store, base, queries[:200], None)
    filtered_recall = await _recall(perf_store, base, queries[200:400], users)
    perf.record("quality", recall=recall, filtered_recall=filtered_recall)

    async def search(index: int) -> None:
        await perf_store.search(queries[index % len(queries)], limit=K)

    async def search_user(index: int) -> None:
        await perf_store.search(queries[index % len(queries)], user_id=f"u{index % USERS}", limit=K)

    lines = []
    for concurrency in (1, 16, 64):
        result = await perf.run(search, concurrency=concurrency, duration=3.0, warmup=50, rounds=ROUNDS,
                                name=f"search-c{concurrency}")
        lines.append(f"c{concurrency}: {result.qps:,.0f} QPS p50 {result.p50_ms:.1f} p95 {result.p95_ms:.1f} ms "
                     f"(process CPU {result.resources.get('process_cpu_pct')} %)")
        result = await perf.run(search_user, concurrency=concurrency, duration=3.0, warmup=50,
                                rounds=ROUNDS, name=f"search-user-c{concurrency}")
        lines.append(f"per-user c{concurrency}: {result.qps:,.0f} QPS p50 {result.p50_ms:.1f} "
                     f"p95 {result.p95_ms:.1f} ms")
    print(f"\nLanceDB 100k x {DIM}: insert {N / insert_s:,.0f} rows/s, index build {index_s:.1f} s, "
          f"recall@10 {recall:.3f} (per user {filtered_recall:.3f}); " + "; ".join(lines))
