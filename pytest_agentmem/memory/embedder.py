"""A real text-embedding model run by fastembed, offline, with caches and micro-batching.

The model (offline all-MiniLM-L6-v2 by default) is assembled and loaded by
:mod:`.embed_model`; concurrent calls are batched by :mod:`.embed_batch`.

Texts longer than the model's token limit (256 word pieces for all-MiniLM-L6-v2)
are truncated by the tokenizer: only their beginning is embedded. Empty texts and
texts over :data:`~pytest_agentmem.memory.model.MAX_CONTENT_CHARS` characters are
rejected with :class:`~pytest_agentmem.memory.model.InvalidMemoryError`.

The model runs on private threads, one per usable core by default, each running
a whole batch single-threaded, never on the event loop. Concurrent ``embed`` calls
are coalesced: while the workers compute, the texts that arrive are queued and go
to the next free worker together as its batch (continuous dynamic batching; an
optional ``batch_window`` also waits that long before a batch starts when a worker
is idle). See :mod:`.embed_batch` for why and what it measured.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embed_batch import Batcher, ModelRunner
from .embed_model import (
    CACHE_ENV,
    DEFAULT_MODEL,
    INSTALL_HINT,
    MINILM_MAX_TOKENS,
    MODEL_ENV,
    EmbedderMissingError,
    EmbedderUnavailableError,
    LoadedModel,
    default_cache_dir,
    load_model,
)
from .validation import check_texts
from .vector_cache import DiskVectorCache, LRUVectorCache, RedisVectorCache, text_digest

__all__ = [
    "CACHE_ENV", "DEFAULT_MODEL", "INSTALL_HINT", "MINILM_MAX_TOKENS", "MODEL_ENV", "Embedder",
    "EmbedderMissingError", "EmbedderStats", "EmbedderUnavailableError", "LoadedModel",
    "default_cache_dir", "load_model",
]


#: The fixed texts of :meth:`Embedder.speed_probe` (short notes, as memories are).
PROBE_TEXTS = tuple(f"Calibration note {i}: the user said they would call their sister about the trip on day {i}"
                    for i in range(8))


@dataclass
class EmbedderStats:
    """Counters of an :class:`Embedder` (texts counted per requested text)."""

    calls: int = 0
    texts: int = 0
    l1_hits: int = 0
    l2_hits: int = 0
    disk_hits: int = 0
    computed: int = 0

    @property
    def hits(self) -> int:
        return self.l1_hits + self.l2_hits + self.disk_hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.texts if self.texts else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hits": self.hits, "hit_rate": self.hit_rate}


class Embedder:
    """Embeds texts with a real model: ``await embed(texts) -> (n, dim)`` float32, unit norm.

    Build one with :meth:`load`. Lookups go L1 (in process) -> L2 (Redis, if
    given) -> disk (if enabled) -> model, and what a lower level finds fills the
    levels above. Safe to share across event loops (a session fixture serves
    function-scoped loops): each loop gets its own batch queue.
    """

    def __init__(self, loaded: LoadedModel, *, l1: LRUVectorCache | None = None,
                 l2: RedisVectorCache | None = None, disk: DiskVectorCache | None = None,
                 max_batch: int = 32, batch_window: float = 0.0, workers: int | None = None,
                 _runner: ModelRunner | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._runner = _runner or ModelRunner(loaded, max_batch, workers)
        self.l1 = l1
        self.l2 = l2
        self.disk = disk
        self.batch_window = batch_window
        self.stats = EmbedderStats()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = weakref.WeakKeyDictionary()
        self._batchers_lock = threading.Lock()
        self._owns_runner = _runner is None

    @classmethod
    def load(cls, model_name: str | None = None, *, cache_dir: str | Path | None = None,
             l1_size: int = 10_000, disk_cache: bool = True, redis: Any = None,
             threads: int | None = 1, workers: int | None = None, max_batch: int = 32,
             batch_window: float = 0.0, run: str | None = None) -> Embedder:
        """Load the model and set up the caches (``redis``: a ``redis.asyncio`` client for L2).

        ``workers``: model threads running batches side by side (default: one per
        usable core, at most 8); ``threads``: onnxruntime threads inside each run;
        ``run``: ``integer`` or ``float`` for the offline model (see
        :func:`~pytest_agentmem.memory.embed_model.load_model`).
        """
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        loaded = load_model(model_name, cache_dir=cache, threads=threads, run=run)
        return cls(loaded, l1=LRUVectorCache(l1_size) if l1_size else None,
                   l2=RedisVectorCache(redis) if redis is not None else None,
                   disk=DiskVectorCache(cache / "embeddings.sqlite3") if disk_cache else None,
                   max_batch=max_batch, batch_window=batch_window, workers=workers)

    def with_redis(self, client: Any, **kwargs: Any) -> Embedder:
        """The same model, L1 and disk cache, with ``client`` as the L2 (own stats)."""
        return Embedder(self._runner.loaded, l1=self.l1, l2=RedisVectorCache(client, **kwargs),
                        disk=self.disk, max_batch=self._runner.max_batch,
                        batch_window=self.batch_window, _runner=self._runner)

    def per_test(self, l1_size: int = 10_000) -> Embedder:
        """The same model with a fresh in-process cache only (no L2, no disk; own stats).

        What a system under test should measure with: its own cache warms within
        the test, and nothing embedded by an earlier test or run makes it look faster.
        """
        return Embedder(self._runner.loaded, l1=LRUVectorCache(l1_size) if l1_size else None,
                        max_batch=self._runner.max_batch, batch_window=self.batch_window,
                        _runner=self._runner)

    def uncached(self) -> Embedder:
        """The same model without any cache (every text goes to the model; own stats)."""
        return Embedder(self._runner.loaded, max_batch=self._runner.max_batch,
                        batch_window=self.batch_window, _runner=self._runner)

    # -- identity

    @property
    def dim(self) -> int:
        return self._runner.loaded.dim

    @property
    def model_name(self) -> str:
        return self._runner.loaded.model_name

    @property
    def model_id(self) -> str:
        """The exact model (variant and version); cache keys and fingerprints use it."""
        return self._runner.loaded.model_id

    @property
    def max_tokens(self) -> int | None:
        return self._runner.loaded.max_tokens

    @property
    def model_batches(self) -> int:
        """Batches the model has run (all embedders sharing it)."""
        return self._runner.batches

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r}, dim={self.dim})"

    def speed_probe(self) -> float:
        """Texts per second of one model run on :data:`PROBE_TEXTS`, on the calling thread.

        The gate's calibration measures it beside its Python probe when a baseline
        comes from another machine: the model's matrix products run on the vector
        units, whose speed differs between CPUs by other factors than Python's.
        No cache and no counter is touched.
        """
        start = time.perf_counter()
        list(self._runner.loaded.model.embed(list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS)))
        return len(PROBE_TEXTS) / max(time.perf_counter() - start, 1e-9)

    # -- embedding

    async def embed_one(self, text: str) -> np.ndarray:
        """The embedding of one text, shape ``(dim,)``."""
        return (await self.embed([text]))[0]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``, float32, unit norm."""
        check_texts(texts)
        self.stats.calls += 1
        self.stats.texts += len(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        model = self.model_id
        digests = [text_digest(t) for t in texts]
        missing: dict[str, list[int]] = {}
        for index, digest in enumerate(digests):
            vector = self.l1.get(model, digest) if self.l1 is not None else None
            if vector is not None:
                out[index] = vector
                self.stats.l1_hits += 1
            else:
                missing.setdefault(digest, []).append(index)
        if missing and self.l2 is not None:
            found = await self.l2.get_many(model, list(missing), self.dim)
            self._fill(out, missing, found, "l2_hits")
        if missing and self.disk is not None:
            found = await self.disk.get_many(model, list(missing), self.dim)
            self._fill(out, missing, found, "disk_hits")
            if found and self.l2 is not None:
                await self.l2.put_many(model, found)
        if missing:
            computed = await self._compute({d: texts[idx[0]] for d, idx in missing.items()})
            self.stats.computed += sum(len(idx) for idx in missing.values())
            for digest, vector in computed.items():
                for index in missing[digest]:
                    out[index] = vector
                if self.l1 is not None:
                    self.l1.put(model, digest, vector)
            if self.disk is not None:
                self.disk.put_many_nowait(model, computed)
            if self.l2 is not None:
                await self.l2.put_many(model, computed)
        return out

    def _fill(self, out: np.ndarray, missing: dict[str, list[int]], found: dict[str, np.ndarray],
              counter: str) -> None:
        for digest, vector in found.items():
            indices = missing.pop(digest)
            for index in indices:
                out[index] = vector
            setattr(self.stats, counter, getattr(self.stats, counter) + len(indices))
            if self.l1 is not None:
                self.l1.put(self.model_id, digest, vector)

    async def _compute(self, texts: dict[str, str]) -> dict[str, np.ndarray]:
        batcher = self._batcher()
        futures = {digest: batcher.submit(digest, text) for digest, text in texts.items()}
        try:
            # shield: one caller's cancellation must not cancel a vector others wait for
            results = await asyncio.gather(*(asyncio.shield(f) for f in futures.values()))
        finally:
            for digest in futures:
                batcher.release(digest)  # a text nobody waits for any more is not computed
        return dict(zip(futures, results))

    def _batcher(self) -> Batcher:
        loop = asyncio.get_running_loop()
        with self._batchers_lock:
            batcher = self._batchers.get(loop)
            if batcher is None:
                batcher = self._batchers[loop] = Batcher(self._runner, self.batch_window)
            return batcher

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Embed without an event loop (for data-set preparation outside async code)."""
        return asyncio.run(self.embed(texts))

    @property
    def workers(self) -> int:
        """Model threads running batches side by side (all embedders sharing the model)."""
        return self._runner.workers

    def close(self) -> None:
        """Stop the model threads and close the disk cache (only if this embedder owns them)."""
        if self._owns_runner:
            self._runner.executor.shutdown(wait=True)
            if self.disk is not None:
                self.disk.close()
