"""Caches of embeddings, keyed by ``(model id, text digest)`` -> float32 vector.

- :class:`LRUVectorCache`: in-process, bounded, least recently used evicted (L1).
- :class:`RedisVectorCache`: a ``redis.asyncio`` client, shared between processes (L2).
- :class:`DiskVectorCache`: a SQLite file, so repeated perf runs do not re-embed
  their data sets; its I/O runs on its own thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .cache_guard import CACHE_ERRORS, REDIS_CACHE_TIMEOUT_S, bounded, describe


def text_digest(text: str) -> str:
    """A 128-bit hex digest of ``text`` (the embedding caches' key)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


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
    A Redis that fails or takes longer than ``timeout`` seconds is a miss (the
    text is embedded) and a skipped write, counted in ``errors``: vectors are
    keyed by content, so a cache that missed writes never serves a wrong one.
    """

    def __init__(self, client: Any, *, prefix: str = "agentmem:emb", ttl: int | None = 7 * 86400,
                 timeout: float | None = REDIS_CACHE_TIMEOUT_S) -> None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ConfigurationError("the Redis embedding cache needs a client made with "
                                     "decode_responses=False (vectors are stored as bytes)")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self.errors = 0
        self.last_error = ""

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = describe(exc)

    def _key(self, model: str, digest: str) -> str:
        return f"{self.prefix}:{model}:{digest}"

    async def get_many(self, model: str, digests: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        if not digests:
            return {}
        try:
            raw = await bounded(self.client.mget([self._key(model, d) for d in digests]), self.timeout)
        except CACHE_ERRORS as exc:
            self._failed(exc)
            return {}
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
        try:
            await bounded(pipe.execute(), self.timeout)
        except CACHE_ERRORS as exc:
            self._failed(exc)


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
