"""The search paths of the Postgres memory repository (a mixin of it).

Dense search without a filter goes to the HNSW index (:meth:`SearchMixin._unfiltered`).
A filtered dense search and a hybrid search share one strategy,
:meth:`SearchMixin._exact_then_index`: an exact scan of the filtered rows while
they are few (capped: the scan tells how many matched), else the HNSW index with
an iterative scan, and the exact scan of the whole filtered set when the index
returned too few rows. Filters whose set proved large are remembered (bounded),
so later searches go straight to the index: that can only cost speed, never
correctness. See :mod:`.postgres` for why.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from .model import InvalidMemoryError, Memory
from .pg_filters import Where, compile_selection
from .pg_hybrid import (
    SEARCH_MODES,
    TSV_COLUMN,
    exact_dense_cte,
    fused_sql,
    index_dense_cte,
    lexical_cte,
    lexical_sql,
)
from .pg_rows import COLUMNS, T_COLUMNS, memory_from_row
from .validation import check_limit, check_selection, check_vector

#: Set first in every transaction that asks the HNSW index (:meth:`SearchMixin._through_index`):
#: the strategy chose the index, and the planner must not take that back. pgvector costs an
#: HNSW scan by ``ef_search``, so at ``ef_search`` 100 the planner took a sequential scan and
#: sort for a few thousand rows: measured on 3,000 rows (384 dims), 768 blocks and 3.6 ms a
#: query against 663 blocks and 0.26-0.6 ms through the index; the catalogue's "HNSW"
#: searches at scale 0.5 were exact scans.
INDEX_SCAN = "SET LOCAL enable_seqscan = off"

#: pgvector's upper bound for ``hnsw.ef_search``.
MAX_EF_SEARCH = 1000
#: Filters remembered as large (their searches skip the exact scan).
BIG_FILTER_MEMORY = 4096
#: The repository's logger (its warnings are the repository's).
_log = logging.getLogger("pytest_agentmem.memory.postgres")

#: A scan: the rows, and how many rows matched the filter (capped at cap + 1).
ExactScan = Callable[[int | None], Awaitable[tuple[list[Any], int]]]


def check_search_mode(mode: Any) -> str:
    """A search mode: one of :data:`~.pg_hybrid.SEARCH_MODES`."""
    if mode not in SEARCH_MODES:
        raise InvalidMemoryError(f"search mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}")
    return str(mode)


class SearchMixin:
    """``search`` of :class:`~.postgres.PostgresMemoryRepository` and its paths."""

    table: str
    dim: int
    ef_search: int | None
    filtered_ef_search: int
    exact_threshold: int
    max_scan_tuples: int
    overfetch: float
    search_mode: str
    fusion_depth: int
    rrf_k: int
    lexical_available: bool
    search_paths: dict[str, int]
    _big_filters: OrderedDict[tuple[Any, ...], None]

    def _acquire(self) -> Any:
        raise NotImplementedError

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

    # ------------------------------------------------------------------ the shared strategy

    async def _exact_then_index(self, where: Where, cap: int, exact_scan: ExactScan,
                                index_scan: Callable[[], Awaitable[list[Any]]], enough: Callable[[list[Any]], bool],
                                paths: tuple[str, str, str]) -> list[Any]:
        """Exact scan of a small filtered set, else the index, else (too few rows) the exact scan.

        ``exact_scan(cap)`` scans at most ``cap`` + 1 filtered rows (None: all) and
        says how many matched; ``index_scan()`` asks the HNSW index; ``enough``
        judges its rows. ``paths`` names the counters of :attr:`search_paths`
        bumped for the exact, index and fallback outcomes. An empty filter goes to
        the index at once.
        """
        key = where.key()
        if not where.empty and key not in self._big_filters:
            rows, matched = await exact_scan(cap)
            if matched <= cap:
                self.search_paths[paths[0]] += 1
                return rows
            self._remember_big(key)
        rows = await index_scan()
        if enough(rows):
            self.search_paths[paths[1]] += 1
            return rows
        # The index gave too few rows: a small set, or it ran out of tuples to scan.
        self.search_paths[paths[2]] += 1
        return (await exact_scan(None))[0]

    def _remember_big(self, key: tuple[Any, ...]) -> None:
        self._big_filters[key] = None
        if len(self._big_filters) > BIG_FILTER_MEMORY:
            self._big_filters.popitem(last=False)

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
        return [memory_from_row(r, score=float(r["score"])) for r in rows]

    async def _dense(self, query: np.ndarray, limit: int, where: Where, exact: bool) -> list[Memory]:
        async with self._acquire() as conn:
            if exact:
                rows, _ = await self._exact(conn, query, limit, where, cap=None)
            elif where.empty:
                rows = await self._unfiltered(conn, query, limit)
            else:
                rows = await self._filtered(conn, query, limit, where)
        return [memory_from_row(r, score=1.0 - float(r["distance"])) for r in rows]

    async def _lexical(self, conn: Any, query: None, text: str, limit: int, where: Where,
                       exact: bool) -> list[Any]:
        """Full-text search alone; ``where`` is numbered from $1 ($n text, $n+1 limit)."""
        n = where.first + len(where.params)
        sql = lexical_sql(self.table, T_COLUMNS,
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
            sql = fused_sql(self.table, T_COLUMNS, dense, lexical, limit_p, self.rrf_k)
            rows = await conn.fetch(sql, query, depth, *where.params, *args, None if cap is None else cap + 1)
            return list(rows), (int(rows[0]["matched"]) if rows else 0)

        async def index_scan() -> list[Any]:
            fetch = min(10_000, math.ceil(depth * self.overfetch)) if not where.empty else depth
            ef = max(self.filtered_ef_search if not where.empty else (self.ef_search or 40),
                     min(fetch, MAX_EF_SEARCH))
            settings = f"SET LOCAL hnsw.ef_search = {int(ef)}"
            if not where.empty:
                settings += (f"; SET LOCAL hnsw.iterative_scan = relaxed_order; "
                             f"SET LOCAL hnsw.max_scan_tuples = {int(self.max_scan_tuples)}")
            dense = index_dense_cte(self.table, where.sql(), "$2", depth_p)
            sql = fused_sql(self.table, T_COLUMNS, dense, lexical, limit_p, self.rrf_k)
            return await self._through_index(conn, settings, sql, query, fetch, *where.params, *args)

        if exact:
            return (await exact_scan(None))[0]
        return await self._exact_then_index(
            where, max(self.exact_threshold, depth), exact_scan, index_scan,
            lambda rows: bool(rows) and int(rows[0]["dense_n"]) >= depth,
            ("hybrid_exact", "hybrid_index", "hybrid_fallback"))

    async def _unfiltered(self, conn: Any, query: np.ndarray, limit: int) -> list[Any]:
        ef = max(self.ef_search or 40, limit)
        if ef > MAX_EF_SEARCH:
            rows, _ = await self._exact(conn, query, limit, Where(first=3), cap=None)
            return rows
        sql = (f"SELECT {COLUMNS}, embedding <=> $1 AS distance FROM {self.table} "
               "ORDER BY embedding <=> $1 LIMIT $2")
        if self.ef_search is None and limit <= 40:
            rows = await conn.fetch(sql, query, limit)
        else:
            rows = await self._through_index(conn, f"SET LOCAL hnsw.ef_search = {int(ef)}", sql, query, limit)
        if len(rows) < limit:  # fewer rows than asked: a tiny table, or an index gap
            rows, _ = await self._exact(conn, query, limit, Where(first=3), cap=None)
        return rows

    async def _filtered(self, conn: Any, query: np.ndarray, limit: int, where: Where) -> list[Any]:
        async def exact_scan(cap: int | None) -> tuple[list[Any], int]:
            return await self._exact(conn, query, limit, where, cap=cap)

        async def index_scan() -> list[Any]:
            ef = max(self.filtered_ef_search, min(limit, MAX_EF_SEARCH))
            settings = (f"SET LOCAL hnsw.iterative_scan = relaxed_order; "
                        f"SET LOCAL hnsw.ef_search = {int(ef)}; "
                        f"SET LOCAL hnsw.max_scan_tuples = {int(self.max_scan_tuples)}")
            sql = (f"WITH r AS MATERIALIZED (SELECT {COLUMNS}, embedding <=> $1 AS distance "
                   f"FROM {self.table} WHERE {where.sql()} ORDER BY embedding <=> $1 LIMIT $2) "
                   "SELECT * FROM r ORDER BY distance + 0")  # + 0: PG 17+ would trust r's order
            fetch = min(10_000, math.ceil(limit * self.overfetch))
            return (await self._through_index(conn, settings, sql, query, fetch, *where.params))[:limit]

        return await self._exact_then_index(where, max(self.exact_threshold, limit), exact_scan, index_scan,
                                            lambda rows: len(rows) >= limit, ("exact", "index", "index_fallback"))

    async def _exact(self, conn: Any, query: np.ndarray, limit: int, where: Where,
                     cap: int | None) -> tuple[list[Any], int]:
        """Exact top-``limit`` over the filtered rows, scanning at most ``cap`` + 1 of them.

        Returns the rows and how many matched (``cap + 1`` means "more than cap":
        the rows are then not the answer). The LIMIT inside the subquery also
        keeps the planner from ordering through the HNSW index.
        """
        n = where.first + len(where.params)
        sql = (f"SELECT {COLUMNS}, s.embedding <=> $1 AS distance, count(*) OVER () AS matched "
               f"FROM (SELECT * FROM {self.table} WHERE {where.sql()} LIMIT ${n}) s "
               "ORDER BY distance LIMIT $2")
        rows = await conn.fetch(sql, query, limit, *where.params, None if cap is None else cap + 1)
        return rows, (int(rows[0]["matched"]) if rows else 0)

    async def _through_index(self, conn: Any, settings: str, sql: str, *args: Any) -> list[Any]:
        """Run ``sql``, a search that must take the HNSW index, in a read-only transaction after
        :data:`INDEX_SCAN` and ``SET LOCAL`` ``settings``.

        BEGIN and the settings go in one round trip (simple query protocol); the
        values in ``settings`` are ints formatted by this class, never user input.
        """
        await conn.execute(f"BEGIN READ ONLY; {INDEX_SCAN}; {settings}")
        try:
            rows = await conn.fetch(sql, *args)
        except BaseException:
            with contextlib.suppress(Exception):  # else the pool's reset rolls back
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return list(rows)
