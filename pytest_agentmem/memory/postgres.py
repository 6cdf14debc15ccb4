"""The Postgres/pgvector memory repository (asyncpg).

Schema (``await repo.setup()``): a table of memories with ``vector(dim)``, an HNSW
index (cosine), ``jsonb`` metadata with a GIN index for filters and btree indexes
on the scoping columns, plus ``<table>_history`` holding every UPDATE and DELETE
with old and new content, written in the same statement as the change.

ADD events are implicit: ``add``/``add_batch`` write only the memory rows (an ADD
row per memory cost ``add_batch`` about a quarter of its speed), and
:meth:`~PostgresMemoryRepository.history` derives the ADD event from them. Its
``created_at`` is the memory's ``created_at`` (which a DELETE event keeps in
``memory_created_at``, as the row is gone), its ``new_content`` the original
content: the ``old_content`` of the first UPDATE event, else of the DELETE event,
else the current content. History therefore reads exactly as if the ADD had been
written, including for an id re-added after a delete (ADD, DELETE, ADD...).

Filtered search is exact in what it returns: pgvector's HNSW scan applies a
``WHERE`` after the index scan, so a selective filter plainly returns too few
rows. Search therefore takes one of two paths:

* small filtered set (at most ``exact_threshold`` rows): an exact scan of just
  those rows (btree/GIN lookup, distance computed for each, sorted). One round
  trip, which also tells how many rows matched (capped at the threshold + 1);
* larger set: the HNSW index with ``hnsw.iterative_scan = relaxed_order`` set for
  that transaction, the rows re-sorted by distance; if the index still returns
  fewer than ``limit`` rows, the exact path over the whole filtered set.

Filters whose set proved large are remembered (bounded) so later searches go
straight to the index; that memory can only cost speed, never correctness.

Search ranks by ``mode`` (:data:`~.pg_hybrid.SEARCH_MODES`): ``"dense"`` (the
embedding, as above), ``"lexical"`` (Postgres full-text search over the generated
``content_tsv`` column, GIN-indexed) or ``"hybrid"``, both branches fused by
reciprocal rank fusion in one statement (:mod:`.pg_hybrid`), each branch taking
the same path (exact or index) and the same WHERE clause as a dense search.
Lexical and hybrid searches need the query text (``text=``); without it a search
is dense. A table made by an older version gets the column in :meth:`setup`
(``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, a rewrite of the table); if setup
was not run on it, text searches fall back to dense and say so in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AgentmemError
from .model import HistoryEvent, InvalidMemoryError, Memory, MemoryNotFoundError
from .pg_batch import check_memories, dumps, iter_records
from .pg_filters import Where, compile_selection
from .pg_hybrid import (
    FUSION_DEPTH,
    RRF_K,
    SEARCH_MODES,
    TSV_COLUMN,
    exact_dense_cte,
    fused_sql,
    index_dense_cte,
    lexical_cte,
    lexical_sql,
    tsv_column_sql,
)
from .validation import (
    check_dim,
    check_limit,
    check_memory,
    check_memory_id,
    check_selection,
    check_table_name,
    check_update,
    check_vector,
)

#: pgvector's upper bound for ``hnsw.ef_search``.
MAX_EF_SEARCH = 1000
_BIG_FILTER_MEMORY = 4096
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    """asyncpg pool defaults sized for the machine, not for a big server.

    The old plan asked for min 10 / max 100 connections. Each Postgres connection
    is a process and a query runs on one core: on a 2-core machine more than a
    few busy backends only add context switches and memory, while asyncio
    callers queue cheaply for a connection. ``max_size`` = 4 per core (8 here)
    keeps both cores busy while some connections wait on the network; ``min_size``
    = 1 per core avoids connecting on the first requests. Acquire timeout 5 s
    and 10 min idle lifetime as the old plan said: long enough for bursts,
    short enough to release idle servers.
    """

    min_size: int = max(1, os.cpu_count() or 1)
    max_size: int = 4 * max(1, os.cpu_count() or 1)
    acquire_timeout: float = 5.0
    command_timeout: float = 60.0
    max_inactive_connection_lifetime: float = 600.0


async def create_memory_pool(dsn: str, settings: PoolSettings = PoolSettings(), *,
                             create_extension: bool = True) -> Any:
    """An asyncpg pool with the pgvector codec registered, sized by ``settings``.

    The codec needs the ``vector`` type, so the extension is created first
    (``create_extension=False`` if the role may not and it exists already).
    """
    import asyncpg
    from pgvector.asyncpg import register_vector

    if create_extension:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        finally:
            await conn.close()
    return await asyncpg.create_pool(
        dsn, min_size=settings.min_size, max_size=settings.max_size,
        command_timeout=settings.command_timeout, init=register_vector,
        max_inactive_connection_lifetime=settings.max_inactive_connection_lifetime)


class PostgresMemoryRepository:
    """Memories in Postgres with pgvector; implements :class:`MemoryRepository`.

    ``pool`` is an asyncpg pool whose connections have the pgvector codec
    registered (:func:`create_memory_pool`, or the ``pg_pool`` fixture).
    ``ef_search`` is used for unfiltered searches (None: the server's, 40, which
    saves two round trips but gave recall@10 0.95 against 0.97 at 100 on 100k
    clustered 384-dim vectors), ``filtered_ef_search`` for the iterative filtered
    scan. ``exact_threshold``: filtered sets up to this many rows are searched
    exactly; ``overfetch``: the iterative scan fetches ``limit * overfetch`` rows
    before re-sorting (relaxed order), which lifted recall@10 at 1% selectivity
    from 0.97 to 0.995.

    ``search_mode`` is the default of :meth:`search`'s ``mode`` when it is given
    the query text: ``"hybrid"`` (default), ``"dense"`` or ``"lexical"``;
    ``fusion_depth`` rows of each branch are fused, with RRF constant ``rrf_k``.
    """

    def __init__(self, pool: Any, *, dim: int, table: str = "memories",
                 ef_search: int | None = 100, filtered_ef_search: int = 100,
                 exact_threshold: int = 2000, max_scan_tuples: int = 50_000,
                 overfetch: float = 2.0, search_mode: str = "hybrid",
                 fusion_depth: int = FUSION_DEPTH, rrf_k: int = RRF_K,
                 hnsw_m: int = 16, hnsw_ef_construction: int = 64,
                 acquire_timeout: float | None = PoolSettings.acquire_timeout) -> None:
        check_dim(dim)
        check_table_name(table)
        for name, value, low, high in (("ef_search", ef_search or 40, 1, MAX_EF_SEARCH),
                                       ("filtered_ef_search", filtered_ef_search, 1, MAX_EF_SEARCH),
                                       ("exact_threshold", exact_threshold, 0, 10**8),
                                       ("max_scan_tuples", max_scan_tuples, 1, 2**31 - 1),
                                       ("hnsw_m", hnsw_m, 2, 100),
                                       ("hnsw_ef_construction", hnsw_ef_construction, 4, 1000),
                                       ("fusion_depth", fusion_depth, 1, 10_000),
                                       ("rrf_k", rrf_k, 0, 10**6)):
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
        self.pool = pool
        self.dim = dim
        self.table = table
        self.history_table = f"{table}_history"
        self.ef_search = ef_search
        self.filtered_ef_search = filtered_ef_search
        self.exact_threshold = exact_threshold
        self.max_scan_tuples = max_scan_tuples
        if not 1.0 <= overfetch <= 10.0:
            raise ValueError(f"overfetch must be in 1..10, got {overfetch!r}")
        self.overfetch = overfetch
        self.search_mode = check_search_mode(search_mode)
        self.fusion_depth = fusion_depth
        self.rrf_k = rrf_k
        #: False once a text search found no ``content_tsv`` column (setup not run on an old table).
        self.lexical_available = True
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.acquire_timeout = acquire_timeout
        self._big_filters: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        #: How searches were served: "exact", "index", "index_fallback" -> count.
        self.search_paths: dict[str, int] = {"exact": 0, "index": 0, "index_fallback": 0,
                                             "hybrid_exact": 0, "hybrid_index": 0,
                                             "hybrid_fallback": 0, "lexical": 0}

    # ------------------------------------------------------------------ schema

    async def setup(self, *, vector_index: bool = True) -> None:
        """Create the tables and indexes (idempotent).

        ``vector_index=False`` leaves out the HNSW index, for bulk loads: load
        with :meth:`add_batch`, then :meth:`create_vector_index` (much faster
        than maintaining the graph row by row).
        """
        t, h = self.table, self.history_table
        statements = [
            "CREATE EXTENSION IF NOT EXISTS vector",
            f"""CREATE TABLE IF NOT EXISTS {t} (
                id text PRIMARY KEY,
                content text NOT NULL,
                user_id text, agent_id text, run_id text,
                metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                embedding vector({self.dim}) NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz,
                {tsv_column_sql()})""",
            # UPDATE and DELETE events only (ADD is derived, see the module doc).
            # One index only (the key): history is read per memory, in seq order.
            f"""CREATE TABLE IF NOT EXISTS {h} (
                seq bigint GENERATED ALWAYS AS IDENTITY,  -- no CACHE: events number in order across sessions
                memory_id text NOT NULL,
                event text NOT NULL CHECK (event IN ('UPDATE', 'DELETE')),
                old_content text, new_content text,
                created_at timestamptz NOT NULL DEFAULT now(),
                -- a DELETE's memory's created_at: the time of its implicit ADD event
                memory_created_at timestamptz,
                CHECK (event <> 'DELETE' OR memory_created_at IS NOT NULL),
                PRIMARY KEY (memory_id, seq))""",
            f"CREATE INDEX IF NOT EXISTS {t}_user_idx ON {t} (user_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_agent_idx ON {t} (agent_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_run_idx ON {t} (run_id)",
            f"CREATE INDEX IF NOT EXISTS {t}_metadata_idx ON {t} USING gin (metadata jsonb_path_ops)",
            # A table made before hybrid search: add the lexemes (rewrites the table once).
            f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {tsv_column_sql()}",
            f"CREATE INDEX IF NOT EXISTS {t}_{TSV_COLUMN}_idx ON {t} USING gin ({TSV_COLUMN})",
        ]
        async with self._acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", t)
                for statement in statements:
                    await conn.execute(statement)
                if not await conn.fetchval(
                        "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass "
                        "AND attname = 'memory_created_at' AND NOT attisdropped", h):
                    # A table made before ADD became implicit: it holds explicit ADD
                    # rows, which history() reads as they are.
                    await conn.execute(f"ALTER TABLE {h} ADD COLUMN memory_created_at timestamptz")
                declared = await conn.fetchval(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = $1::regclass AND attname = 'embedding'", t)
        if declared != f"vector({self.dim})":
            raise AgentmemError(f"table {t!r} exists with embedding {declared}, but this repository "
                                f"has dim={self.dim}: use another table or drop it")
        self.lexical_available = True
        if vector_index:
            await self.create_vector_index()

    async def create_vector_index(self, *, maintenance_work_mem: str = "1GB",
                                  parallel_workers: int | None = None) -> None:
        """Build the HNSW index (cosine) if missing; parallel on multi-core machines."""
        workers = max(0, (os.cpu_count() or 1) - 1) if parallel_workers is None else parallel_workers
        if not re.fullmatch(r"\d+[kMG]B", maintenance_work_mem):
            raise ValueError(f"maintenance_work_mem like '1GB', got {maintenance_work_mem!r}")
        async with self._acquire() as conn:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL maintenance_work_mem = '{maintenance_work_mem}'")
                await conn.execute(f"SET LOCAL max_parallel_maintenance_workers = {int(workers)}")
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {self.table}_embedding_idx ON {self.table} "
                    f"USING hnsw (embedding vector_cosine_ops) "
                    f"WITH (m = {self.hnsw_m}, ef_construction = {self.hnsw_ef_construction})")
            await conn.execute(f"ANALYZE {self.table}")

    # ------------------------------------------------------------------ writes

    async def add(self, memory: Memory) -> str:
        """Insert one memory; its ADD event is implicit (see :meth:`history`)."""
        record = self._record(memory)
        sql = (f"INSERT INTO {self.table} "
               "(id, content, user_id, agent_id, run_id, metadata, embedding, created_at) "
               "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)")
        import asyncpg

        async with self._acquire() as conn:
            try:
                await conn.execute(sql, *record)
            except asyncpg.UniqueViolationError:
                raise InvalidMemoryError(f"a memory with id {memory.id!r} already exists") from None
        return memory.id

    async def add_batch(self, memories: Sequence[Memory]) -> list[str]:
        """Insert many memories with COPY, all or nothing; returns their ids.

        Rows are checked and encoded in chunks while COPY streams the previous
        ones (:func:`.pg_batch.iter_records`). It is a single COPY statement,
        hence atomic without an explicit transaction: a bad row aborts it and
        nothing is stored. Only the memory rows are written; their ADD events are
        implicit.
        """
        memories = list(memories)
        if not memories:
            return []
        check_memories(memories)
        ids = [m.id for m in memories]
        if not set(map(type, ids)) <= {str}:
            index, memory_id = next((i, x) for i, x in enumerate(ids) if type(x) is not str)
            raise InvalidMemoryError(f"add_batch[{index}]: memory id must be a str, got {memory_id!r:.80}")
        if len(set(ids)) != len(ids):
            raise InvalidMemoryError("add_batch: the batch holds the same id twice")
        import asyncpg

        async with self._acquire() as conn:
            try:
                await conn.copy_records_to_table(
                    self.table, records=iter_records(memories, self.dim),
                    columns=COPY_COLUMNS)
            except asyncpg.UniqueViolationError as exc:
                raise InvalidMemoryError(f"add_batch: an id already exists ({exc.detail}); "
                                         "nothing was stored") from None
        return ids

    async def update(self, memory_id: str, *, content: str | None = None,
                     embedding: np.ndarray | None = None,
                     metadata: dict[str, Any] | None = None) -> Memory:
        """Change content, embedding and/or metadata (metadata is replaced, not merged).

        The caller keeps content and embedding consistent: the repository stores
        vectors, it does not embed.
        """
        new_content, vector, new_metadata = check_update(memory_id, content, embedding, metadata, self.dim)
        meta = None if new_metadata is None else _dumps(new_metadata)
        t, h = self.table, self.history_table
        sql = (f"WITH old AS (SELECT id, content FROM {t} WHERE id = $1 FOR UPDATE), "
               f"upd AS (UPDATE {t} SET content = coalesce($2, {t}.content), "
               f"embedding = coalesce($3, {t}.embedding), "
               f"metadata = coalesce($4::jsonb, {t}.metadata), updated_at = now() "
               f"FROM old WHERE {t}.id = old.id RETURNING {t}.*), "
               f"hist AS (INSERT INTO {h} (memory_id, event, old_content, new_content, created_at) "
               "SELECT upd.id, 'UPDATE', old.content, upd.content, upd.updated_at "
               "FROM upd JOIN old ON old.id = upd.id) "
               f"SELECT {_COLUMNS}, embedding FROM upd")
        async with self._acquire() as conn:
            row = await conn.fetchrow(sql, memory_id, new_content, vector, meta)
        if row is None:
            raise MemoryNotFoundError(memory_id)
        return _memory(row)

    async def delete(self, memory_id: str) -> None:
        check_memory_id(memory_id)
        sql = (f"WITH d AS (DELETE FROM {self.table} WHERE id = $1 RETURNING id, content, created_at) "
               f"INSERT INTO {self.history_table} "
               "(memory_id, event, old_content, new_content, memory_created_at) "
               "SELECT id, 'DELETE', content, NULL, created_at FROM d RETURNING memory_id")
        async with self._acquire() as conn:
            if await conn.fetchval(sql, memory_id) is None:
                raise MemoryNotFoundError(memory_id)

    async def delete_all(self, *, user_id: str | None = None, agent_id: str | None = None,
                         run_id: str | None = None) -> int:
        """Delete every memory of a scope (at least one of the ids); returns how many.

        Each deleted memory gets its DELETE event in the same statement.
        """
        where = compile_selection(Where(first=1), check_selection(
            user_id=user_id, agent_id=agent_id, run_id=run_id))
        if where.empty:
            raise InvalidMemoryError("delete_all needs user_id, agent_id or run_id; "
                                     "refusing to delete every memory")
        sql = (f"WITH d AS (DELETE FROM {self.table} WHERE {where.sql()} "
               "RETURNING id, content, created_at), "
               f"h AS (INSERT INTO {self.history_table} "
               "(memory_id, event, old_content, new_content, memory_created_at) "
               "SELECT id, 'DELETE', content, NULL, created_at FROM d) SELECT count(*) FROM d")
        async with self._acquire() as conn:
            return int(await conn.fetchval(sql, *where.params))

    # ------------------------------------------------------------------ reads

    async def get(self, memory_id: str) -> Memory:
        check_memory_id(memory_id)
        async with self._acquire() as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS}, embedding FROM {self.table} WHERE id = $1",
                                      memory_id)
        if row is None:
            raise MemoryNotFoundError(memory_id)
        return _memory(row)

    async def history(self, memory_id: str) -> list[HistoryEvent]:
        """The ADD/UPDATE/DELETE events of a memory, oldest first (kept after delete).

        The stored UPDATE/DELETE events and the memory's row (if it exists) are
        read in one statement, so from one snapshot; the ADD events are derived
        from them (module doc).
        """
        check_memory_id(memory_id)
        sql = ("SELECT event, old_content, new_content, created_at, memory_created_at FROM ("
               "SELECT seq, event, old_content, new_content, created_at, memory_created_at "
               f"FROM {self.history_table} WHERE memory_id = $1 "
               "UNION ALL SELECT NULL, 'CURRENT', NULL, content, NULL, created_at "
               f"FROM {self.table} WHERE id = $1) e ORDER BY seq NULLS LAST")
        async with self._acquire() as conn:
            rows = await conn.fetch(sql, memory_id)
        if not rows:
            raise MemoryNotFoundError(memory_id)
        return with_add_events(memory_id, rows)

    async def count(self, *, user_id: str | None = None, agent_id: str | None = None,
                    run_id: str | None = None, filters: dict[str, Any] | None = None) -> int:
        """How many memories match (exact count)."""
        where = compile_selection(Where(first=1), check_selection(
            user_id=user_id, agent_id=agent_id, run_id=run_id, filters=filters))
        async with self._acquire() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {self.table} WHERE {where.sql()}",
                                           *where.params))

    async def search(self, vector: np.ndarray | None, *, user_id: str | None = None,
                     agent_id: str | None = None, run_id: str | None = None,
                     filters: dict[str, Any] | None = None, limit: int = 10,
                     exact: bool = False, text: str | None = None,
                     mode: str | None = None) -> list[Memory]:
        """The ``limit`` memories best matching ``vector`` and/or ``text``, best first.

        ``mode`` (default: :attr:`search_mode` when ``text`` is given, else
        ``"dense"``): ``"dense"`` ranks by cosine distance to ``vector`` and
        ``score`` is the cosine similarity; ``"lexical"`` ranks ``text`` by
        full-text search (``score``: ``ts_rank``; ``vector`` may be None);
        ``"hybrid"`` fuses both (``score``: the RRF score). Results never include
        the embedding (use :meth:`get`). ``exact=True`` scans every matching row
        in the dense branch (ground truth).
        """
        mode = check_search_mode(mode if mode is not None else (self.search_mode if text is not None else "dense"))
        if mode != "dense":
            if not isinstance(text, str) or not text.strip():
                raise InvalidMemoryError(f"search mode {mode!r} needs the query text: pass text=")
            if not self.lexical_available:
                mode = "dense"
        limit = check_limit(limit)
        where = compile_selection(Where(first=1 if mode == "lexical" else 3), check_selection(
            user_id=user_id, agent_id=agent_id, run_id=run_id, filters=filters))  # $1 vector, $2 limit
        if mode == "lexical":
            return await self._text_search(self._lexical, None, text, limit, where, exact)
        query = check_vector(vector, self.dim, what="query vector")
        if mode == "hybrid":
            return await self._text_search(self._hybrid, query, text, limit, where, exact)
        return await self._dense(query, limit, where, exact)

    async def cache_namespace(self) -> str:
        """Names this repository's data for caches shared between processes and runs:
        the server (address, port, start time), the database and the table (their
        oids change when they are made anew)."""
        async with self._acquire() as conn:
            row = await conn.fetchrow(
                "SELECT inet_server_addr()::text, inet_server_port(), pg_postmaster_start_time()::text, "
                "current_database()::text, d.oid::bigint, to_regclass($1)::oid::bigint "
                "FROM pg_database d WHERE d.datname = current_database()", self.table)
        return "postgres:" + json.dumps([*row, self.table])

    # ------------------------------------------------------------------ search paths

    async def _text_search(self, run: Any, query: np.ndarray | None, text: str, limit: int,
                           where: Where, exact: bool) -> list[Memory]:
        """Run a lexical or hybrid search; on a table without the lexemes, fall back to dense."""
        import asyncpg

        try:
            async with self._acquire() as conn:
                rows = await run(conn, query, text, limit, where, exact)
        except asyncpg.UndefinedColumnError as exc:
            if TSV_COLUMN not in str(exc):
                raise
            self.lexical_available = False
            _log.warning("table %r has no %s column (made by an older version; await repo.setup() "
                         "adds it): searching by the embedding alone", self.table, TSV_COLUMN)
            if query is None:
                raise InvalidMemoryError(f"lexical search needs the {TSV_COLUMN} column of table "
                                         f"{self.table!r}: run await repo.setup() once") from None
            return await self._dense(query, limit, where, exact)
        return [_memory(r, score=float(r["score"])) for r in rows]

    async def _dense(self, query: np.ndarray, limit: int, where: Where, exact: bool) -> list[Memory]:
        async with self._acquire() as conn:
            if exact:
                rows, _ = await self._exact(conn, query, limit, where, cap=None)
            elif where.empty:
                rows = await self._unfiltered(conn, query, limit)
            else:
                rows = await self._filtered(conn, query, limit, where)
        return [_memory(r, score=1.0 - float(r["distance"])) for r in rows]

    async def _lexical(self, conn: Any, query: None, text: str, limit: int, where: Where,
                       exact: bool) -> list[Any]:
        """Full-text search alone; ``where`` is numbered from $1 ($n text, $n+1 limit)."""
        n = where.first + len(where.params)
        sql = lexical_sql(self.table, _T_COLUMNS,
                          lexical_cte(self.table, where.sql(), f"${n}", f"${n + 1}"), f"${n + 1}")
        self.search_paths["lexical"] += 1
        return list(await conn.fetch(sql, *where.params, text, limit))

    async def _hybrid(self, conn: Any, query: np.ndarray, text: str, limit: int, where: Where,
                      exact: bool) -> list[Any]:
        """Dense and lexical branches fused in one statement, on the dense search's path.

        Parameters: $1 vector, $2 the dense branch's fetch, $3.. the filter, then
        text, depth, limit (and the exact scan's cap).
        """
        depth = max(limit, self.fusion_depth)
        n = where.first + len(where.params)
        text_p, depth_p, limit_p, cap_p = (f"${n + i}" for i in range(4))
        lexical = lexical_cte(self.table, where.sql(), text_p, depth_p)
        args = (text, depth, limit)

        async def exact_scan(cap: int | None) -> tuple[list[Any], int]:
            dense = exact_dense_cte(self.table, where.sql(), "$2", cap_p)
            sql = fused_sql(self.table, _T_COLUMNS, dense, lexical, limit_p, self.rrf_k)
            rows = await conn.fetch(sql, query, depth, *where.params, *args, None if cap is None else cap + 1)
            return list(rows), (int(rows[0]["matched"]) if rows else 0)

        if exact:
            return (await exact_scan(None))[0]
        key = where.key()
        if not where.empty and key not in self._big_filters:
            cap = max(self.exact_threshold, depth)
            rows, matched = await exact_scan(cap)
            if matched <= cap:
                self.search_paths["hybrid_exact"] += 1
                return rows
            self._remember_big(key)
        fetch = min(10_000, math.ceil(depth * self.overfetch)) if not where.empty else depth
        ef = max(self.filtered_ef_search if not where.empty else (self.ef_search or 40), min(fetch, MAX_EF_SEARCH))
        settings = f"SET LOCAL hnsw.ef_search = {int(ef)}"
        if not where.empty:
            settings += (f"; SET LOCAL hnsw.iterative_scan = relaxed_order; "
                         f"SET LOCAL hnsw.max_scan_tuples = {int(self.max_scan_tuples)}")
        dense = index_dense_cte(self.table, where.sql(), "$2", depth_p)
        sql = fused_sql(self.table, _T_COLUMNS, dense, lexical, limit_p, self.rrf_k)
        rows = await self._in_transaction(conn, settings, sql, query, fetch, *where.params, *args)
        if rows and int(rows[0]["dense_n"]) >= depth:
            self.search_paths["hybrid_index"] += 1
            return rows
        # The index gave fewer than ``depth`` rows: a small set, or an index gap.
        self.search_paths["hybrid_fallback"] += 1
        return (await exact_scan(None))[0]

    async def _unfiltered(self, conn: Any, query: np.ndarray, limit: int) -> list[Any]:
        ef = max(self.ef_search or 40, limit)
        if ef > MAX_EF_SEARCH:
            rows, _ = await self._exact(conn, query, limit, Where(first=3), cap=None)
            return rows
        sql = (f"SELECT {_COLUMNS}, embedding <=> $1 AS distance FROM {self.table} "
               "ORDER BY embedding <=> $1 LIMIT $2")
        if self.ef_search is None and limit <= 40:
            rows = await conn.fetch(sql, query, limit)
        else:
            rows = await self._in_transaction(conn, f"SET LOCAL hnsw.ef_search = {int(ef)}", sql,
                                              query, limit)
        if len(rows) < limit:  # fewer rows than asked: a tiny table, or an index gap
            rows, _ = await self._exact(conn, query, limit, Where(first=3), cap=None)
        return rows

    async def _filtered(self, conn: Any, query: np.ndarray, limit: int, where: Where) -> list[Any]:
        cap = max(self.exact_threshold, limit)
        key = where.key()
        if key not in self._big_filters:
            rows, matched = await self._exact(conn, query, limit, where, cap=cap)
            if matched <= cap:
                self.search_paths["exact"] += 1
                return rows
            self._remember_big(key)
        ef = max(self.filtered_ef_search, min(limit, MAX_EF_SEARCH))
        settings = (f"SET LOCAL hnsw.iterative_scan = relaxed_order; "
                    f"SET LOCAL hnsw.ef_search = {int(ef)}; "
                    f"SET LOCAL hnsw.max_scan_tuples = {int(self.max_scan_tuples)}")
        sql = (f"WITH r AS MATERIALIZED (SELECT {_COLUMNS}, embedding <=> $1 AS distance "
               f"FROM {self.table} WHERE {where.sql()} ORDER BY embedding <=> $1 LIMIT $2) "
               "SELECT * FROM r ORDER BY distance + 0")  # + 0: PG 17+ would trust r's order
        fetch = min(10_000, math.ceil(limit * self.overfetch))
        rows = await self._in_transaction(conn, settings, sql, query, fetch, *where.params)
        if len(rows) >= limit:
            rows = rows[:limit]
            self.search_paths["index"] += 1
            return rows
        # The index ran out of tuples to scan before finding ``limit`` matches.
        self.search_paths["index_fallback"] += 1
        rows, _ = await self._exact(conn, query, limit, where, cap=None)
        return rows

    async def _exact(self, conn: Any, query: np.ndarray, limit: int, where: Where,
                     cap: int | None) -> tuple[list[Any], int]:
        """Exact top-``limit`` over the filtered rows, scanning at most ``cap`` + 1 of them.

        Returns the rows and how many matched (``cap + 1`` means "more than cap":
        the rows are then not the answer). The LIMIT inside the subquery also
        keeps the planner from ordering through the HNSW index.
        """
        n = where.first + len(where.params)
        sql = (f"SELECT {_COLUMNS}, s.embedding <=> $1 AS distance, count(*) OVER () AS matched "
               f"FROM (SELECT * FROM {self.table} WHERE {where.sql()} LIMIT ${n}) s "
               "ORDER BY distance LIMIT $2")
        rows = await conn.fetch(sql, query, limit, *where.params, None if cap is None else cap + 1)
        return rows, (int(rows[0]["matched"]) if rows else 0)

    async def _in_transaction(self, conn: Any, settings: str, sql: str, *args: Any) -> list[Any]:
        """Run ``sql`` in a read-only transaction after ``SET LOCAL`` ``settings``.

        BEGIN and the settings go in one round trip (simple query protocol); the
        values in ``settings`` are ints formatted by this class, never user input.
        """
        await conn.execute(f"BEGIN READ ONLY; {settings}")
        try:
            rows = await conn.fetch(sql, *args)
        except BaseException:
            with contextlib.suppress(Exception):  # else the pool's reset rolls back
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return list(rows)

    def _remember_big(self, key: tuple[Any, ...]) -> None:
        self._big_filters[key] = None
        if len(self._big_filters) > _BIG_FILTER_MEMORY:
            self._big_filters.popitem(last=False)

    # ------------------------------------------------------------------ helpers

    def _acquire(self) -> Any:
        return self.pool.acquire(timeout=self.acquire_timeout)

    def _record(self, memory: Memory) -> tuple[Any, ...]:
        vector = check_memory(memory, self.dim)
        return (memory.id, memory.content, memory.user_id, memory.agent_id, memory.run_id,
                _dumps(memory.metadata or {}), vector, memory.created_at)


_COLUMNS = "id, content, user_id, agent_id, run_id, metadata, created_at, updated_at"
_T_COLUMNS = ", ".join(f"t.{c}" for c in _COLUMNS.split(", "))
#: The columns ``add_batch`` copies, in the order of :func:`.pg_batch.iter_records`.
COPY_COLUMNS = ("id", "content", "user_id", "agent_id", "run_id", "metadata", "embedding", "created_at")


def check_search_mode(mode: Any) -> str:
    """A search mode: one of :data:`~.pg_hybrid.SEARCH_MODES`."""
    if mode not in SEARCH_MODES:
        raise InvalidMemoryError(f"search mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}")
    return str(mode)


def with_add_events(memory_id: str, rows: Sequence[Any]) -> list[HistoryEvent]:
    """The full history from the stored events (in seq order) and, last, the memory's
    row as a ``CURRENT`` pseudo-event (``new_content`` its content,
    ``memory_created_at`` its created_at) if it exists.

    Each DELETE (and the CURRENT row) closes one life of the id; a life's ADD is
    put before its events, with the life's original content: the ``old_content``
    of its first event (an UPDATE, else the DELETE), else the current content.
    A life that starts with an explicit ADD row (a table from before ADD became
    implicit) is returned as stored.
    """
    events: list[HistoryEvent] = []
    life: list[Any] = []

    def close(created_at: Any, current_content: str | None) -> None:
        if created_at is not None and not (life and life[0]["event"] == "ADD"):
            original = life[0]["old_content"] if life else current_content
            events.append(HistoryEvent(memory_id, "ADD", None, original, created_at))
        events.extend(HistoryEvent(memory_id, r["event"], r["old_content"], r["new_content"],
                                   r["created_at"]) for r in life)
        life.clear()

    for row in rows:
        if row["event"] == "CURRENT":
            close(row["memory_created_at"], row["new_content"])
            continue
        life.append(row)
        if row["event"] == "DELETE":
            close(row["memory_created_at"], None)
    close(None, None)  # events of no row and no DELETE: none in one snapshot; kept as stored
    return events


_dumps = dumps


def _memory(row: Any, score: float | None = None) -> Memory:
    embedding = row.get("embedding") if hasattr(row, "get") else None
    if embedding is not None and not isinstance(embedding, np.ndarray):
        embedding = embedding.to_numpy()
    return Memory(content=row["content"], user_id=row["user_id"], agent_id=row["agent_id"],
                  run_id=row["run_id"], metadata=json.loads(row["metadata"]), embedding=embedding,
                  id=row["id"], created_at=row["created_at"], updated_at=row["updated_at"],
                  score=score)
