"""Bad input that used to reach the drivers raw is rejected alike on both stores (issue 9, item 11).

NUL characters (Postgres' jsonb cannot hold them; LanceDB stored them), integers
beyond int64 (LanceDB read them back as floats; its filters overflowed), huge
``in`` lists (LanceDB's condition grows with each value: 16k values took ~10 s)
and deep nesting: each is an :class:`InvalidMemoryError` naming the field, on
the Postgres repository and on the LanceDB store, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_agentmem.memory.fixtures import lancedb_store_fixture
from pytest_agentmem.memory.model import InvalidMemoryError, Memory
from pytest_agentmem.memory.pg_batch import iter_records
from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture
from pytest_agentmem.memory.validation import MAX_IN_VALUES, MAX_METADATA_DEPTH

DIM = 8
pg_store = memory_repo_fixture(dim=DIM)
lance_store = lancedb_store_fixture(dim=DIM)
pytestmark = pytest.mark.asyncio
INT64_MAX = 2**63 - 1


@pytest.fixture(params=["pg_store", "lance_store"])
def store(request: pytest.FixtureRequest) -> Any:
    """The Postgres repository and the LanceDB store, each on its own fresh storage."""
    return request.getfixturevalue(request.param)


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


BAD_METADATA = [
    ({"k": "a\x00b"}, r"metadata\['k'\] contains a NUL character"),
    ({"k\x00": "v"}, r"metadata key 'k\\x00' contains a NUL character"),
    ({"k": ["ok", "a\x00"]}, r"metadata\['k'\]\[1\] contains a NUL"),
    ({"k": 2**63}, r"metadata\['k'\] is 9223372036854775808, outside the 64-bit"),
    ({"k": -2**63 - 1}, r"metadata\['k'\] is -9223372036854775809, outside the 64-bit"),
    ({"k": [1, {"n": 10**30}]}, r"metadata\['k'\]\[1\]\['n'\] is 1000000000000000000000000000000"),
    (nested(MAX_METADATA_DEPTH + 1), f"nested more than {MAX_METADATA_DEPTH} levels deep"),
    (nested(5000), f"nested more than {MAX_METADATA_DEPTH} levels deep"),
]


@pytest.mark.parametrize(("metadata", "message"), BAD_METADATA)
async def test_bad_metadata_is_rejected_naming_the_field(store: Any, metadata: dict[str, Any],
                                                          message: str) -> None:
    kept = Memory("kept", metadata={"k": 1}, embedding=vec(0))
    await store.add(kept)
    with pytest.raises(InvalidMemoryError, match=message):
        await store.add(Memory("bad", metadata=metadata, embedding=vec(1)))
    with pytest.raises(InvalidMemoryError, match=message):
        await store.add_batch([Memory("fine", embedding=vec(2)), Memory("bad", metadata=metadata, embedding=vec(3))])
    with pytest.raises(InvalidMemoryError, match=message):
        await store.update(kept.id, metadata=metadata)
    assert await store.count() == 1
    assert (await store.get(kept.id)).metadata == {"k": 1}


BAD_FILTERS = [
    ({"k\x00": {"exists": True}}, r"filter key"),
    ({"k\x00": {"gt": 1}}, r"filter key"),
    ({"k\x00": {"lt": 1}}, r"filter key"),
    ({"k\x00": "v"}, r"filter key"),
    ({"k": {"eq": "a\x00"}}, r"filter 'k': 'eq' value: .*NUL"),
    ({"k": {"in": ["a", "b\x00"]}}, r"filter 'k': 'in' value: .*NUL"),
    ({"k": {"in": list(range(MAX_IN_VALUES + 1))}}, rf"filter 'k': 'in' takes at most {MAX_IN_VALUES} values"),
    ({"k": {"nin": ["x"] * (MAX_IN_VALUES + 1)}}, rf"filter 'k': 'nin' takes at most {MAX_IN_VALUES}"),
    ({"k": {"gt": 2**63}}, r"filter 'k': 'gt' .*outside the 64-bit"),
    ({"k": {"lte": 10**400}}, r"filter 'k': 'lte' .*outside the 64-bit"),
    ({"k": 10**30}, r"filter 'k': 'eq' value: .*outside the 64-bit"),
    ({"k": {"in": [1, -2**64]}}, r"filter 'k': 'in' value: .*outside the 64-bit"),
]


@pytest.mark.parametrize(("filters", "message"), BAD_FILTERS)
async def test_bad_filters_are_rejected_naming_the_field(store: Any, filters: dict[str, Any],
                                                          message: str) -> None:
    await store.add(Memory("kept", metadata={"k": 1}, embedding=vec(0)))
    with pytest.raises(InvalidMemoryError, match=message):
        await store.search(vec(0), filters=filters)
    with pytest.raises(InvalidMemoryError, match=message):
        await store.count(filters=filters)


async def test_values_at_the_limits_round_trip(store: Any) -> None:
    metadata = {"max": INT64_MAX, "min": -2**63, "deep": nested(MAX_METADATA_DEPTH - 1), "s": "\u00e9\U0001f600"}
    memory = Memory("edge", metadata=metadata, embedding=vec(0))
    await store.add(memory)
    assert (await store.get(memory.id)).metadata == metadata
    found = await store.search(vec(0), filters={"max": {"gte": 2**62}, "s": {"in": ["\u00e9\U0001f600"] * MAX_IN_VALUES}})
    assert [m.id for m in found] == [memory.id]


@pytest.mark.parametrize(("metadata", "message"), BAD_METADATA[:5])
async def test_the_copy_fast_path_rejects_them_too(metadata: dict[str, Any], message: str) -> None:
    """add_batch's column screens (pg_batch) send a chunk with such a value to the row checks."""
    batch = [Memory(f"t{i}", embedding=vec(i), metadata={"n": i}) for i in range(20)]
    batch[13] = Memory("bad", embedding=vec(13), metadata=metadata)
    with pytest.raises(InvalidMemoryError, match=r"add_batch\[13\]: " + message):
        list(iter_records(batch, DIM, chunk_rows=8))
