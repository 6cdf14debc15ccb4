"""Creating and migrating the memories tables and their indexes (a mixin of the repository)."""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import AgentmemError
from .pg_hybrid import TSV_COLUMN, tsv_column_sql

#: Rows shorter than this many bytes are stored whole in the table, never in its TOAST
#: table (Postgres' default moves columns out of line above about 2 kB). A memory's
#: 384-dim vector alone is 1,544 bytes, so with its text and lexemes a typical row is
#: just over 2 kB, and pgvector's vector (EXTERNAL storage) went out of line first:
#: every row an exact scan read cost a TOAST index lookup. Measured on 3 LoCoMo
#: conversations (hybrid search of one, 419 rows): 816 -> 278 blocks a statement, and
#: Postgres CPU per search -17 % hybrid, -30 % dense (docs/model.md). 8160 is Postgres'
#: maximum; longer rows (long texts) are still compressed and moved out of line.
TOAST_TUPLE_TARGET = 8160

#: Storage options of the two GIN indexes (metadata filters, full-text lexemes). With
#: Postgres' default ``fastupdate = on``, new rows' entries wait in a pending list that
#: every search scans in full until autovacuum (or a 4 MB overflow) merges it, so a
#: search's cost depended on when autovacuum last ran: measured on LoCoMo's 5,882 turns
#: (one Postgres, 3 interleaved rounds, medians, database time per statement), pending
#: list of 5,882 entries against none: lexical 7.1 against 1.2 ms, hybrid 7.8 against
#: 2.0 ms, the 1 % metadata filter 0.26 against 0.10 ms (the catalogue's pgvector
#: ``search_filter_1pct`` failed unchanged code at +37 % this way). Off, each write
#: updates the index at once (add_batch about 4 % slower there): Postgres' advice where
#: "consistent response time is more important than update speed".
GIN_OPTIONS = "fastupdate = off"


class SchemaMixin:
    """``setup`` and ``create_vector_index`` of :class:`~.postgres.PostgresMemoryRepository`."""

    table: str
    history_table: str
    dim: int
    hnsw_m: int
    hnsw_ef_construction: int
    lexical_available: bool

    def _acquire(self) -> Any:
        raise NotImplementedError

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
                {tsv_column_sql()}) WITH (toast_tuple_target = {TOAST_TUPLE_TARGET})""",
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
            f"CREATE INDEX IF NOT EXISTS {t}_metadata_idx ON {t} USING gin (metadata jsonb_path_ops) "
            f"WITH ({GIN_OPTIONS})",
            # A table made before hybrid search: add the lexemes (rewrites the table once).
            f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {tsv_column_sql()}",
            f"CREATE INDEX IF NOT EXISTS {t}_{TSV_COLUMN}_idx ON {t} USING gin ({TSV_COLUMN}) WITH ({GIN_OPTIONS})",
            # A table made before: rows written from now on stay inline (existing rows keep their storage).
            f"ALTER TABLE {t} SET (toast_tuple_target = {TOAST_TUPLE_TARGET})",
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
                await self._without_pending_lists(conn)
                declared = await conn.fetchval(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = $1::regclass AND attname = 'embedding'", t)
        if declared != f"vector({self.dim})":
            raise AgentmemError(f"table {t!r} exists with embedding {declared}, but this repository "
                                f"has dim={self.dim}: use another table or drop it")
        self.lexical_available = True
        if vector_index:
            await self.create_vector_index()

    async def _without_pending_lists(self, conn: Any) -> None:
        """Turn a GIN index made before :data:`GIN_OPTIONS` to them, and merge its pending list."""
        t = self.table
        for index in (f"{t}_metadata_idx", f"{t}_{TSV_COLUMN}_idx"):
            options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass", index)
            if "fastupdate=off" not in (options or []):
                await conn.execute(f"ALTER INDEX {index} SET ({GIN_OPTIONS})")
                await conn.execute("SELECT gin_clean_pending_list($1::regclass)", index)

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
