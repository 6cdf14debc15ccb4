"""Filtered search on LanceDB is correct: min(limit, matching) results, all matching, recall vs exact.

20,000 clustered 64-dim vectors; user_id selects 0.1% of rows, agent_id 1%,
metadata ``bucket`` 20%. The store builds its vector index automatically at
5,000 rows; filtered sets of up to 1,000 rows are searched exactly, larger ones
through the index with prefiltering.
"""

from __future__ import annotations

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

N, DIM, K = 20_000, 64, 10
recall_store = lancedb_store_fixture(dim=DIM, index_threshold=5_000, exact_threshold=1_000)
pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    base = clustered_vectors(N, DIM, seed=3)
    index = np.arange(N)
    return {"base": base, "queries": query_vectors(base, 40, seed=4),
            "user": index % 1000, "agent": index % 100, "bucket": index % 5}


async def load(store: LanceDBMemoryStore, data: dict[str, np.ndarray]) -> None:
    for start in range(0, N, 5_000):
        await store.add_batch([
            Memory(f"m{i}", id=str(i), user_id=f"u{data['user'][i]}", agent_id=f"a{data['agent'][i]}",
                   metadata={"bucket": int(data["bucket"][i])}, embedding=data["base"][i])
            for i in range(start, min(N, start + 5_000))])


async def check(store: LanceDBMemoryStore, data: dict[str, np.ndarray], mask: np.ndarray,
                **search: object) -> float:
    truth = exact_top_k(data["base"], data["queries"], K, mask=mask)
    found = []
    for query in data["queries"]:
        results = await store.search(query, limit=K, **search)  # type: ignore[arg-type]
        ids = [int(r.id) for r in results]
        assert len(ids) == min(K, int(mask.sum())), "too few results for a filtered search"
        assert mask[ids].all(), "a result does not match the filter"
        found.append(ids)
    return recall_at_k(found, truth)


async def test_filtered_recall_at_1_and_0_1_percent_and_20_percent(recall_store: LanceDBMemoryStore,
                                                                   data: dict[str, np.ndarray]) -> None:
    await load(recall_store, data)
    assert recall_store._has_vector_index and recall_store._has_scalar_indexes

    assert await check(recall_store, data, data["user"] == 7, user_id="u7") >= 0.95          # 0.1 %
    assert await check(recall_store, data, data["agent"] == 42, agent_id="a42") >= 0.95     # 1 %
    assert await check(recall_store, data, (data["agent"] == 42) & (data["bucket"] == 2),
                       agent_id="a42", filters={"bucket": 2}) >= 0.95                        # 0.2 %, both
    exact_before = recall_store.exact_searches
    assert await check(recall_store, data, data["bucket"] == 3, filters={"bucket": 3}) >= 0.95  # 20 %
    assert recall_store.exact_searches == exact_before, "the 20% filter should use the vector index"
    assert await check(recall_store, data, np.ones(N, dtype=bool)) >= 0.95                    # unfiltered
    assert recall_store.indexed_searches >= 80


async def test_rows_added_after_the_index_are_found(recall_store: LanceDBMemoryStore,
                                                    data: dict[str, np.ndarray]) -> None:
    await load(recall_store, data)
    probe = data["queries"][0]
    await recall_store.add(Memory("fresh", id="fresh", user_id="u7", embedding=probe))
    assert (await recall_store.search(probe, limit=1))[0].id == "fresh"
    assert (await recall_store.search(probe, user_id="u7", limit=1))[0].id == "fresh"
    await recall_store.delete("fresh")
    assert all(r.id != "fresh" for r in await recall_store.search(probe, limit=K))
