"""LanceDBMemoryStore: CRUD and history round trips, search, filters, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_agentmem.memory.embedder import Embedder
from pytest_agentmem.memory.fixtures import lancedb_store_fixture
from pytest_agentmem.memory.lance import LanceDBMemoryStore, build_where
from pytest_agentmem.memory.model import (
    InvalidMemoryError,
    Memory,
    MemoryNotFoundError,
    MemoryRepository,
)

DIM = 8
small_store = lancedb_store_fixture(dim=DIM)
pytestmark = pytest.mark.asyncio


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


async def test_it_implements_the_protocol(small_store: LanceDBMemoryStore) -> None:
    assert isinstance(small_store, MemoryRepository)
    assert small_store.dim == DIM


async def test_crud_and_history_round_trip(small_store: LanceDBMemoryStore) -> None:
    memory = Memory("Alice likes tea", user_id="alice", agent_id="bot", run_id="r1",
                    metadata={"topic": "drinks", "n": 2, "tags": ["a", "b"]}, embedding=vec(1))
    memory_id = await small_store.add(memory)
    assert memory_id == memory.id

    got = await small_store.get(memory_id)
    assert (got.content, got.user_id, got.agent_id, got.run_id) == ("Alice likes tea", "alice", "bot", "r1")
    assert got.metadata == {"topic": "drinks", "n": 2, "tags": ["a", "b"]}
    np.testing.assert_allclose(got.embedding, vec(1))
    assert got.updated_at is None and got.created_at is not None

    updated = await small_store.update(memory_id, content="Alice likes green tea", embedding=vec(2))
    assert updated.content == "Alice likes green tea" and updated.updated_at is not None
    again = await small_store.get(memory_id)
    assert again.content == "Alice likes green tea" and again.metadata["topic"] == "drinks"
    np.testing.assert_allclose(again.embedding, vec(2))

    meta_only = await small_store.update(memory_id, metadata={"topic": "tea"})
    assert meta_only.content == "Alice likes green tea" and meta_only.metadata == {"topic": "tea"}

    await small_store.delete(memory_id)
    with pytest.raises(MemoryNotFoundError):
        await small_store.get(memory_id)

    events = await small_store.history(memory_id)
    assert [e.event for e in events] == ["ADD", "UPDATE", "UPDATE", "DELETE"]
    assert (events[0].old_content, events[0].new_content) == (None, "Alice likes tea")
    assert (events[1].old_content, events[1].new_content) == ("Alice likes tea", "Alice likes green tea")
    assert (events[3].old_content, events[3].new_content) == ("Alice likes green tea", None)


async def test_add_batch_and_delete_all(small_store: LanceDBMemoryStore) -> None:
    memories = [Memory(f"memory {i}", user_id=f"u{i % 3}", embedding=vec(i)) for i in range(30)]
    ids = await small_store.add_batch(memories)
    assert ids == [m.id for m in memories]
    assert await small_store.count() == 30
    assert await small_store.delete_all(user_id="u1") == 10
    assert await small_store.count(user_id="u1") == 0 and await small_store.count() == 20
    assert [e.event for e in await small_store.history(ids[1])] == ["ADD", "DELETE"]
    with pytest.raises(InvalidMemoryError, match="refusing"):
        await small_store.delete_all()


async def test_search_is_scoped_ranked_and_limited(small_store: LanceDBMemoryStore) -> None:
    target = vec(100)
    await small_store.add_batch([
        Memory("closest of u1", user_id="u1", embedding=target + 0.01 * vec(1)),
        Memory("far of u1", user_id="u1", embedding=-target),
        Memory("closest of u2", user_id="u2", embedding=target),
    ] + [Memory(f"other {i}", user_id="u1", embedding=vec(200 + i)) for i in range(10)])
    results = await small_store.search(target, user_id="u1", limit=5)
    assert len(results) == 5
    assert results[0].content == "closest of u1" and results[0].score > 0.99
    assert all(r.user_id == "u1" for r in results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    everything = await small_store.search(target, user_id="u1", limit=100)
    assert len(everything) == 12  # min(limit, matching rows)
    assert await small_store.search(target, user_id="nobody") == []


async def test_metadata_filters(small_store: LanceDBMemoryStore) -> None:
    rows = [({"topic": "pets", "n": 1}, "a"), ({"topic": "work", "n": 3.0}, "b"),
            ({"topic": "pets", "n": "3", "flag": True}, "c"), ({"other": None}, "d")]
    await small_store.add_batch([Memory(text, user_id="u", metadata=meta, embedding=vec(i))
                                 for i, (meta, text) in enumerate(rows)])

    async def found(filters: dict) -> set[str]:
        return {m.content for m in await small_store.search(vec(0), user_id="u", filters=filters, limit=10)}

    assert await found({"topic": "pets"}) == {"a", "c"}
    assert await found({"n": 3}) == {"b"}  # 3 == 3.0, but not "3"
    assert await found({"n": "3"}) == {"c"}
    assert await found({"flag": True}) == {"c"}
    assert await found({"topic": {"ne": "pets"}}) == {"b", "d"}
    assert await found({"topic": {"in": ["work", "pets"]}, "n": {"gte": 1, "lt": 3}}) == {"a"}
    assert await found({"topic": {"nin": ["pets"]}}) == {"b", "d"}
    assert await found({"other": {"exists": True}}) == {"d"}
    assert await found({"other": None}) == {"d"}
    assert await small_store.count(filters={"topic": "pets"}) == 2


async def test_scope_values_with_sql_metacharacters_are_data(small_store: LanceDBMemoryStore) -> None:
    nasty = "o'brien'; DELETE FROM memories; --"
    await small_store.add(Memory("nasty user", user_id=nasty, metadata={"k": nasty}, embedding=vec(1)))
    await small_store.add(Memory("plain user", user_id="plain", embedding=vec(2)))
    results = await small_store.search(vec(1), user_id=nasty, filters={"k": nasty})
    assert [r.content for r in results] == ["nasty user"]
    assert await small_store.count() == 2


@pytest.mark.parametrize("key", ["a'b", "x) OR 1=1 --", "a.b", "", "1abc", "k" * 65, "$.k"])
async def test_filter_keys_with_metacharacters_are_rejected(small_store: LanceDBMemoryStore, key: str) -> None:
    with pytest.raises(InvalidMemoryError, match="filter key"):
        await small_store.search(vec(1), filters={key: "x"})


@pytest.mark.parametrize("filters, match", [
    ({"k": [1, 2]}, "ambiguous"), ({"k": {"like": "x"}}, "unsupported operator"),
    ({"k": {"gt": "x"}}, "finite number"), ({"k": {"in": []}}, "non-empty list"),
    ({"k": float("nan")}, "JSON cannot hold"), ({"k": object()}, "unsupported value"),
    ("topic=pets", "must be a dict"),
])
async def test_bad_filters_are_rejected(small_store: LanceDBMemoryStore, filters: object, match: str) -> None:
    with pytest.raises(InvalidMemoryError, match=match):
        await small_store.search(vec(1), filters=filters)  # type: ignore[arg-type]


@pytest.mark.parametrize("embedding, match", [
    (np.ones(DIM + 1), "shape"), (np.full(DIM, np.nan), "NaN"), (np.full(DIM, np.inf), "NaN or infinite"),
    (np.zeros(DIM), "all zeros"), (None, "missing"), ("abc", "not numeric|shape"),
])
async def test_bad_vectors_store_nothing(small_store: LanceDBMemoryStore, embedding: object, match: str) -> None:
    good = Memory("good", embedding=vec(1))
    bad = Memory("bad", embedding=embedding)  # type: ignore[arg-type]
    with pytest.raises(InvalidMemoryError, match=match):
        await small_store.add_batch([good, bad])
    assert await small_store.count() == 0  # not half-way
    with pytest.raises(InvalidMemoryError, match=match.replace("missing", "missing")):
        await small_store.search(embedding)  # type: ignore[arg-type]


@pytest.mark.parametrize("content, match", [
    ("", "empty"), ("x" * 256_001, "limit"), (None, "must be a str"), ("a\x00b", "NUL"),
])
async def test_bad_content_stores_nothing(small_store: LanceDBMemoryStore, content: object, match: str) -> None:
    with pytest.raises(InvalidMemoryError, match=match):
        await small_store.add_batch([Memory("good", embedding=vec(1)), Memory(content, embedding=vec(2))])  # type: ignore[arg-type]
    assert await small_store.count() == 0


async def test_bad_updates_change_nothing(small_store: LanceDBMemoryStore) -> None:
    memory_id = await small_store.add(Memory("original", metadata={"k": 1}, embedding=vec(1)))
    with pytest.raises(InvalidMemoryError, match="embedding"):
        await small_store.update(memory_id, content="new text without a vector")
    with pytest.raises(InvalidMemoryError, match="shape"):
        await small_store.update(memory_id, content="new", embedding=np.ones(3))
    with pytest.raises(InvalidMemoryError, match="JSON cannot hold"):
        await small_store.update(memory_id, metadata={"x": float("inf")})
    with pytest.raises(InvalidMemoryError, match="needs content"):
        await small_store.update(memory_id)
    got = await small_store.get(memory_id)
    assert got.content == "original" and got.metadata == {"k": 1}
    assert [e.event for e in await small_store.history(memory_id)] == ["ADD"]


async def test_unknown_ids_raise_a_key_error(small_store: LanceDBMemoryStore) -> None:
    for call in (small_store.get("nope"), small_store.delete("nope"), small_store.history("nope"),
                 small_store.update("nope", metadata={"a": 1})):
        with pytest.raises(KeyError, match="no memory with id 'nope'"):
            await call
    with pytest.raises(InvalidMemoryError, match="memory id"):
        await small_store.get("")


async def test_duplicate_ids_and_bad_limits_are_rejected(small_store: LanceDBMemoryStore) -> None:
    memory = Memory("once", embedding=vec(1))
    await small_store.add(memory)
    with pytest.raises(InvalidMemoryError, match="already exists"):
        await small_store.add(Memory("twice", id=memory.id, embedding=vec(2)))
    assert (await small_store.get(memory.id)).content == "once"
    for limit in (0, -1, 10_001, 2.5, True):
        with pytest.raises(InvalidMemoryError, match="limit"):
            await small_store.search(vec(1), limit=limit)  # type: ignore[arg-type]


async def test_reopening_keeps_the_data_and_checks_the_dimension(small_store: LanceDBMemoryStore) -> None:
    memory_id = await small_store.add(Memory("kept", embedding=vec(1)))
    reopened = await LanceDBMemoryStore.open(small_store.uri, dim=DIM)
    assert (await reopened.get(memory_id)).content == "kept"
    with pytest.raises(InvalidMemoryError, match="another model"):
        await LanceDBMemoryStore.open(small_store.uri, dim=DIM * 2)


async def test_where_clauses_escape_values() -> None:
    where = build_where(user_id="o'b", filters={"k": "x'; --"})
    assert where == "user_id = 'o''b' AND json_extract(metadata, '$.k') = '\"x''; --\"'"
    assert build_where() is None


async def test_pets_question_ranks_the_dog_memory_first(lancedb_store: LanceDBMemoryStore,
                                                        embedder: Embedder) -> None:
    texts = {
        "alice": ["I love dogs and take my puppy to the park", "I work as an accountant in Berlin",
                  "My favourite food is sushi", "I am learning to play the piano",
                  "The meeting was moved to Thursday"],
        "bob": ["I have three cats and a parrot", "My dog is called Rex"],
    }
    memories = []
    for user, items in texts.items():
        vectors = await embedder.embed(items)
        memories += [Memory(t, user_id=user, embedding=v) for t, v in zip(items, vectors)]
    await lancedb_store.add_batch(memories)
    results = await lancedb_store.search(await embedder.embed_one("What pets does she like?"),
                                         user_id="alice", limit=5)
    assert results[0].content == "I love dogs and take my puppy to the park"
    assert all(r.user_id == "alice" for r in results)
    assert results[0].score > results[1].score + 0.1


async def test_a_write_stands_when_the_index_cannot_be_built_yet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An index threshold below the rows a vector index needs used to fail the
    write that reached it, after both tables had committed it."""
    store = await LanceDBMemoryStore.open(tmp_path / "db", dim=DIM, index_threshold=10)
    try:
        ids = await store.add_batch([Memory(f"m{i}", embedding=vec(i)) for i in range(10)])
        assert await store.count() == 10 and (await store.get(ids[9])).content == "m9"
        assert store.maintenance_errors == 0
    finally:
        store.close()


class IndexBuildFails(LanceDBMemoryStore):
    """A store whose index build fails (say, the disk is full) after a committed write."""

    async def create_index(self, *, replace: bool = True) -> None:
        raise OSError(28, "injected: no space left on device")


async def test_a_failed_index_upkeep_does_not_fail_the_committed_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = await IndexBuildFails.open(tmp_path / "db", dim=DIM, index_threshold=300)
    try:
        await store.add_batch([Memory(f"m{i}", embedding=vec(i)) for i in range(299)])
        memory = Memory("the 300th", embedding=vec(300))
        assert await store.add(memory) == memory.id  # acknowledged: it is stored
        assert (await store.get(memory.id)).content == "the 300th"
        assert [e.event for e in await store.history(memory.id)] == ["ADD"]
        assert store.maintenance_errors == 1 and "no space left" in str(store.last_maintenance_error)
        await store.update(memory.id, metadata={"k": 1})  # upkeep is tried again, the write stands
        assert (await store.get(memory.id)).metadata == {"k": 1}
        await store.delete(memory.id)
        assert store.maintenance_errors == 2 and await store.count() == 299  # 299 rows: no build tried
    finally:
        store.close()
