"""PostgresMemoryRepository on a real Postgres: CRUD, history, batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_agentmem.memory.model import (
    MAX_CONTENT_CHARS,
    HistoryEvent,
    InvalidMemoryError,
    Memory,
    MemoryNotFoundError,
    MemoryRepository,
)
from pytest_agentmem.memory.pg_batch import (
    _checked_rows,
    _metadata_json,
    batch_records,
    check_matrix,
    encode_vectors,
    iter_records,
)
from pytest_agentmem.memory.pg_fixtures import memory_repo_fixture
from pytest_agentmem.memory.postgres import PostgresMemoryRepository

DIM = 8
repo8 = memory_repo_fixture(dim=DIM)


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def mem(content: str = "I love dogs", seed: int = 0, **kw: object) -> Memory:
    return Memory(content=content, embedding=vec(seed), **kw)  # type: ignore[arg-type]


async def rows(repo: PostgresMemoryRepository, table: str | None = None) -> int:
    async with repo.pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table or repo.table}"))


async def test_default_fixture_is_a_repository(memory_repo: PostgresMemoryRepository) -> None:
    assert isinstance(memory_repo, MemoryRepository)
    assert memory_repo.dim == 384
    async with memory_repo.pool.acquire() as conn:
        indexes = {r[0] for r in await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'memories'")}
    joined = " ".join(indexes)
    assert "hnsw (embedding vector_cosine_ops)" in joined
    assert "gin (metadata jsonb_path_ops)" in joined
    assert "btree (user_id)" in joined


async def test_crud_and_history_round_trip(repo8: PostgresMemoryRepository) -> None:
    m = mem(user_id="alice", agent_id="bot", run_id="r1", metadata={"topic": "pets", "n": 1})
    assert await repo8.add(m) == m.id
    got = await repo8.get(m.id)
    assert (got.content, got.user_id, got.agent_id, got.run_id) == ("I love dogs", "alice", "bot", "r1")
    assert got.metadata == {"topic": "pets", "n": 1}
    np.testing.assert_allclose(got.embedding, m.embedding, rtol=1e-6)
    assert got.updated_at is None

    updated = await repo8.update(m.id, content="I love cats", embedding=vec(1), metadata={"topic": "cats"})
    assert updated.content == "I love cats" and updated.metadata == {"topic": "cats"}
    assert updated.updated_at is not None
    np.testing.assert_allclose((await repo8.get(m.id)).embedding, vec(1), rtol=1e-6)
    await repo8.update(m.id, metadata={"topic": "cats", "x": [1, 2]})  # content kept
    assert (await repo8.get(m.id)).content == "I love cats"

    await repo8.delete(m.id)
    with pytest.raises(MemoryNotFoundError):
        await repo8.get(m.id)
    events = await repo8.history(m.id)
    assert [(e.event, e.old_content, e.new_content) for e in events] == [
        ("ADD", None, "I love dogs"),
        ("UPDATE", "I love dogs", "I love cats"),
        ("UPDATE", "I love cats", "I love cats"),
        ("DELETE", "I love cats", None),
    ]
    assert all(e.memory_id == m.id for e in events)


async def test_unknown_ids_raise_key_errors(repo8: PostgresMemoryRepository) -> None:
    for call in (repo8.get("nope"), repo8.update("nope", content="x"), repo8.delete("nope"),
                 repo8.history("nope")):
        with pytest.raises(KeyError, match="no memory with id 'nope'"):
            await call
    assert await rows(repo8, repo8.history_table) == 0


async def test_delete_all_by_scope(repo8: PostgresMemoryRepository) -> None:
    await repo8.add_batch([mem(f"a{i}", i, user_id="a", run_id=f"r{i % 2}") for i in range(6)]
                          + [mem(f"b{i}", i, user_id="b") for i in range(3)])
    assert await repo8.delete_all(user_id="a", run_id="r0") == 3
    assert await repo8.count(user_id="a") == 3
    assert await repo8.delete_all(user_id="a") == 3
    assert await repo8.count() == 3
    with pytest.raises(InvalidMemoryError, match="refusing to delete every memory"):
        await repo8.delete_all()
    deletes = await repo8.history(await _any_id_deleted(repo8))
    assert deletes[-1].event == "DELETE"


def summary(events: list[HistoryEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(e.event, e.old_content, e.new_content) for e in events]


async def test_history_of_a_batch_added_memory_updated_twice_then_deleted(
        repo8: PostgresMemoryRepository) -> None:
    batch = [mem(f"v0 of {i}", i, user_id="u") for i in range(20)]
    await repo8.add_batch(batch)
    target = batch[7]
    created = (await repo8.get(target.id)).created_at
    assert created == target.created_at
    first = await repo8.update(target.id, content="v1", embedding=vec(100))
    second = await repo8.update(target.id, content="v2")
    assert (await repo8.history(target.id))[1:] == [
        HistoryEvent(target.id, "UPDATE", "v0 of 7", "v1", first.updated_at),
        HistoryEvent(target.id, "UPDATE", "v1", "v2", second.updated_at)]
    await repo8.delete(target.id)
    events = await repo8.history(target.id)
    assert summary(events) == [("ADD", None, "v0 of 7"), ("UPDATE", "v0 of 7", "v1"),
                               ("UPDATE", "v1", "v2"), ("DELETE", "v2", None)]
    assert all(e.memory_id == target.id for e in events)
    assert events[0].created_at == created
    assert [e.created_at for e in events[1:3]] == [first.updated_at, second.updated_at]
    times = [e.created_at for e in events]
    assert times == sorted(times) and first.updated_at < second.updated_at <= times[3]
    assert summary(await repo8.history(batch[8].id)) == [("ADD", None, "v0 of 8")]  # neighbours untouched


async def test_history_of_add_then_delete(repo8: PostgresMemoryRepository) -> None:
    m = mem("short-lived")
    await repo8.add(m)
    assert await repo8.history(m.id) == [HistoryEvent(m.id, "ADD", None, "short-lived", m.created_at)]
    await repo8.delete(m.id)
    events = await repo8.history(m.id)
    assert summary(events) == [("ADD", None, "short-lived"), ("DELETE", "short-lived", None)]
    assert events[0].created_at == m.created_at <= events[1].created_at


async def test_history_of_delete_all(repo8: PostgresMemoryRepository) -> None:
    doomed = [mem(f"a{i}", i, user_id="a") for i in range(4)]
    kept = mem("b0", 9, user_id="b")
    await repo8.add_batch([*doomed, kept])
    changed = await repo8.update(doomed[1].id, content="a1 edited")
    assert await repo8.delete_all(user_id="a") == 4
    for m in doomed:
        events = await repo8.history(m.id)
        if m is doomed[1]:
            assert summary(events) == [("ADD", None, "a1"), ("UPDATE", "a1", "a1 edited"),
                                       ("DELETE", "a1 edited", None)]
            assert events[1].created_at == changed.updated_at
        else:
            assert summary(events) == [("ADD", None, m.content), ("DELETE", m.content, None)]
        assert events[0].created_at == m.created_at
        times = [e.created_at for e in events]
        assert times == sorted(times)
    assert await repo8.history(kept.id) == [HistoryEvent(kept.id, "ADD", None, "b0", kept.created_at)]


async def test_history_of_an_id_added_again_after_delete(repo8: PostgresMemoryRepository) -> None:
    """Each DELETE closes one life of the id; every life starts with its own ADD."""
    first = mem("first life", 1, id="reused")
    await repo8.add(first)
    await repo8.update("reused", content="first life, edited")
    await repo8.delete("reused")
    again = mem("second life", 2, id="reused")
    await repo8.add_batch([again])
    await repo8.update("reused", content="second life, edited")
    events = await repo8.history("reused")
    assert summary(events) == [
        ("ADD", None, "first life"), ("UPDATE", "first life", "first life, edited"),
        ("DELETE", "first life, edited", None),
        ("ADD", None, "second life"), ("UPDATE", "second life", "second life, edited")]
    assert events[0].created_at == first.created_at and events[3].created_at == again.created_at
    await repo8.delete("reused")
    assert summary(await repo8.history("reused"))[3:] == [
        ("ADD", None, "second life"), ("UPDATE", "second life", "second life, edited"),
        ("DELETE", "second life, edited", None)]


async def test_history_reads_explicit_add_rows_of_an_older_table(repo8: PostgresMemoryRepository) -> None:
    """A history table from before ADD became implicit: setup() adds the new column,
    its explicit ADD rows are read as they are (not doubled), new memories get derived ADDs."""
    h = repo8.history_table
    async with repo8.pool.acquire() as conn:
        await conn.execute(f"DROP TABLE {h}")
        await conn.execute(f"""CREATE TABLE {h} (
            seq bigint GENERATED ALWAYS AS IDENTITY, memory_id text NOT NULL,
            event text NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
            old_content text, new_content text, created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (memory_id, seq))""")
    await repo8.setup()
    old, new = mem("old", 1), mem("new", 2)
    await repo8.add(old)
    async with repo8.pool.acquire() as conn:  # as the former add() wrote it
        await conn.execute(f"INSERT INTO {h} (memory_id, event, new_content, created_at) "
                           "VALUES ($1, 'ADD', 'old', $2)", old.id, old.created_at)
    await repo8.add(new)
    for m in (old, new):
        await repo8.update(m.id, content=f"{m.content} edited")
        await repo8.delete(m.id)
        events = await repo8.history(m.id)
        assert summary(events) == [("ADD", None, m.content), ("UPDATE", m.content, f"{m.content} edited"),
                                   ("DELETE", f"{m.content} edited", None)]
        assert events[0].created_at == m.created_at


async def _any_id_deleted(repo: PostgresMemoryRepository) -> str:
    async with repo.pool.acquire() as conn:
        return str(await conn.fetchval(f"SELECT memory_id FROM {repo.history_table} "
                                       "WHERE event = 'DELETE' LIMIT 1"))


async def test_add_batch_copies_rows_and_history(repo8: PostgresMemoryRepository) -> None:
    batch = [mem(f"text {i}", i, user_id=f"u{i % 3}", metadata={"i": i}) for i in range(500)]
    ids = await repo8.add_batch(batch)
    assert ids == [m.id for m in batch]
    # ADD events are implicit: only the memory rows are written.
    assert await rows(repo8) == 500 and await rows(repo8, repo8.history_table) == 0
    sample = await repo8.get(batch[123].id)
    assert (sample.content, sample.user_id, sample.metadata) == ("text 123", "u0", {"i": 123})
    np.testing.assert_allclose(sample.embedding, batch[123].embedding, rtol=1e-6)
    assert [e.event for e in await repo8.history(batch[7].id)] == ["ADD"]
    assert await repo8.add_batch([]) == []


async def test_add_batch_is_all_or_nothing(repo8: PostgresMemoryRepository) -> None:
    existing = mem("first", 1)
    await repo8.add(existing)
    clash = [mem(f"n{i}", i) for i in range(10)] + [Memory(content="dup", embedding=vec(3), id=existing.id)]
    with pytest.raises(InvalidMemoryError, match="already exists.*nothing was stored"):
        await repo8.add_batch(clash)
    twice = [mem("a", 1, id="same"), mem("b", 2, id="same")]
    with pytest.raises(InvalidMemoryError, match="same id twice"):
        await repo8.add_batch(twice)
    bad_row = [mem(f"n{i}", i) for i in range(10)] + [mem("", 4)]
    with pytest.raises(InvalidMemoryError, match=r"add_batch\[10\]: content is empty"):
        await repo8.add_batch(bad_row)
    nan_row = [mem(f"n{i}", i) for i in range(5)] + [Memory(content="x", embedding=np.full(DIM, np.nan))]
    with pytest.raises(InvalidMemoryError, match=r"add_batch\[5\] embedding holds NaN"):
        await repo8.add_batch(nan_row)
    assert await rows(repo8) == 1 and await rows(repo8, repo8.history_table) == 0
    assert [e.event for e in await repo8.history(existing.id)] == ["ADD"]
    for memory_id in (clash[0].id, "same", bad_row[0].id):
        with pytest.raises(MemoryNotFoundError):
            await repo8.history(memory_id)


async def test_a_bad_row_late_in_a_streamed_batch_aborts_the_copy(repo8: PostgresMemoryRepository) -> None:
    """Rows are checked while COPY streams: one failing after many were sent stores nothing."""
    batch = [mem(f"row {i} " + "x" * 500, i) for i in range(6000)]
    batch[5900] = Memory(content="ok", embedding=vec(1), metadata={"bad": [float("inf")]})
    with pytest.raises(InvalidMemoryError, match=r"add_batch\[5900\]: metadata"):
        await repo8.add_batch(batch)
    assert await rows(repo8) == 0 and await rows(repo8, repo8.history_table) == 0
    batch[5900] = mem("fine", 1)
    assert len(await repo8.add_batch(batch)) == 6000


async def test_duplicate_add_is_rejected(repo8: PostgresMemoryRepository) -> None:
    m = mem()
    await repo8.add(m)
    with pytest.raises(InvalidMemoryError, match="already exists"):
        await repo8.add(Memory(content="other", embedding=vec(2), id=m.id))
    assert (await repo8.get(m.id)).content == "I love dogs"
    assert len(await repo8.history(m.id)) == 1


BAD_VECTORS = [
    (np.ones(DIM + 1, np.float32), "shape"),
    (np.ones(3, np.float32), "shape"),
    (np.array([np.nan] * DIM, np.float32), "NaN or infinite"),
    (np.array([np.inf] + [0.0] * (DIM - 1), np.float32), "NaN or infinite"),
    (np.zeros(DIM, np.float32), "all zeros"),
    (["a"] * DIM, "not numeric"),
    (None, "missing"),
]


@pytest.mark.parametrize(("vector", "message"), BAD_VECTORS)
async def test_bad_vectors_are_rejected_everywhere(repo8: PostgresMemoryRepository, vector: object,
                                                   message: str) -> None:
    good = mem()
    await repo8.add(good)
    with pytest.raises(InvalidMemoryError, match=message):
        await repo8.add(Memory(content="x", embedding=vector))  # type: ignore[arg-type]
    if vector is not None:
        with pytest.raises(InvalidMemoryError, match=message):
            await repo8.search(vector)  # type: ignore[arg-type]
        with pytest.raises(InvalidMemoryError, match=message):
            await repo8.update(good.id, embedding=vector)  # type: ignore[arg-type]
    assert await rows(repo8) == 1 and len(await repo8.history(good.id)) == 1


@pytest.mark.parametrize(("content", "message"), [
    ("", "empty"), ("   \n", "empty"), (None, "must be a str"), (42, "must be a str"),
    ("a\x00b", "NUL"), ("x" * (MAX_CONTENT_CHARS + 1), "more than the limit"),
])
async def test_bad_content_is_rejected(repo8: PostgresMemoryRepository, content: object, message: str) -> None:
    good = mem()
    await repo8.add(good)
    with pytest.raises(InvalidMemoryError, match=message):
        await repo8.add(Memory(content=content, embedding=vec(1)))  # type: ignore[arg-type]
    if content is not None:
        with pytest.raises(InvalidMemoryError, match=message):
            await repo8.update(good.id, content=content)  # type: ignore[arg-type]
    assert await rows(repo8) == 1 and (await repo8.get(good.id)).content == "I love dogs"


async def test_long_content_within_the_limit_round_trips(repo8: PostgresMemoryRepository) -> None:
    text = "word " * (MAX_CONTENT_CHARS // 5)
    m = mem(text)
    await repo8.add(m)
    assert (await repo8.get(m.id)).content == text


@pytest.mark.parametrize("metadata", [{"x": float("nan")}, {1: "a"}, {"x": object()}, ["a"]])
async def test_bad_metadata_is_rejected(repo8: PostgresMemoryRepository, metadata: object) -> None:
    with pytest.raises(InvalidMemoryError):
        await repo8.add(mem(metadata=metadata))
    assert await rows(repo8) == 0


@pytest.mark.parametrize("bad_id", ["", None, 5, "x" * 300, "a\x00"])
async def test_bad_ids_are_rejected(repo8: PostgresMemoryRepository, bad_id: object) -> None:
    with pytest.raises(InvalidMemoryError, match="memory id"):
        await repo8.get(bad_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidMemoryError):
        await repo8.add(Memory(content="x", embedding=vec(0), id=bad_id))  # type: ignore[arg-type]
    with pytest.raises(InvalidMemoryError, match="user_id"):
        await repo8.add(Memory(content="x", embedding=vec(0), user_id=bad_id or 7))  # type: ignore[arg-type]


async def test_update_needs_something_to_change(repo8: PostgresMemoryRepository) -> None:
    m = mem()
    await repo8.add(m)
    with pytest.raises(InvalidMemoryError, match="give content, embedding or metadata"):
        await repo8.update(m.id)


async def test_setup_is_idempotent_and_checks_the_dimension(repo8: PostgresMemoryRepository) -> None:
    await repo8.add(mem())
    await repo8.setup()
    assert await rows(repo8) == 1
    other = PostgresMemoryRepository(repo8.pool, dim=DIM + 1)
    with pytest.raises(Exception, match=r"exists with embedding vector\(8\)"):
        await other.setup()


async def test_a_typical_384_dim_memory_is_stored_inline_not_in_toast(memory_repo: PostgresMemoryRepository) -> None:
    """A 384-dim vector with its text and lexemes is just over Postgres' 2 kB TOAST threshold;
    an exact scan must not pay a TOAST lookup per row (pg_schema.TOAST_TUPLE_TARGET)."""
    rng = np.random.default_rng(7)
    words = ["support", "group", "yesterday", "powerful", "painting", "adoption", "camping", "school", "friends",
             "museum", "guitar", "sunrise", "lake", "pottery", "family", "career", "counseling", "parade"]
    texts = ["Caroline: " + " ".join(rng.choice(words, 70)) for _ in range(40)]  # about 530 characters each
    vectors = rng.standard_normal((len(texts), 384)).astype(np.float32)
    await memory_repo.add_batch([Memory(content=t, embedding=v, user_id="u") for t, v in zip(texts, vectors)])
    async with memory_repo.pool.acquire() as conn:
        row_bytes = await conn.fetchval(f"SELECT min(pg_column_size(t.*)) FROM {memory_repo.table} t")
        toast = await conn.fetchval("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = $1::regclass",
                                    memory_repo.table)
        toast_rows = await conn.fetchval(f"SELECT count(*) FROM {toast}")
    assert min(len(t) for t in texts) + 4 * 384 > 2040  # past the default threshold: the test means something
    assert toast_rows == 0
    assert row_bytes > 2100  # the vector is in the row itself


async def _gin_state(repo: PostgresMemoryRepository) -> dict[str, tuple[list[str], int]]:
    """Each GIN index's options and how many pages its pending list held (merged by the call)."""
    state = {}
    async with repo.pool.acquire() as conn:
        for index in (f"{repo.table}_metadata_idx", f"{repo.table}_content_tsv_idx"):
            options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass", index)
            pages = await conn.fetchval("SELECT gin_clean_pending_list($1::regclass)", index)
            state[index] = (list(options or []), pages)
    return state


