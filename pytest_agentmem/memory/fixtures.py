"""Fixtures of the memory components: ``embedder``, ``lancedb_store``, ``memory_service``.

Built by factories, so a conftest can make variants::

    from pytest_agentmem.memory.fixtures import lancedb_store_fixture, memory_service_fixture

    small_store = lancedb_store_fixture(dim=64, index_threshold=5_000)
    lance_service = memory_service_fixture(repository="lancedb_store", result_cache=None)

The session ``embedder`` loads the model once (``AGENTMEM_EMBEDDING_MODEL`` names
another fastembed model) and keeps its on-disk embedding cache in pytest's cache
directory (``.pytest_cache/d/agentmem``), so repeated runs do not re-embed
their data sets. Its model id is filed in the run's session (``embedding_model``)
for the baselines' fingerprint, and its speed probe (``speed_probes``) for the
calibration against a baseline from another machine. The ``memory_service`` fixture registers its
service's cache counters (:mod:`pytest_agentmem.counters`), so every load run
of the test records its result- and embedding-cache hit rates.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ..counters import watch_counters
from ..session import SpeedProbe, get_session
from .embedder import Embedder, EmbedderMissingError, default_cache_dir
from .result_cache import RedisResultCache, ResultCache


def _cache_dir(config: pytest.Config) -> Path:
    cache = getattr(config, "cache", None)
    if cache is not None:
        try:
            return Path(cache.mkdir("agentmem"))
        except OSError:
            pass
    return default_cache_dir()


def embedder_fixture(*, model_name: str | None = None, scope: str = "session", disk_cache: bool = True,
                     max_batch: int = 32, batch_window: float = 0.0, workers: int | None = None,
                     threads: int | None = 1) -> Callable[..., Any]:
    """Make a fixture giving a loaded :class:`Embedder` (skips if the packages are missing).

    ``workers`` and ``threads``: see :meth:`Embedder.load`.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def embedder(request: pytest.FixtureRequest) -> Iterator[Embedder]:
        pytestconfig = request.config
        try:
            name = model_name or get_session(pytestconfig).settings.embedding_model
            loaded = Embedder.load(name, cache_dir=_cache_dir(pytestconfig), disk_cache=disk_cache,
                                   max_batch=max_batch, batch_window=batch_window, workers=workers,
                                   threads=threads)
        except EmbedderMissingError as exc:
            pytest.skip(f"no embedding model: {exc}")
        session = get_session(pytestconfig)
        session.embedding_model = loaded.model_id
        session.speed_probes[f"embedding model {loaded.model_id}"] = SpeedProbe(request.fixturename,
                                                                                loaded.speed_probe)
        try:
            yield loaded
        finally:
            loaded.close()

    return embedder


def lancedb_store_fixture(*, dim: int | None = None, **options: Any) -> Callable[..., Any]:
    """Make a fixture giving a fresh :class:`LanceDBMemoryStore` in a temp dir per test.

    ``dim`` defaults to the ``embedder`` fixture's; ``options`` go to
    :meth:`LanceDBMemoryStore.open` (``index_threshold``, ``exact_threshold``, ...).
    """

    @pytest_asyncio.fixture
    async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
        try:
            from .lance import LanceDBMemoryStore, LanceUnavailableError
        except ImportError as exc:  # pragma: no cover - lance.py imports nothing optional at top
            pytest.skip(str(exc))
        size = dim if dim is not None else request.getfixturevalue("embedder").dim
        try:
            opened = await LanceDBMemoryStore.open(tmp_path / "lancedb", dim=size, **options)
        except LanceUnavailableError as exc:
            pytest.skip(str(exc))
        try:
            yield opened
        finally:
            opened.close()

    return store


def memory_service_fixture(*, repository: str = "memory_repo", embedder: str = "embedder",
                           result_cache: str | None = "memory", cache_ttl: float = 60.0,
                           embedding_cache: str = "test") -> Callable[..., Any]:
    """Make a fixture giving a :class:`MemoryService`.

    ``repository``/``embedder`` name the fixtures to use; ``result_cache`` is
    ``"memory"`` (in process), ``"redis"`` (on the ``redis_client`` fixture) or ``None``.
    ``embedding_cache``: ``"test"`` (default) gives the service a fresh in-process
    embedding cache per test, so what it measures never rides on texts embedded by
    an earlier test or run (the session embedder's disk cache is for loading data
    sets, not for the system under test); ``"session"`` uses the session embedder
    with all its caches.
    """
    if embedding_cache not in ("test", "session"):
        raise ValueError(f"embedding_cache must be 'test' or 'session', got {embedding_cache!r}")
    if result_cache not in ("memory", "redis", None):
        raise ValueError(f"result_cache must be 'memory', 'redis' or None, got {result_cache!r}")

    needed = [repository, embedder] + (["redis_client"] if result_cache == "redis" else [])

    async def service(**fixtures: Any) -> AsyncIterator[Any]:
        from .service import MemoryService

        cache: Any = None
        if result_cache == "memory":
            cache = ResultCache(ttl=cache_ttl)
        elif result_cache == "redis":
            cache = RedisResultCache(fixtures["redis_client"], ttl=int(cache_ttl))
        model = fixtures[embedder]
        if embedding_cache == "test" and hasattr(model, "per_test"):
            model = model.per_test()
        built = MemoryService(fixtures[repository], model, result_cache=cache)
        # every load run of the test records the service's cache hit rates beside its QPS
        request = fixtures["request"]
        watch_counters(request.node, request.fixturename or "memory_service", built.cache_stats)
        yield built

    # Declare the named fixtures as parameters, so pytest (and the service
    # provisioning, which looks at a test's fixture closure) sees the dependency.
    service.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
         for name in dict.fromkeys([*needed, "request"])])
    service = pytest_asyncio.fixture(service)
    return service


embedder = embedder_fixture()
lancedb_store = lancedb_store_fixture()
memory_service = memory_service_fixture()
