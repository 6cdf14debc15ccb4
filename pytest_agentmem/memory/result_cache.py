"""Caches of search results, invalidated by writes through per-scope generation counters.

:class:`ResultCache` keeps them in process, :class:`RedisResultCache` in Redis
(shared by processes); both follow the :class:`SearchResultCache` protocol the
:class:`~pytest_agentmem.memory.service.MemoryService` uses.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from .cache_guard import CACHE_ERRORS, REDIS_CACHE_TIMEOUT_S, bounded, describe
from .model import Memory

GLOBAL_SCOPE = "*"


def scopes_of(*, user_id: str | None = None, agent_id: str | None = None,
              run_id: str | None = None) -> tuple[str, ...]:
    """The generation counters a search with these scopes depends on.

    A search that names no scope sees every memory, so it depends on the global
    counter, which every write bumps.
    """
    named = tuple(f"{kind}:{value}" for kind, value in
                  (("user", user_id), ("agent", agent_id), ("run", run_id)) if value is not None)
    return named or (GLOBAL_SCOPE,)


def write_scopes(memories: Iterable[Memory]) -> set[str]:
    """The counters a write of these memories bumps: the global one and each memory's scopes."""
    scopes = {GLOBAL_SCOPE}
    for memory in memories:
        for kind, value in (("user", memory.user_id), ("agent", memory.agent_id), ("run", memory.run_id)):
            if value is not None:
                scopes.add(f"{kind}:{value}")
    return scopes


#: The scope kinds, in the order of the scope arguments (user_id, agent_id, run_id).
_KINDS = ("user", "agent", "run")
#: Every non-empty set of scope kinds a ``delete_all`` may name.
_KIND_SETS = tuple(tuple(k for i, k in enumerate(_KINDS) if mask >> i & 1) for mask in range(1, 8))


def _delete_all_key(kinds: tuple[str, ...], values: list[str | None]) -> str:
    return "all:" + "+".join(kinds) + ":" + json.dumps(values, separators=(",", ":"))


@functools.lru_cache(maxsize=8192)
def _search_scopes(user_id: str | None, agent_id: str | None, run_id: str | None) -> tuple[str, ...]:
    named = {"user": user_id, "agent": agent_id, "run": run_id}
    return scopes_of(user_id=user_id, agent_id=agent_id, run_id=run_id) + tuple(
        _delete_all_key(kinds, [named[k] for k in kinds]) for kinds in _KIND_SETS)


def search_scopes(*, user_id: str | None = None, agent_id: str | None = None,
                  run_id: str | None = None) -> tuple[str, ...]:
    """Every counter a search with these scopes depends on: :func:`scopes_of`'s, bumped
    by writes of memories, and one per set of kinds a ``delete_all`` may name.

    A ``delete_all`` naming kinds ``U`` with values ``d`` removes memories a search
    ``s`` may return exactly when ``s`` and ``d`` agree on the kinds both name. The
    search's counter for ``U`` holds its own values on ``U`` (``None`` where it names
    none); :func:`delete_all_scopes` bumps that counter for every way of agreeing.
    """
    return _search_scopes(user_id, agent_id, run_id)


def delete_all_scopes(*, user_id: str | None = None, agent_id: str | None = None,
                      run_id: str | None = None) -> set[str]:
    """The counters ``delete_all`` with these scopes bumps: each search it can affect
    (see :func:`search_scopes`) depends on one of them, and no other search does."""
    given = {"user": user_id, "agent": agent_id, "run": run_id}
    kinds = tuple(k for k in _KINDS if given[k] is not None)
    scopes = {GLOBAL_SCOPE} | {f"{k}:{given[k]}" for k in kinds}
    for mask in range(1 << len(kinds)):  # each subset of the named kinds a search may also name
        scopes.add(_delete_all_key(kinds, [given[k] if mask >> i & 1 else None for i, k in enumerate(kinds)]))
    return scopes


