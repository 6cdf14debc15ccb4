"""Where a test's evidence comes from: the pools and Redis clients its fixtures registered.

The shipped ``pg_pool`` and ``redis_client`` fixtures register theirs; a conftest
that builds its own registers them the same way::

    from pytest_agentmem.evidence import watch_pool, watch_redis

    @pytest_asyncio.fixture
    async def my_pool(request):
        pool = await asyncpg.create_pool(dsn)
        watch_pool(request.node, pool)
        yield pool
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class EvidenceSources:
    """The asyncpg pools and Redis clients of one test, by name."""

    pools: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)


SOURCES_KEY = pytest.StashKey[EvidenceSources]()


def sources_of(item: pytest.Item) -> EvidenceSources:
    """The sources registered for ``item`` (created empty on first use)."""
    found = item.stash.get(SOURCES_KEY, None)
    if found is None:
        found = item.stash[SOURCES_KEY] = EvidenceSources()
    return found


def watch_pool(item: pytest.Item, pool: Any, name: str = "pg_pool") -> None:
    """Record ``pool``'s statements (pg_stat_statements) and connections in ``item``'s runs."""
    if not hasattr(pool, "acquire") or not hasattr(pool, "get_size"):
        raise TypeError(f"watch_pool: expected an asyncpg pool, got {pool!r}")
    sources_of(item).pools[name] = pool


def watch_redis(item: pytest.Item, client: Any, name: str = "redis_client") -> None:
    """Record ``client``'s server's ``INFO commandstats`` in ``item``'s runs."""
    if not hasattr(client, "info"):
        raise TypeError(f"watch_redis: expected a redis.asyncio client, got {client!r}")
    sources_of(item).redis[name] = client
