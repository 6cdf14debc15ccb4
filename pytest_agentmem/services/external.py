"""Servers the user already runs, given by URL: checked, never started or stopped."""

from __future__ import annotations

import time

from ..errors import ServiceUnavailableError
from ..redact import redact_text, redact_url
from ._sync import run_sync
from .base import RunningService

#: An external server gets a short deadline: it is meant to be up already.
EXTERNAL_TIMEOUT_S = 10.0


def attach_postgres(url: str, *, timeout: float = EXTERNAL_TIMEOUT_S) -> RunningService:
    """Check that ``url`` answers and offers pgvector; describe it."""
    __tracebackhide__ = True
    import asyncpg

    started = time.perf_counter()

    async def probe() -> tuple[str, str | None]:
        conn = await asyncpg.connect(url, timeout=min(timeout, EXTERNAL_TIMEOUT_S))
        try:
            version = await conn.fetchval("SHOW server_version")
            vector = await conn.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        finally:
            await conn.close()
        return str(version).split()[0], vector

    try:
        version, vector = run_sync(probe())
    except (OSError, asyncio_timeout_errors(), asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailableError(
            f"cannot connect to PostgreSQL at {redact_url(url)}: {redact_text(str(exc)) or type(exc).__name__}",
            hint="check that the server runs and the URL (host, port, user, password, database) is "
                 "right, or drop --agentmem-postgres-url to let the plugin start its own server",
        ) from None
    if vector is None:
        raise ServiceUnavailableError(
            f"PostgreSQL at {redact_url(url)} has no vector extension available",
            hint="install pgvector on that server, or drop --agentmem-postgres-url to use the "
                 "embedded PostgreSQL with pgvector")
    return RunningService(name="postgres", url=url, mode="external", version=version,
                          startup_s=time.perf_counter() - started, components={"pgvector": vector})


def attach_redis(url: str, *, timeout: float = EXTERNAL_TIMEOUT_S) -> RunningService:
    """Check that ``url`` answers PING; describe it."""
    __tracebackhide__ = True
    import redis

    started = time.perf_counter()
    limit = min(timeout, EXTERNAL_TIMEOUT_S)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=limit, socket_timeout=limit)
        try:
            info = client.info("server")
        finally:
            client.close()
    except (OSError, ValueError, redis.exceptions.RedisError) as exc:
        raise ServiceUnavailableError(
            f"cannot connect to Redis at {redact_url(url)}: {redact_text(str(exc)) or type(exc).__name__}",
            hint="check that the server runs and the URL is right (redis://[:password@]host:port/db), "
                 "or drop --agentmem-redis-url to let the plugin start its own server",
        ) from None
    return RunningService(name="redis", url=url, mode="external",
                          version=str(info.get("redis_version", "?")),
                          startup_s=time.perf_counter() - started)


def asyncio_timeout_errors() -> type[BaseException]:
    import asyncio

    return asyncio.TimeoutError
