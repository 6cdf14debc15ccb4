"""Benchmarks of GraphStore: 2-hop neighbourhoods over 100,000 edges (run with --agentmem-perf).

    python -m pytest tests/bench/test_graph_perf.py --agentmem-perf -s

One user's graph: 20,000 entities, 100,000 random relations with 8 predicates
(mean degree 10 counting both directions, so a 2-hop neighbourhood holds about
100 entities). The in-memory CSR index against the recursive-CTE SQL path, both
answering the same queries; results checked equal on a sample first.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from pytest_agentmem.memory.graph import GraphStore

ENTITIES, EDGES, PREDICATES, USER = 20_000, 100_000, 8, "bench"


async def load(store: GraphStore) -> list[str]:
    rng = random.Random(5)
    names = [f"entity-{i}" for i in range(ENTITIES)]
    edges: set[tuple[str, str, str]] = set()
    while len(edges) < EDGES:
        edges.add((rng.choice(names), f"rel-{rng.randrange(PREDICATES)}", rng.choice(names)))
    start = time.perf_counter()
    await store.add_relations(edges, user_id=USER)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    await store.index(USER)
    print(f"\nloaded {EDGES:,} relations in {load_s:.1f} s, index built in "
          f"{(time.perf_counter() - start) * 1000:.0f} ms", end="")
    return [rng.choice(names) for _ in range(5_000)]


@pytest.mark.agentmem_perf(min_qps=1000)
async def test_graph_two_hop_csr(perf: Any, graph_store: GraphStore) -> None:
    starts = await load(graph_store)
    for entity in starts[:20]:
        assert await graph_store.neighbors(entity, user_id=USER, hops=2) == \
            await graph_store.neighbors_sql(entity, user_id=USER, hops=2)
    sizes = [len(await graph_store.neighbors(e, user_id=USER, hops=2)) for e in starts[:200]]
    perf.record("neighbourhood", mean_2hop_entities=sum(sizes) / len(sizes))

    async def two_hop(index: int) -> None:
        await graph_store.neighbors(starts[index % len(starts)], user_id=USER, hops=2)

    r1 = await perf.run(two_hop, concurrency=1, duration=4.0, warmup=200, name="2hop-csr-c1")
    r16 = await perf.run(two_hop, concurrency=16, duration=4.0, warmup=200, name="2hop-csr-c16")
    print(f"; CSR 2-hop: c1 {r1.qps:,.0f} QPS p95 {r1.p95_ms:.2f} ms, c16 {r16.qps:,.0f} QPS "
          f"p95 {r16.p95_ms:.2f} ms; mean 2-hop size {sum(sizes) / len(sizes):.0f}")


# Sub-millisecond SQL through a fresh database: run-to-run state (plans, caches) moves it.
@pytest.mark.agentmem_perf(tolerance=0.3)
async def test_graph_two_hop_sql(perf: Any, graph_store: GraphStore) -> None:
    starts = await load(graph_store)

    async def two_hop(index: int) -> None:
        await graph_store.neighbors_sql(starts[index % len(starts)], user_id=USER, hops=2)

    r1 = await perf.run(two_hop, concurrency=1, duration=4.0, warmup=20, name="2hop-sql-c1")
    r16 = await perf.run(two_hop, concurrency=16, duration=4.0, warmup=20, name="2hop-sql-c16")
    print(f"; SQL 2-hop: c1 {r1.qps:,.0f} QPS p95 {r1.p95_ms:.2f} ms, c16 {r16.qps:,.0f} QPS "
          f"p95 {r16.p95_ms:.2f} ms")
