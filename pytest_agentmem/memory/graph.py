"""Graph memory: entities and relations per user, persisted in Postgres.

Relations are (subject, predicate, object) triples scoped by ``user_id``. Postgres
is the source of truth; queries are served from an in-memory adjacency index
(:class:`~pytest_agentmem.memory.graph_index.AdjacencyIndex`: CSR arrays plus a
delta overlay) per user, loaded on the first query and kept in step with every
write made through this store; a write that raises or is cancelled (perhaps
after Postgres committed it) drops the user's index, which the next query
reloads. Writes made by other processes are seen after
:meth:`GraphStore.refresh`. The plain SQL path (a recursive CTE) is kept as
:meth:`GraphStore.neighbors_sql` for comparison.

Traversal follows edges in both directions by default (``direction="out"`` or
``"in"`` to restrict); ``predicate`` restricts every hop to that predicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple

from .graph_index import DIRECTIONS, AdjacencyIndex
from .model import InvalidMemoryError
from .validation import check_scope, check_table_name

MAX_HOPS = 3
MAX_NAME_CHARS = 1000


class Relation(NamedTuple):
    subject: str
    predicate: str
    object: str


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS \
            or "\x00" in value:
        raise InvalidMemoryError(f"{what} must be a non-empty str of at most {MAX_NAME_CHARS} "
                                 f"characters without NUL, got {value!r:.80}")
    return value


def _check_user(user_id: Any) -> str:
    if user_id is None:
        raise InvalidMemoryError("user_id is required: graphs are kept per user")
    return check_scope(user_id, "user_id")  # type: ignore[return-value]


def _check_hops(hops: Any, what: str = "hops") -> int:
    if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= MAX_HOPS:
        raise InvalidMemoryError(f"{what} must be an int in 1..{MAX_HOPS}, got {hops!r}")
    return hops


def _check_direction(direction: Any) -> str:
    if direction not in DIRECTIONS:
        raise InvalidMemoryError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return str(direction)


def _check_relation(item: Any) -> Relation:
    if isinstance(item, (tuple, list)) and len(item) == 3:
        s, p, o = item
        return Relation(_check_name(s, "subject"), _check_name(p, "predicate"), _check_name(o, "object"))
    raise InvalidMemoryError(f"a relation is a (subject, predicate, object) triple, got {item!r:.80}")


class GraphStore:
    """Entities and relations per user with 1..3-hop queries from an in-memory index.

    ``max_users`` bounds how many users' indexes are kept (least recently used
    are dropped and reloaded on demand). An index's delta overlay is compacted
    into fresh CSR arrays once it exceeds ``compact_ratio`` of the edges (and
    ``compact_min``).
    """

    def __init__(self, pool: Any, *, table_prefix: str = "graph", max_users: int = 1024,
                 compact_ratio: float = 0.1, compact_min: int = 1024,
                 acquire_timeout: float | None = 5.0) -> None:
        check_table_name(table_prefix, "table_prefix")
        self.pool = pool
        self.entities_table = f"{table_prefix}_entities"
        self.relations_table = f"{table_prefix}_relations"
        self.max_users = max_users
        self.compact_ratio = compact_ratio
        self.compact_min = compact_min
        self.acquire_timeout = acquire_timeout
        self._indexes: OrderedDict[str, AdjacencyIndex] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.loads = 0

    async def setup(self) -> None:
        e, r = self.entities_table, self.relations_table
        async with self._acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", r)
                await conn.execute(f"""CREATE TABLE IF NOT EXISTS {e} (
                    user_id text NOT NULL, name text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (user_id, name))""")
                await conn.execute(f"""CREATE TABLE IF NOT EXISTS {r} (
                    user_id text NOT NULL, subject text NOT NULL, predicate text NOT NULL,
                    object text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (user_id, subject, predicate, object))""")
                await conn.execute(f"CREATE INDEX IF NOT EXISTS {r}_object_idx "
                                   f"ON {r} (user_id, object, predicate)")

    # ------------------------------------------------------------------ writes

    async def add_relation(self, subject: str, predicate: str, obj: str, *, user_id: str) -> bool:
        """Store one relation (and its entities); False if it was already there."""
        return await self.add_relations([(subject, predicate, obj)], user_id=user_id) == 1

    async def add_relations(self, relations: Iterable[tuple[str, str, str]], *, user_id: str) -> int:
        """Store many relations in one statement, all or nothing; returns how many were new."""
        user = _check_user(user_id)
        batch = list(dict.fromkeys(_check_relation(item) for item in relations))
        if not batch:
            return 0
        e, r = self.entities_table, self.relations_table
        sql = (f"WITH input AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]) "
               "AS t(subject, predicate, object)), "
               f"ents AS (INSERT INTO {e} (user_id, name) SELECT $1, name FROM "
               "(SELECT subject AS name FROM input UNION SELECT object FROM input) names "
               "ON CONFLICT DO NOTHING) "
               f"INSERT INTO {r} (user_id, subject, predicate, object) "
               "SELECT $1, subject, predicate, object FROM input ON CONFLICT DO NOTHING "
               "RETURNING subject, predicate, object")
        subjects, predicates, objects = (list(col) for col in zip(*batch))
        async with self._writing(user):
            async with self._acquire() as conn:
                rows = await conn.fetch(sql, user, subjects, predicates, objects)
            index = self._indexes.get(user)
            if index is not None:
                for row in rows:
                    index.add(row[0], row[1], row[2])
        return len(rows)

    async def delete_relation(self, subject: str, predicate: str, obj: str, *, user_id: str) -> bool:
        """Remove one relation (its entities stay); False if it was not there."""
        user = _check_user(user_id)
        rel = _check_relation((subject, predicate, obj))
        async with self._writing(user):
            async with self._acquire() as conn:
                gone = await conn.fetchval(
                    f"DELETE FROM {self.relations_table} WHERE user_id = $1 AND subject = $2 "
                    "AND predicate = $3 AND object = $4 RETURNING 1", user, *rel)
            index = self._indexes.get(user)
            if gone and index is not None:
                index.remove(*rel)
        return bool(gone)

    async def delete_entity(self, name: str, *, user_id: str) -> int:
        """Remove an entity and every relation touching it; returns relations removed."""
        user = _check_user(user_id)
        name = _check_name(name, "entity")
        async with self._writing(user):
            async with self._acquire() as conn:
                async with conn.transaction():
                    rows = await conn.fetch(
                        f"DELETE FROM {self.relations_table} WHERE user_id = $1 "
                        "AND (subject = $2 OR object = $2) RETURNING subject, predicate, object",
                        user, name)
                    await conn.execute(f"DELETE FROM {self.entities_table} WHERE user_id = $1 "
                                       "AND name = $2", user, name)
            index = self._indexes.get(user)
            if index is not None:
                for row in rows:
                    index.remove(row[0], row[1], row[2])
        return len(rows)

    async def delete_all(self, *, user_id: str) -> int:
        """Remove a user's whole graph; returns relations removed."""
        user = _check_user(user_id)
        async with self._writing(user):
            async with self._acquire() as conn:
                async with conn.transaction():
                    count = await conn.fetchval(
                        f"WITH d AS (DELETE FROM {self.relations_table} WHERE user_id = $1 "
                        "RETURNING 1) SELECT count(*) FROM d", user)
                    await conn.execute(f"DELETE FROM {self.entities_table} WHERE user_id = $1", user)
            self._indexes.pop(user, None)
        return int(count)

    # ------------------------------------------------------------------ queries

    async def neighbors(self, entity: str, *, user_id: str, hops: int = 1,
                        predicate: str | None = None, direction: str = "both") -> set[str]:
        """Entities within 1..``hops`` steps of ``entity`` (itself excluded)."""
        _check_name(entity, "entity")
        hops = _check_hops(hops)
        direction = _check_direction(direction)
        if predicate is not None:
            _check_name(predicate, "predicate")
        index = await self.index(user_id)
        return index.neighbors(entity, hops, predicate=predicate, direction=direction)

    async def paths(self, src: str, dst: str, *, user_id: str, max_hops: int = 3,
                    predicate: str | None = None, direction: str = "both") -> list[list[Relation]]:
        """Every simple path of at most ``max_hops`` relations from ``src`` to ``dst``,
        shortest first; each path is the list of stored relations it follows."""
        _check_name(src, "src")
        _check_name(dst, "dst")
        max_hops = _check_hops(max_hops, "max_hops")
        direction = _check_direction(direction)
        if predicate is not None:
            _check_name(predicate, "predicate")
        index = await self.index(user_id)
        return [[Relation(*step) for step in path]
                for path in index.paths(src, dst, max_hops, predicate=predicate, direction=direction)]

    async def neighbors_sql(self, entity: str, *, user_id: str, hops: int = 1,
                            predicate: str | None = None, direction: str = "both") -> set[str]:
        """:meth:`neighbors` computed by Postgres with a recursive CTE (no index in memory)."""
        user = _check_user(user_id)
        _check_name(entity, "entity")
        hops = _check_hops(hops)
        direction = _check_direction(direction)
        args: list[Any] = [user, entity, hops]
        pred = ""
        if predicate is not None:
            args.append(_check_name(predicate, "predicate"))
            pred = " AND r.predicate = $4"
        arms = []
        if direction != "in":
            arms.append(f"SELECT r.object AS node FROM {self.relations_table} r "
                        f"WHERE r.user_id = $1 AND r.subject = w.node{pred}")
        if direction != "out":
            arms.append(f"SELECT r.subject AS node FROM {self.relations_table} r "
                        f"WHERE r.user_id = $1 AND r.object = w.node{pred}")
        sql = ("WITH RECURSIVE walk(node, depth) AS (SELECT $2::text, 0 UNION "
               "SELECT n.node, w.depth + 1 FROM walk w CROSS JOIN LATERAL ("
               + " UNION ALL ".join(arms) + ") n WHERE w.depth < $3) "
               "SELECT DISTINCT node FROM walk WHERE node <> $2")
        async with self._acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return {row[0] for row in rows}

    async def relations(self, *, user_id: str) -> list[Relation]:
        """All of a user's relations (from Postgres), sorted."""
        user = _check_user(user_id)
        async with self._acquire() as conn:
            rows = await conn.fetch(f"SELECT subject, predicate, object FROM {self.relations_table} "
                                    "WHERE user_id = $1 ORDER BY 1, 2, 3", user)
        return [Relation(*row) for row in rows]

    async def entities(self, *, user_id: str) -> list[str]:
        user = _check_user(user_id)
        async with self._acquire() as conn:
            rows = await conn.fetch(f"SELECT name FROM {self.entities_table} WHERE user_id = $1 "
                                    "ORDER BY name", user)
        return [row[0] for row in rows]

    # ------------------------------------------------------------------ the index

    async def index(self, user_id: str) -> AdjacencyIndex:
        """The user's in-memory index, loaded from Postgres on first use."""
        user = _check_user(user_id)
        index = self._indexes.get(user)
        if index is not None:
            self._indexes.move_to_end(user)
            return index
        async with self._lock(user):
            index = self._indexes.get(user)
            if index is None:
                index = await self._load(user)
            return index

    async def refresh(self, user_id: str | None = None) -> None:
        """Forget loaded indexes (one user's, or all) so the next query reloads them."""
        if user_id is None:
            self._indexes.clear()
        else:
            self._indexes.pop(_check_user(user_id), None)

    async def _load(self, user: str) -> AdjacencyIndex:
        async with self._acquire() as conn:
            rows = await conn.fetch(f"SELECT subject, predicate, object FROM {self.relations_table} "
                                    "WHERE user_id = $1", user)
        index = AdjacencyIndex(((row[0], row[1], row[2]) for row in rows),
                               compact_ratio=self.compact_ratio, compact_min=self.compact_min)
        self._indexes[user] = index
        self.loads += 1
        while len(self._indexes) > self.max_users:
            self._indexes.popitem(last=False)
        return index

    @contextlib.asynccontextmanager
    async def _writing(self, user: str) -> AsyncIterator[None]:
        """Serialise a write of ``user``'s graph; on any exception or cancellation
        drop the user's index, as the write may have committed without it."""
        async with self._lock(user):
            try:
                yield
            except BaseException:
                self._indexes.pop(user, None)
                raise

    def _lock(self, user: str) -> asyncio.Lock:
        """Writes and loads of one user are serialised, so the index follows commit order."""
        lock = self._locks.get(user)
        if lock is None:
            lock = self._locks[user] = asyncio.Lock()
        return lock

    def _acquire(self) -> Any:
        return self.pool.acquire(timeout=self.acquire_timeout)


__all__ = ["GraphStore", "Relation", "MAX_HOPS"]