async def test_gin_indexes_keep_no_pending_list_so_a_search_never_scans_one(repo8: PostgresMemoryRepository) -> None:
    """New rows' entries go into the GIN indexes at once (pg_schema.GIN_OPTIONS): a search's
    cost must not depend on when autovacuum last merged a pending list."""
    await repo8.add_batch([mem(f"memory number {i} about dogs", seed=i, metadata={"n": i}) for i in range(300)])
    await repo8.add(mem("one more", metadata={"n": 1}))
    state = await _gin_state(repo8)
    assert all(options == ["fastupdate=off"] and pages == 0 for options, pages in state.values()), state


async def test_setup_turns_an_older_tables_gin_indexes_off_their_pending_list(repo8: PostgresMemoryRepository) -> None:
    """A table made by an earlier version (fastupdate on, entries pending) is migrated by setup()."""
    async with repo8.pool.acquire() as conn:
        for index in (f"{repo8.table}_metadata_idx", f"{repo8.table}_content_tsv_idx"):
            await conn.execute(f"ALTER INDEX {index} RESET (fastupdate)")
    await repo8.add_batch([mem(f"memory number {i} about cats", seed=i, metadata={"n": i}) for i in range(300)])
    async with repo8.pool.acquire() as conn:  # entries now pending: gin_clean_pending_list would merge them
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass",
                                      f"{repo8.table}_metadata_idx")
    assert options is None
    await repo8.setup()
    state = await _gin_state(repo8)
    assert all(options == ["fastupdate=off"] and pages == 0 for options, pages in state.values()), state
    assert len(await repo8.search(vec(3), filters={"n": 3}, limit=5)) == 1


