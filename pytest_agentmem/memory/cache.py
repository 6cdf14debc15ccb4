"""Caches of the memory path: embeddings (L1 / Redis L2 / on disk) and search results.

Embedding caches map ``(model id, text digest)`` to a float32 vector:

- :class:`LRUVectorCache`: in-process, bounded, least recently used evicted (L1).
- :class:`RedisVectorCache`: a ``redis.asyncio`` client, shared between processes (L2).
- :class:`DiskVectorCache`: a SQLite file, so repeated perf runs do not re-embed
  their data sets; its I/O runs on its own thread, never on the event loop.

Search results are cached by :class:`ResultCache` (in process) or
:class:`RedisResultCache` (shared). Both are invalidated by writes through
per-scope generation counters (see :class:`ResultCache`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigurationError
from .model import Memory

GLOBAL_SCOPE = "*"


def text_digest(text: str) -> str:
    """A 128-bit hex digest of ``text`` (the embedding caches' key)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


# --------------------------------------------------------------------------- embeddings


class LRUVectorCache:
    """In-process LRU of vectors keyed by ``(model id, digest)``; ``size`` entries at most."""

    def __init__(self, size: int = 10_000) -> None:
        if size < 1:
            raise ConfigurationError(f"LRU cache size must be at least 1, got {size}")
        self.size = size
        self._data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # a session embedder may serve several threads' loops

    def get(self, model: str, digest: str) -> np.ndarray | None:
        with self._lock:
            vector = self._data.get((model, digest))
            if vector is not None:
                self._data.move_to_end((model, digest))
            return vector

    def put(self, model: str, digest: str, vector: np.ndarray) -> None:
        frozen = np.array(vector, dtype=np.float32, copy=True)
        frozen.flags.writeable = False
        with self._lock:
            self._data[(model, digest)] = frozen
            self._data.move_to_end((model, digest))
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RedisVectorCache:
    """Vectors in Redis as raw float32 bytes under ``{prefix}:{model}:{digest}``.

    ``client`` is a ``redis.asyncio.Redis`` created with ``decode_responses=False``;
    it is bound to the event loop it was created on, so use this cache on that loop.
    """

    def __init__(self, client: Any, *, prefix: str = "agentmem:emb", ttl: int | None = 7 * 86400) -> None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ConfigurationError("the Redis embedding cache needs a client made with "
                                     "decode_responses=False (vectors are stored as bytes)")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, model: str, digest: str) -> str:
        return f"{self.prefix}:{model}:{digest}"

    async def get_many(self, model: str, digests: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        if not digests:
            return {}
        raw = await self.client.mget([self._key(model, d) for d in digests])
        found: dict[str, np.ndarray] = {}
        for digest, blob in zip(digests, raw):
            if blob is not None and len(blob) == 4 * dim:
                found[digest] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    async def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        pipe = self.client.pipeline(transaction=False)
        for digest, vector in items.items():
            pipe.set(self._key(model, digest), np.asarray(vector, dtype=np.float32).tobytes(), ex=self.ttl)
        await pipe.execute()


class DiskVectorCache:
    """Vectors in a SQLite file, keyed by ``(model, digest)``.

    Reads and writes run on one private thread (SQLite connections are not
    shared across threads), so the event loop never waits on the disk. Writes
    are queued without waiting; a later read on the same thread sees them.
    Several processes (pytest-xdist workers) may share the file: WAL mode and a
    busy timeout let them.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentmem-diskcache")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._executor.submit(self._connect).result()

    def _connect(self) -> None:
        conn = sqlite3.connect(str(self.path), timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, digest TEXT NOT NULL, "
                     "vector BLOB NOT NULL, PRIMARY KEY (model, digest)) WITHOUT ROWID")
        conn.commit()
        self._conn = conn

    def _get_many(self, model: str, digests: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        assert self._conn is not None
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(digests), 500):
            chunk = list(digests[start:start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT digest, vector FROM embeddings WHERE model = ? AND digest IN ({marks})",
                [model, *chunk]).fetchall()
            for digest, blob in rows:
                if len(blob) == 4 * dim:
                    found[digest] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def _put_many(self, model: str, items: list[tuple[str, bytes]]) -> None:
        assert self._conn is not None
        self._conn.executemany("INSERT OR REPLACE INTO embeddings (model, digest, vector) VALUES (?, ?, ?)",
                               [(model, digest, blob) for digest, blob in items])
        self._conn.commit()

    async def get_many(self, model: str, digests: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        if not digests or self._closed:
            return {}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._get_many, model, list(digests), dim)

    def put_many_nowait(self, model: str, items: dict[str, np.ndarray]) -> None:
        """Queue a write; failures are ignored (a cache write never fails a caller)."""
        if not items or self._closed:
            return
        blobs = [(d, np.asarray(v, dtype=np.float32).tobytes()) for d, v in items.items()]
        self._executor.submit(self._put_many, model, blobs)

    def count(self, model: str | None = None) -> int:
        def run() -> int:
            assert self._conn is not None
            if model is None:
                return int(self._conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
            return int(self._conn.execute("SELECT count(*) FROM embeddings WHERE model = ?",
                                          (model,)).fetchone()[0])
        return self._executor.submit(run).result()

    def close(self) -> None:
        """Finish queued writes and close the file."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


# --------------------------------------------------------------------------- search results


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


def result_key(model: str, query: str, *, user_id: str | None, agent_id: str | None,
               run_id: str | None, filters: dict[str, Any] | None, limit: int) -> str:
    """A stable key of one search (model, query text, scopes, filters, limit)."""
    spec = json.dumps([model, query, user_id, agent_id, run_id, filters or {}, limit],
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(spec.encode("utf-8"), digest_size=20).hexdigest()


class SearchResultCache(Protocol):
    """What :class:`~pytest_agentmem.memory.service.MemoryService` needs of a result cache.

    ``lookup`` returns the cached results (or ``None``) and a token: the
    generations read *before* the search runs. ``store`` files results under
    that token, so results of a search that raced with a write are filed under
    generations the write has already retired and are never served.
    """

    async def lookup(self, key: str, scopes: tuple[str, ...]) -> tuple[list[Memory] | None, Any]: ...

    async def store(self, key: str, scopes: tuple[str, ...], token: Any, results: list[Memory]) -> None: ...

    async def invalidate(self, scopes: Iterable[str]) -> None: ...


def _copy(memories: list[Memory]) -> list[Memory]:
    return [replace(m, metadata=json.loads(json.dumps(m.metadata))) for m in memories]


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
        self._entries: OrderedDict[str, tuple[float, tuple[int, ...], list[Memory]]] = OrderedDict()
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
                return _copy(results), token
            del self._entries[key]
        self.misses += 1
        return None, token

    async def store(self, key: str, scopes: tuple[str, ...], token: Any, results: list[Memory]) -> None:
        if token != self._token(scopes):
            return  # a write happened while the search ran: its results may be stale
        self._entries[key] = (time.monotonic() + self.ttl, token, _copy(results))
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
    """

    def __init__(self, client: Any, *, prefix: str = "agentmem:results", ttl: int = 60) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.hits = 0
        self.misses = 0

    @property
    def _gen_key(self) -> str:
        return f"{self.prefix}:gen"

    async def _generations(self, scopes: tuple[str, ...]) -> list[int]:
        values = await self.client.hmget(self._gen_key, list(scopes))
        return [int(v) if v is not None else 0 for v in values]

    async def lookup(self, key: str, scopes: tuple[str, ...]) -> tuple[list[Memory] | None, Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self._gen_key, list(scopes))
        pipe.get(f"{self.prefix}:{key}")
        raw_gens, raw_entry = await pipe.execute()
        token = [int(v) if v is not None else 0 for v in raw_gens]
        if raw_entry is not None:
            entry = json.loads(raw_entry)
            if entry["gen"] == token:
                self.hits += 1
                return _decode_memories(entry["results"]), token
        self.misses += 1
        return None, token

    async def store(self, key: str, scopes: tuple[str, ...], token: Any, results: list[Memory]) -> None:
        if await self._generations(scopes) != token:
            return
        entry = json.dumps({"gen": token, "results": _encode_memories(results)})
        await self.client.set(f"{self.prefix}:{key}", entry, ex=self.ttl)

    async def invalidate(self, scopes: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for scope in set(scopes) | {GLOBAL_SCOPE}:
            pipe.hincrby(self._gen_key, scope, 1)
        await pipe.execute()
