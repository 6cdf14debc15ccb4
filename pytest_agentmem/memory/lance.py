"""``LanceDBMemoryStore``: the memory repository on embedded LanceDB (async API).

Two tables: ``memories`` (one row a memory, the vector in a fixed-size list
column, metadata as Lance JSON) and ``history`` (one row an ADD/UPDATE/DELETE
event). Writes are serialised by one lock per store and validated completely
before anything is written; if the history write fails after the memory write,
the memory write is undone, so nothing is stored half-way. Once both are
written the write stands: index upkeep after it never fails it (see
:meth:`LanceDBMemoryStore._after_write`).

Indexes: a BTREE on ``id`` and BITMAP indexes on the scoping columns once the
table holds ``scalar_index_threshold`` rows; a vector index (IVF_HNSW_SQ, cosine)
once it holds ``index_threshold`` rows. Rows added later are searched exactly
until :meth:`optimize` folds them into the indexes (called automatically when
a quarter of the rows are unindexed).

Filtered search returns min(limit, matching rows) results, all matching: the
filter is applied before the vector search (LanceDB's prefilter). When the
filtered set is small (``exact_threshold`` rows or fewer, counted through the
scalar indexes and remembered until the next write) the search is exact over
it; otherwise it goes through the vector index with a widened candidate list
and exact re-ranking.

Filters: the language of every store (:mod:`.validation`), compiled by
:mod:`.lance_filters`; keys must be identifiers here.
Search results carry ``score`` (cosine similarity) and no embedding; ``get``
returns the embedding.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AgentmemError
from .lance_filters import build_where, sql_string
from .model import HistoryEvent, InvalidMemoryError, Memory, MemoryNotFoundError
from .validation import (
    SCOPES,
    check_dim,
    check_limit,
    check_memory,
    check_memory_id,
    check_table_name,
    check_update,
    check_vector,
)

SCOPE_COLUMNS = SCOPES
#: Rows a vector index needs to train on (LanceDB refuses fewer).
MIN_INDEX_ROWS = 256
_log = logging.getLogger(__name__)
_RESULT_COLUMNS = ["id", "content", "user_id", "agent_id", "run_id", "metadata", "created_at",
                   "updated_at", "_distance"]


class LanceUnavailableError(AgentmemError):
    """lancedb/pyarrow are not installed."""


def _import_lancedb() -> tuple[Any, Any]:
    try:
        import lancedb
        import pyarrow as pa
    except ImportError as exc:
        raise LanceUnavailableError(f"{exc.name} is not installed; install pytest-agentmem[lancedb]") from None
    return lancedb, pa


# --------------------------------------------------------------------------- schemas


def memory_schema(pa: Any, dim: int) -> Any:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("agent_id", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("metadata", pa.json_(pa.utf8())),
        pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ])


def history_schema(pa: Any) -> Any:
    return pa.schema([
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("memory_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("old_content", pa.string()),
        pa.field("new_content", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ])


async def _open_or_create(db: Any, name: str, schema: Any) -> Any:
    try:
        return await db.open_table(name)
    except (ValueError, FileNotFoundError, RuntimeError):
        return await db.create_table(name, schema=schema)


# --------------------------------------------------------------------------- store


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LanceDBMemoryStore:
    """The :class:`~pytest_agentmem.memory.model.MemoryRepository` on embedded LanceDB.

    Open one with :meth:`open`. ``index_threshold``: rows at which the vector
    index is built (at least :data:`MIN_INDEX_ROWS`) (``None``: never automatically; :meth:`create_index` builds it
    on demand). ``exact_threshold``: a filtered search over at most this many rows
    is exact. ``ef`` and ``refine_factor`` tune the indexed search.
    """

    def __init__(self, db: Any, table: Any, history_table: Any, *, dim: int, uri: str,
                 index_threshold: int | None = 50_000, scalar_index_threshold: int = 5_000,
                 exact_threshold: int = 20_000, ef: int = 96, refine_factor: int = 2,
                 hnsw_m: int = 16, hnsw_ef_construction: int = 120) -> None:
        self.db = db
        self.table = table
        self.history_table = history_table
        self.dim = dim
        self.uri = uri
        self.index_threshold = index_threshold
        self.scalar_index_threshold = scalar_index_threshold
        self.exact_threshold = exact_threshold
        self.ef = ef
        self.refine_factor = refine_factor
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self._lock: asyncio.Lock | None = None
        self._has_vector_index = False
        self._has_scalar_indexes = False
        self._writes_since_optimize = 0
        self._write_version = 0  # bumped by every write; keys the filter-count cache
        self._counts: dict[str, tuple[int, int]] = {}
        self.exact_searches = 0
        self.indexed_searches = 0
        #: Index upkeep after a committed write that failed (the write still
        #: succeeded; the upkeep is tried again after a later write).
        self.maintenance_errors = 0
        self.last_maintenance_error: Exception | None = None

    @classmethod
    async def open(cls, uri: str | Path, *, dim: int, table: str = "memories", **options: Any) -> LanceDBMemoryStore:
        """Open (or create) the store's tables under ``uri`` (a directory)."""
        check_dim(dim)
        check_table_name(table)
        lancedb, pa = _import_lancedb()
        db = await lancedb.connect_async(str(uri))
        memories = await _open_or_create(db, table, memory_schema(pa, dim))
        existing = await memories.schema()
        vector_type = existing.field("vector").type
        if getattr(vector_type, "list_size", dim) != dim:
            raise InvalidMemoryError(f"table {table!r} under {uri} holds {vector_type.list_size}-dim vectors, "
                                     f"not {dim}: was it made with another model?")
        history = await _open_or_create(db, f"{table}_history", history_schema(pa))
        store = cls(db, memories, history, dim=dim, uri=str(uri), **options)
        await store._discover_indexes()
        return store

    async def _discover_indexes(self) -> None:
        indexes = await self.table.list_indices()
        columns = {tuple(ix.columns) for ix in indexes}
        self._has_vector_index = ("vector",) in columns
        self._has_scalar_indexes = ("id",) in columns

    @property
    def _write_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def close(self) -> None:
        """Drop the handles (the data stays on disk)."""
        for handle in (self.table, self.history_table, self.db):
            closer = getattr(handle, "close", None)
            if closer is not None:
                try:
                    closer()
                except Exception:  # pragma: no cover - closing is best effort
                    pass

    # -- rows

    def _validated(self, memory: Memory) -> Memory:
        vector = check_memory(memory, self.dim)
        return Memory(content=memory.content, user_id=memory.user_id, agent_id=memory.agent_id,
                      run_id=memory.run_id, metadata=dict(memory.metadata or {}), embedding=vector,
                      id=memory.id, created_at=memory.created_at or _now(), updated_at=memory.updated_at)

    def _to_arrow(self, memories: list[Memory]) -> Any:
        _, pa = _import_lancedb()
        vectors = np.stack([np.asarray(m.embedding) for m in memories]).astype(np.float32, copy=False)
        return pa.table({
            "id": [m.id for m in memories],
            "content": [m.content for m in memories],
            "user_id": [m.user_id for m in memories],
            "agent_id": [m.agent_id for m in memories],
            "run_id": [m.run_id for m in memories],
            "metadata": pa.array([json.dumps(m.metadata, separators=(",", ":")) for m in memories],
                                 type=pa.json_(pa.utf8())),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
            "created_at": [m.created_at for m in memories],
            "updated_at": [m.updated_at for m in memories],
        }, schema=memory_schema(pa, self.dim))

    def _history_rows(self, events: list[tuple[str, str, str | None, str | None]]) -> Any:
        _, pa = _import_lancedb()
        now = _now()
        return pa.table({
            "event_id": [str(uuid.uuid4()) for _ in events],
            "memory_id": [e[0] for e in events],
            "event": [e[1] for e in events],
            "old_content": [e[2] for e in events],
            "new_content": [e[3] for e in events],
            "created_at": [now] * len(events),
        }, schema=history_schema(pa))

    @staticmethod
    def _from_row(row: dict[str, Any], *, with_vector: bool) -> Memory:
        metadata = row.get("metadata")
        if isinstance(metadata, (bytes, str)) and metadata:
            metadata = json.loads(metadata)
        distance = row.get("_distance")
        return Memory(
            id=row["id"], content=row["content"], user_id=row.get("user_id"), agent_id=row.get("agent_id"),
            run_id=row.get("run_id"), metadata=metadata or {},
            embedding=np.asarray(row["vector"], dtype=np.float32) if with_vector else None,
            created_at=row["created_at"], updated_at=row.get("updated_at"),
            score=None if distance is None else 1.0 - float(distance))

    # -- protocol

    async def add(self, memory: Memory) -> str:
        return (await self.add_batch([memory]))[0]

    async def add_batch(self, memories: list[Memory]) -> list[str]:
        if not isinstance(memories, (list, tuple)):
            raise InvalidMemoryError(f"add_batch takes a list of Memory, got {type(memories).__name__}")
        checked = []
        for index, memory in enumerate(memories):
            try:
                checked.append(self._validated(memory))
            except InvalidMemoryError as exc:
                raise InvalidMemoryError(f"memory {index}: {exc}") from None
        if not checked:
            return []
        ids = [m.id for m in checked]
        if len(set(ids)) != len(ids):
            raise InvalidMemoryError("add_batch got the same id twice")
        async with self._write_lock:
            clash = await self.table.query().where(
                f"id IN ({', '.join(sql_string(i) for i in ids)})").select(["id"]).limit(1).to_list()
            if clash:
                raise InvalidMemoryError(f"a memory with id {clash[0]['id']!r} already exists; use update")
            await self.table.add(self._to_arrow(checked))
            try:
                await self.history_table.add(self._history_rows([(m.id, "ADD", None, m.content) for m in checked]))
            except BaseException:
                await self.table.delete(f"id IN ({', '.join(sql_string(i) for i in ids)})")
                raise
            await self._after_write(len(checked))
        return ids

    async def _row(self, memory_id: str) -> dict[str, Any]:
        rows = await self.table.query().where(f"id = {sql_string(check_memory_id(memory_id))}").limit(1).to_list()
        if not rows:
            raise MemoryNotFoundError(memory_id)
        return rows[0]

    async def get(self, memory_id: str) -> Memory:
        return self._from_row(await self._row(memory_id), with_vector=True)

    async def update(self, memory_id: str, *, content: str | None = None, embedding: np.ndarray | None = None,
                     metadata: dict[str, Any] | None = None) -> Memory:
        content, vector, new_metadata = check_update(memory_id, content, embedding, metadata, self.dim)
        if content is not None and vector is None:
            raise InvalidMemoryError("updating content needs the new content's embedding too "
                                     "(the old one would no longer match it)")
        async with self._write_lock:
            old = self._from_row(await self._row(memory_id), with_vector=True)
            new = Memory(content=content if content is not None else old.content, user_id=old.user_id,
                         agent_id=old.agent_id, run_id=old.run_id,
                         metadata=dict(new_metadata) if new_metadata is not None else old.metadata,
                         embedding=vector if vector is not None else old.embedding, id=old.id,
                         created_at=old.created_at, updated_at=_now())
            await self._replace(new)
            try:
                await self.history_table.add(self._history_rows([(old.id, "UPDATE", old.content, new.content)]))
            except BaseException:
                await self._replace(old)
                raise
            await self._after_write(1)
        new.embedding = np.array(new.embedding, copy=True)
        return new

    async def _replace(self, memory: Memory) -> None:
        await (self.table.merge_insert("id").when_matched_update_all()
               .execute(self._to_arrow([memory])))

    async def delete(self, memory_id: str) -> None:
        check_memory_id(memory_id)
        async with self._write_lock:
            old = self._from_row(await self._row(memory_id), with_vector=True)
            await self.table.delete(f"id = {sql_string(memory_id)}")
            try:
                await self.history_table.add(self._history_rows([(old.id, "DELETE", old.content, None)]))
            except BaseException:
                await self.table.add(self._to_arrow([old]))
                raise
            await self._after_write(1)

    async def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                         run_id: str | None = None) -> int:
        where = build_where(user_id=user_id, agent_id=agent_id, run_id=run_id)
        if where is None:
            raise InvalidMemoryError("delete_all needs user_id, agent_id or run_id (refusing to delete everything)")
        async with self._write_lock:
            rows = await self.table.query().where(where).to_list()
            if not rows:
                return 0
            await self.table.delete(where)
            try:
                await self.history_table.add(
                    self._history_rows([(r["id"], "DELETE", r["content"], None) for r in rows]))
            except BaseException:
                await self.table.add(self._to_arrow([self._from_row(r, with_vector=True) for r in rows]))
                raise
            await self._after_write(len(rows))
        return len(rows)

    async def history(self, memory_id: str) -> list[HistoryEvent]:
        rows = await (self.history_table.query().where(f"memory_id = {sql_string(check_memory_id(memory_id))}")
                      .to_list())
        if not rows and not await self.table.count_rows(f"id = {sql_string(memory_id)}"):
            raise MemoryNotFoundError(memory_id)
        order = {"ADD": 0, "UPDATE": 1, "DELETE": 2}
        rows.sort(key=lambda r: (r["created_at"], order.get(r["event"], 1)))
        return [HistoryEvent(memory_id=r["memory_id"], event=r["event"], old_content=r["old_content"],
                             new_content=r["new_content"], created_at=r["created_at"]) for r in rows]

    async def count(self, *, user_id: str | None = None, agent_id: str | None = None,
                    run_id: str | None = None, filters: dict[str, Any] | None = None) -> int:
        """Rows matching the scopes and filters (all rows without them)."""
        where = build_where(user_id=user_id, agent_id=agent_id, run_id=run_id, filters=filters)
        return int(await self.table.count_rows(where))

    async def search(self, vector: np.ndarray, *, user_id: str | None = None, agent_id: str | None = None,
                     run_id: str | None = None, filters: dict[str, Any] | None = None,
                     limit: int = 10) -> list[Memory]:
        query_vector = check_vector(vector, self.dim, what="query vector")
        check_limit(limit)
        where = build_where(user_id=user_id, agent_id=agent_id, run_id=run_id, filters=filters)
        query = (self.table.query().nearest_to(query_vector).distance_type("cosine")
                 .select(_RESULT_COLUMNS).limit(limit))
        exact = not self._has_vector_index
        if where is not None:
            query = query.where(where)  # prefilter: applied before the vector search
            if not exact and await self._count(where) <= self.exact_threshold:
                exact = True
        if exact:
            query = query.bypass_vector_index()
            self.exact_searches += 1
        else:
            query = query.ef(max(self.ef, 4 * limit)).refine_factor(self.refine_factor)
            self.indexed_searches += 1
        rows = await query.to_list()
        return [self._from_row(row, with_vector=False) for row in rows]

    async def cache_namespace(self) -> str:
        """Names this store's data for caches shared between processes and runs: its
        directory, table and when the table was made (a table made anew differs)."""
        versions = await self.table.list_versions()
        made = min(versions, key=lambda v: v["version"])["timestamp"] if versions else None
        where = self.uri if "://" in self.uri else os.path.abspath(self.uri)
        return "lancedb:" + json.dumps([where, self.table.name, str(made)])

    async def _count(self, where: str) -> int:
        """Rows matching ``where``, remembered until the next write (searches repeat filters)."""
        cached = self._counts.get(where)
        if cached is not None and cached[0] == self._write_version:
            return cached[1]
        version = self._write_version
        count = int(await self.table.count_rows(where))
        self._counts[where] = (version, count)
        if len(self._counts) > 4096:
            self._counts.clear()
        return count

    # -- indexes and maintenance

    async def create_index(self, *, replace: bool = True) -> None:
        """Build the vector index now (IVF_HNSW_SQ, cosine) and the scalar indexes."""
        from lancedb.index import HnswSq

        await self._create_scalar_indexes()
        rows = await self.table.count_rows()
        if rows < MIN_INDEX_ROWS:
            raise InvalidMemoryError(f"a vector index needs at least {MIN_INDEX_ROWS} rows to train on; "
                                     f"the table has {rows}")
        partitions = max(1, rows // 500_000)
        await self.table.create_index("vector", replace=replace, config=HnswSq(
            distance_type="cosine", num_partitions=partitions, m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction))
        self._has_vector_index = True

    async def _create_scalar_indexes(self) -> None:
        from lancedb.index import Bitmap, BTree

        await self.table.create_index("id", config=BTree(), replace=True)
        for column in SCOPE_COLUMNS:
            await self.table.create_index(column, config=Bitmap(), replace=True)
        await self.history_table.create_index("memory_id", config=BTree(), replace=True)
        self._has_scalar_indexes = True

    async def optimize(self) -> None:
        """Compact small files and fold new rows into the indexes."""
        await self.table.optimize()
        await self.history_table.optimize()
        self._writes_since_optimize = 0

    async def unindexed_rows(self) -> int:
        """Rows the vector index does not cover yet (all rows if there is none)."""
        if not self._has_vector_index:
            return int(await self.table.count_rows())
        for index in await self.table.list_indices():
            if tuple(index.columns) == ("vector",):
                stats = await self.table.index_stats(index.name)
                return int(stats.num_unindexed_rows) if stats is not None else 0
        return 0

    async def _after_write(self, rows: int) -> None:
        """Bookkeeping after a committed write, then index upkeep (:meth:`_maintain`).

        The write is stored whatever the upkeep does: a failure of it is counted
        in :attr:`maintenance_errors` and logged, never raised to the writer
        (who would take it for "nothing was stored").
        """
        self._write_version += 1
        self._writes_since_optimize += 1
        try:
            await self._maintain(rows)
        except Exception as exc:  # noqa: BLE001 - the write itself is committed
            self.maintenance_errors += 1
            self.last_maintenance_error = exc
            _log.warning("LanceDB index upkeep after a write failed (the write is stored; "
                         "tried again after a later write): %s: %s", type(exc).__name__, exc)

    async def _maintain(self, rows: int) -> None:
        """Build indexes when the table has grown enough; compact after many small writes."""
        total: int | None = None
        if not self._has_scalar_indexes:
            total = await self.table.count_rows()
            if total >= self.scalar_index_threshold:
                await self._create_scalar_indexes()
        if not self._has_vector_index and self.index_threshold is not None:
            total = total if total is not None else await self.table.count_rows()
            if total >= max(self.index_threshold, MIN_INDEX_ROWS):
                await self.create_index()
                self._writes_since_optimize = 0
                return
        if self._has_vector_index and rows >= 1000:
            unindexed = await self.unindexed_rows()
            total = total if total is not None else await self.table.count_rows()
            if unindexed * 4 > total:
                await self.optimize()
                return
        if self._writes_since_optimize >= 500:
            await self.optimize()