def test_constructor_rejects_unsafe_table_names() -> None:
    for table in ("memories; DROP TABLE x", "Memories", "a-b", ""):
        with pytest.raises(ValueError, match="table must match"):
            PostgresMemoryRepository(object(), dim=8, table=table)
    with pytest.raises(ValueError, match="dim"):
        PostgresMemoryRepository(object(), dim=0)


def _wire(records: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [(*r[:6], r[6].to_binary(), r[7]) for r in records]  # type: ignore[attr-defined]


def test_batch_records_fast_path_equals_row_by_row_checks() -> None:
    """The column-screened fast path of add_batch's records gives exactly what the
    row-by-row checks give, for every shape of valid row; and a bad row in a later
    chunk is named by its index in the whole batch."""
    batch = [Memory(content=f"naïve text {i} \u00e9\U0001f600", embedding=vec(i), id=f"id-{i}",
                    user_id=[None, "u", "\u00fc"][i % 3], agent_id="a" if i % 2 else None,
                    run_id=None if i % 5 else "r",
                    metadata=[{}, {"n": i, "f": 0.5, "b": True, "s": "}, {", "z": None},
                              {"nested": {"x": [1, {"y": "z"}]}}, None][i % 4])
             for i in range(40)]
    fast = list(iter_records(batch, DIM, chunk_rows=8))
    slow = list(_checked_rows(batch, encode_vectors(check_matrix(batch, DIM)), 0))
    assert _wire(fast) == _wire(slow)
    assert fast[1][5] == '{"n": 1, "f": 0.5, "b": true, "s": "}, {", "z": null}'
    assert [r[5] for r in fast[2:4]] == ['{"nested": {"x": [1, {"y": "z"}]}}', "{}"]
    assert _wire(batch_records(batch, DIM)) == _wire(fast)
    flat = [Memory(content=f"t{i}", embedding=vec(i), metadata=[{}, {"n": i, "f": -1e-7, "u": "\u00e9\"\\"},
                                                                 {"b": False, "z": None}][i % 3])
            for i in range(24)]
    flat[20].metadata = {"s": "a}, {b"}  # one chunk cut apart wrongly: it goes dict by dict
    assert _metadata_json([m.metadata for m in flat[:8]]) is not None
    assert _wire(list(iter_records(flat, DIM, chunk_rows=8))) == _wire(
        list(_checked_rows(flat, encode_vectors(check_matrix(flat, DIM)), 0)))
    assert _metadata_json([{"n": 1}, {"x": float("inf")}]) is None
    assert _metadata_json([{"n": 1}, {2: "a"}]) is None
    for field, value, message in (("user_id", "", "user_id"), ("content", " ", "content is empty"),
                                  ("metadata", {"x": float("nan")}, "metadata"), ("id", "a\x00", "memory id")):
        bad = list(batch)
        bad[19] = Memory(**{**vars(batch[19]), field: value})
        with pytest.raises(InvalidMemoryError, match=rf"add_batch\[19\]: .*{message}"):
            list(iter_records(bad, DIM, chunk_rows=8))