def result_key(model: str, query: str, *, user_id: str | None, agent_id: str | None,
               run_id: str | None, filters: dict[str, Any] | None, limit: int,
               namespace: str = "") -> str:
    """A stable key of one search (store namespace, model, query text, scopes, filters, limit)."""
    spec = json.dumps([model, query, user_id, agent_id, run_id, filters or {}, limit, namespace],
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(spec.encode("utf-8"), digest_size=20).hexdigest()


class SearchResultCache(Protocol):
    """What :class:`~pytest_agentmem.memory.service.MemoryService` needs of a result cache.

    ``lookup`` returns the cached results (or ``None``) and a token: the
    generations read *before* the search runs. ``store`` files results under
    that token, so results of a search that raced with a write are filed under
    generations the write has already retired and are never served. A token of
    ``None`` means "the cache cannot tell": ``store`` then files nothing.
    """

    async def lookup(self, key: str, scopes: tuple[str, ...]) -> tuple[list[Memory] | None, Any]: ...

    async def store(self, key: str, scopes: tuple[str, ...], token: Any, results: list[Memory]) -> None: ...

    async def invalidate(self, scopes: Iterable[str]) -> None: ...


#: A cached memory: :class:`Memory`'s fields, the metadata as JSON text (see :func:`_freeze`).
_Frozen = tuple[str, str | None, str | None, str | None, str, Any, str, datetime, datetime | None, float | None]


def _freeze(memories: list[Memory]) -> tuple[_Frozen, ...]:
    """Results as the cache keeps them: immutable tuples of strings, numbers and datetimes.

    A caller can change nothing a later hit returns, and Python's garbage collector
    stops tracking such tuples, so a full cache (10,000 searches of 10 memories) adds
    no work to its collections: kept as :class:`Memory` objects with their metadata
    dicts, the same cache made every full collection about 100 ms longer on a 2-core
    machine, a pause every request in flight waits for.
    """
    return tuple((m.content, m.user_id, m.agent_id, m.run_id, json.dumps(m.metadata), m.embedding, m.id,
                  m.created_at, m.updated_at, m.score) for m in memories)


def _thaw(frozen: tuple[_Frozen, ...]) -> list[Memory]:
    """New :class:`Memory` objects (with their own metadata) of cached results."""
    return [Memory(content=content, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=json.loads(meta),
                   embedding=embedding, id=memory_id, created_at=created_at, updated_at=updated_at, score=score)
            for content, user_id, agent_id, run_id, meta, embedding, memory_id, created_at, updated_at, score
            in frozen]


class ResultCache:
    """In-process search-result cache with a TTL, invalidated by writes.

    Every write bumps the generation counter of the global scope and of each
    scope (``user:..``, ``agent:..``, ``run:..``) of the memories it touches; an
    entry remembers the generations of its search's scopes as they were before
    the search ran and is served only while they are unchanged. Writers bump
    after the write is committed, so a search that read the new generations
    runs after the commit and sees the new content.
    """

    def __init__(self, *, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._generations: dict[str, int] = {}
        self._entries: OrderedDict[str, tuple[float, tuple[int, ...], tuple[_Frozen, ...]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _token(self, scopes: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self._generations.get(s, 0) for s in scopes)

    async def lookup(self, key: str, scopes: tuple[str, ...]) -> tuple[list[Memory] | None, Any]:
        token = self._token(scopes)
        entry = self._entries.get(key)
        if entry is not None:
            expires, generations, results = entry
            if generations == token and expires > time.monotonic():
                self._entries.move_to_end(key)
                self.hits += 1
                return _thaw(results), token
            del self._entries[key]
        self.misses += 1
        return None, token

    async def store(self, key: str, scopes: tuple[str, ...], token: Any, results: list[Memory]) -> None:
        if token != self._token(scopes):
            return  # a write happened while the search ran: its results may be stale
        self._entries[key] = (time.monotonic() + self.ttl, token, _freeze(results))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def invalidate(self, scopes: Iterable[str]) -> None:
        for scope in set(scopes) | {GLOBAL_SCOPE}:
            self._generations[scope] = self._generations.get(scope, 0) + 1

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _encode_memories(memories: list[Memory]) -> str:
    rows = []
    for m in memories:
        rows.append({
            "id": m.id, "content": m.content, "user_id": m.user_id, "agent_id": m.agent_id,
            "run_id": m.run_id, "metadata": m.metadata, "score": m.score,
            "created_at": m.created_at.isoformat(),
            "updated_at": m.updated_at.isoformat() if m.updated_at else None,
            "embedding": (base64.b64encode(np.asarray(m.embedding, dtype=np.float32).tobytes()).decode()
                          if m.embedding is not None else None),
        })
    return json.dumps(rows)


#: What a corrupt cache entry raises when it is read back.
_CORRUPT = (ValueError, KeyError, TypeError, AttributeError, IndexError, binascii.Error)


def _decode_memories(text: str | bytes) -> list[Memory]:
    memories = []
    for row in json.loads(text):
        embedding = row.pop("embedding")
        memories.append(Memory(
            id=row["id"], content=row["content"], user_id=row["user_id"], agent_id=row["agent_id"],
            run_id=row["run_id"], metadata=row["metadata"], score=row["score"],
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]) if row["updated_at"] else None,
            embedding=(np.frombuffer(base64.b64decode(embedding), dtype=np.float32).copy()
                       if embedding is not None else None)))
    return memories


class RedisResultCache:
    """Search-result cache in Redis, shared by processes, with the same invalidation.

    Generations live in one hash (``{prefix}:gen``, bumped with HINCRBY); an
    entry stores the generations read before its search, and a lookup reads
    the entry and the current generations in one round trip.

    When Redis fails (down, stalled beyond ``timeout`` seconds, restarting) the
    cache steps aside: a lookup is a miss, a store is skipped, and the failure
    is counted in ``errors`` (``last_error`` says what it was), so searches keep
    being answered from the store. An invalidation that fails is kept and
    replayed before this cache serves anything again: until it has reached
    Redis every lookup here is a miss, so this process never reads a result its
    own write retired. (Other processes sharing the cache may serve such a
    result until the replay or the entry's ``ttl``, as in any cache-aside design.)
    A restarted Redis comes back empty: the cache fills again.
    """

    def __init__(self, client: Any, *, prefix: str = "agentmem:results", ttl: int = 60,
                 timeout: float | None = REDIS_CACHE_TIMEOUT_S) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.last_error = ""
        self._pending: set[str] = set()

    @property
    def _gen_key(self) -> str:
        return f"{self.prefix}:gen"

    @property
    def pending_invalidations(self) -> int:
        """Scopes whose invalidation has not reached Redis yet."""
        return len(self._pending)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = describe(exc)

    async def _generations(self, scopes: tuple[str, ...]) -> list[int]:
        values = await bounded(self.client.hmget(self._gen_key, list(scopes)), self.timeout)
        return [int(v) if v is not None else 0 for v in values]

    async def lookup(self, key: str, scopes: tuple[str, ...]) -> tuple[list[Memory] | None, Any]:
        if self._pending and not await self._replay():
            self.misses += 1
            return None, None
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self._gen_key, list(scopes))
        pipe.get(f"{self.prefix}:{key}")
        try:
            raw_gens, raw_entry = await bounded(pipe.execute(), self.timeout)
        except CACHE_ERRORS as exc:
            self._failed(exc)
            self.misses += 1
            return None, None
        try:
            token = [int(v) if v is not None else 0 for v in raw_gens]
        except ValueError as exc:  # a generation that is no number: nothing here can be trusted
            self._failed(exc)
            self.misses += 1
            return None, None
        if raw_entry is not None:
            try:
                entry = json.loads(raw_entry)
                if entry["gen"] == token:
                    found = _decode_memories(entry["results"])
                    self.hits += 1
                    return found, token
            except _CORRUPT as exc:
                # A corrupt entry (cut short, another writer's, another version's) is a
                # miss; the search's own store then replaces it.
                self._failed(exc)
        self.misses += 1
        return None, token

    async def store(self, key: str, scopes: tuple[str, ...], token: Any, results: list[Memory]) -> None:
        if token is None or self._pending:
            return
        try:
            if await self._generations(scopes) != token:
                return
            entry = json.dumps({"gen": token, "results": _encode_memories(results)})
            await bounded(self.client.set(f"{self.prefix}:{key}", entry, ex=self.ttl), self.timeout)
        except CACHE_ERRORS as exc:
            self._failed(exc)

    async def invalidate(self, scopes: Iterable[str]) -> None:
        wanted = set(scopes) | {GLOBAL_SCOPE}
        if not await self._bump(wanted | self._pending):
            self._pending |= wanted

    async def _replay(self) -> bool:
        return await self._bump(set(self._pending))

    async def _bump(self, scopes: set[str]) -> bool:
        """Bump ``scopes``' generations; on success they are no longer pending."""
        pipe = self.client.pipeline(transaction=False)
        for scope in scopes:
            pipe.hincrby(self._gen_key, scope, 1)
        try:
            await bounded(pipe.execute(), self.timeout)
        except CACHE_ERRORS as exc:
            self._failed(exc)
            return False
        self._pending -= scopes
        return True
