"""The memory service built inside a load worker (``processes=N``, on this machine or a Ray node).

Fixtures do not cross processes or machines; a worker builds its own service
from plain, picklable settings (URLs, table, model name) with
:func:`memory_service_setup`, the ``setup`` of a
:class:`~pytest_agentmem.load.worker_op.WorkerOp`::

    from pytest_agentmem.load.worker_op import WorkerOp
    from pytest_agentmem.memory.worker import memory_service_setup

    async def search(service, index):            # service: a MemoryService in the worker
        await service.search(QUESTIONS[index % len(QUESTIONS)], user_id="u1", limit=10)

    async def test_search_over_workers(memory_service, pg_database, perf):
        ...                                      # load data through the fixture as usual
        op = WorkerOp(search, setup=memory_service_setup(pg_database))
        await perf.run(op, concurrency=16, processes=2, duration=30)

Each worker opens its own asyncpg pool on the same database, loads the
embedding model (a fresh in-process embedding cache, as the fixture's
``embedding_cache="test"``), and gets its own result cache (in process, or in
Redis with ``redis_url``); it closes them when the run ends. The service is
what the ``memory_service`` fixture builds, from settings instead of fixtures.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .service import MemoryService

if TYPE_CHECKING:  # the load layer sits above this one: the type only
    from ..load.worker_op import WorkerInfo


class WorkerMemoryService(MemoryService):
    """A :class:`MemoryService` that owns its pool, model and Redis client (``aclose()`` frees them)."""

    _pool: Any = None
    _redis: Any = None
    _owned_embedder: Any = None

    async def aclose(self) -> None:
        """Close the pool, the Redis client and the model threads."""
        if self._pool is not None:
            await self._pool.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self._owned_embedder is not None:
            self._owned_embedder.close()


async def connect_memory_service(dsn: str, worker: WorkerInfo | None = None, *,
                                 redis_url: str | None = None, model_name: str | None = None,
                                 result_cache: str | None = "memory", cache_ttl: float = 60.0,
                                 dim: int = 384, table: str = "memories", create: bool = False,
                                 pool_size: int | None = None, **repo_options: Any) -> WorkerMemoryService:
    """Build a memory service on the database ``dsn`` (the same path as the ``memory_service`` fixture).

    ``result_cache``: ``"memory"``, ``"redis"`` (needs ``redis_url``) or None;
    ``create``: create the tables (otherwise they must exist: the test made them);
    ``pool_size``: connections of this worker (default: asyncpg pool sized for this
    machine); ``repo_options`` go to :class:`PostgresMemoryRepository`.
    """
    from .embedder import Embedder
    from .postgres import PoolSettings, PostgresMemoryRepository, create_memory_pool
    from .result_cache import RedisResultCache, ResultCache

    if result_cache not in ("memory", "redis", None):
        raise ValueError(f"result_cache must be 'memory', 'redis' or None, got {result_cache!r}")
    if result_cache == "redis" and not redis_url:
        raise ValueError("result_cache='redis' needs redis_url")
    settings = PoolSettings() if pool_size is None else PoolSettings(min_size=1, max_size=pool_size)
    pool = await create_memory_pool(dsn, settings, create_extension=False)
    redis_client = None
    try:
        repo = PostgresMemoryRepository(pool, dim=dim, table=table, **repo_options)
        if create:
            await repo.setup()
        embedder = Embedder.load(model_name, disk_cache=False)
        cache: Any = None
        if result_cache == "memory":
            cache = ResultCache(ttl=cache_ttl)
        elif result_cache == "redis":
            import redis.asyncio as aioredis

            redis_client = aioredis.from_url(str(redis_url))
            cache = RedisResultCache(redis_client, ttl=int(cache_ttl))
    except BaseException:
        await pool.close()
        if redis_client is not None:
            await redis_client.aclose()
        raise
    service = WorkerMemoryService(repo, embedder, result_cache=cache)
    service._pool, service._redis, service._owned_embedder = pool, redis_client, embedder
    return service


def memory_service_setup(dsn: str, **options: Any) -> Callable[[WorkerInfo], Awaitable[WorkerMemoryService]]:
    """A picklable ``setup`` for :class:`~pytest_agentmem.load.worker_op.WorkerOp`: the worker's service.

    ``options``: those of :func:`connect_memory_service`.
    """
    return functools.partial(connect_memory_service, dsn, **options)


__all__ = ["WorkerMemoryService", "connect_memory_service", "memory_service_setup"]
